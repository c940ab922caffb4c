"""A smooth mask: bilinear interpolation of a coarse grid of values.

Low-frequency perturbations transfer better between networks and are less
visible than per-pixel ones. The mask is kept in the span of bilinearly
upsampled r x r grids: each step the mean perturbation is fitted by least
squares (the orthogonal projection onto that span, so a mask already in it is
unchanged, unlike an area-downsample whose repeated use would blur it), the
grid clipped to eps, then upsampled. Bilinear weights are convex, so the
upsampled mask stays within eps without clipping it (which would add edges).
"""
import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=16)
def upsample_matrix(size: int, grid: int) -> np.ndarray:
  """(size, grid) bilinear interpolation (pixel centres aligned, edges clamped), rows convex."""
  pos = np.clip((np.arange(size) + 0.5) * grid / size - 0.5, 0, grid - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, grid - 1)
  frac = pos - lo
  m = np.zeros((size, grid))
  np.add.at(m, (np.arange(size), lo), 1.0 - frac)
  np.add.at(m, (np.arange(size), hi), frac)
  return m


@functools.lru_cache(maxsize=16)
def _fit_matrix(size: int, grid: int) -> np.ndarray:
  """(grid, size) least-squares fit of a grid to a line of pixels: the pseudo-inverse."""
  return np.linalg.pinv(upsample_matrix(size, grid))


def band_limit(delta, grid: int, eps: float):
  """(H, W, C) perturbation -> the nearest bilinear r x r mask, its grid clipped to eps."""
  h, w, _ = delta.shape
  fit_h, fit_w = (jnp.asarray(_fit_matrix(n, grid), delta.dtype) for n in (h, w))
  up_h, up_w = (jnp.asarray(upsample_matrix(n, grid), delta.dtype) for n in (h, w))
  coarse = jnp.clip(jnp.einsum("ah,hwc,bw->abc", fit_h, delta, fit_w), -eps, eps)
  return jnp.einsum("ha,abc,wb->hwc", up_h, coarse, up_w)
