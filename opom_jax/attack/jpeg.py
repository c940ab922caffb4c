"""A differentiable approximation of baseline JPEG (as PIL / libjpeg write it).

Steps: RGB -> YCbCr (JFIF, full range), 4:2:0 chroma subsampling (2x2 mean,
nearest upsampling back), 8x8 block DCT-II, quantisation by the standard
tables scaled by the quality as libjpeg scales them, rounding, dequantisation,
inverse DCT, YCbCr -> RGB. Rounding has no useful gradient, so it is either
replaced by a straight-through estimator (forward: the real rounding;
backward: identity) or by the cubic approximation of Shin & Song 2017
(round(x) + (x - round(x))^3). Pixel units 0..255, shapes (..., H, W, 3).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

BLOCK = 8
# ITU-T T.81 Annex K tables (libjpeg's defaults), row-major 8x8.
LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
                      np.float32).reshape(8, 8)
CHROMA_TABLE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32,
                        np.float32).reshape(8, 8)

_RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                          [-0.168736, -0.331264, 0.5],
                          [0.5, -0.418688, -0.081312]], np.float32)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR).astype(np.float32)


def _dct_matrix() -> np.ndarray:
  """Orthonormal 8-point DCT-II: coefficients = D @ block @ D.T."""
  k = np.arange(BLOCK)[:, None]
  n = np.arange(BLOCK)[None, :]
  d = np.cos(np.pi * (2 * n + 1) * k / (2 * BLOCK)) * np.sqrt(2.0 / BLOCK)
  d[0] /= np.sqrt(2.0)
  return d.astype(np.float32)


_DCT = _dct_matrix()


def quant_tables(quality) -> tuple[jax.Array, jax.Array]:
  """(luma, chroma) 8x8 tables at quality 1..100, scaled as libjpeg's jpeg_quality_scaling.

  quality may be a traced scalar (a random quality per step under jit).
  """
  q = jnp.clip(jnp.asarray(quality, jnp.float32), 1.0, 100.0)
  scale = jnp.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)

  def scaled(table):
    return jnp.clip(jnp.floor((table * scale + 50.0) / 100.0), 1.0, 255.0)

  return scaled(LUMA_TABLE), scaled(CHROMA_TABLE)


def straight_through_round(x):
  """Forward: round(x); backward: identity."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def cubic_round(x):
  """Shin & Song 2017: round(x) + (x - round(x))^3, close to rounding, smooth gradient."""
  r = jax.lax.stop_gradient(jnp.round(x))
  return r + (x - r) ** 3


ROUNDINGS = {"straight_through": straight_through_round, "cubic": cubic_round}


def _blocks(plane):
  """(..., H, W) with H, W multiples of 8 -> (..., H/8, W/8, 8, 8)."""
  *lead, h, w = plane.shape
  x = plane.reshape(*lead, h // BLOCK, BLOCK, w // BLOCK, BLOCK)
  return jnp.swapaxes(x, -3, -2)


def _unblocks(blocks):
  *lead, hb, wb, _, _ = blocks.shape
  return jnp.swapaxes(blocks, -3, -2).reshape(*lead, hb * BLOCK, wb * BLOCK)


def _quantise_plane(plane, table, rounding):
  """One channel (..., H, W) through DCT, quantisation and back (H, W multiples of 8)."""
  coeffs = _DCT @ _blocks(plane - 128.0) @ _DCT.T
  coeffs = rounding(coeffs / table) * table
  return _unblocks(_DCT.T @ coeffs @ _DCT) + 128.0


def _pad_to(x, multiple):
  """Edge-pads H, W of (..., H, W, C) up to a multiple (as libjpeg replicates the last row)."""
  h, w = x.shape[-3:-1]
  ph, pw = -h % multiple, -w % multiple
  if ph == 0 and pw == 0:
    return x
  pad = [(0, 0)] * (x.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
  return jnp.pad(x, pad, mode="edge")


def jpeg_approx(x, quality, rounding: str = "straight_through", subsample: bool = True):
  """A JPEG round trip of float RGB images (..., H, W, 3) in 0..255, differentiable.

  `quality` is libjpeg's 1..100 (PIL's `quality=`); PIL subsamples chroma
  4:2:0 at every quality unless told otherwise, hence `subsample=True`.
  """
  round_fn = ROUNDINGS[rounding]
  h, w = x.shape[-3:-1]
  x = _pad_to(jnp.asarray(x, jnp.float32), 2 * BLOCK if subsample else BLOCK)
  luma_table, chroma_table = quant_tables(quality)
  ycc = x @ _RGB_TO_YCBCR.T + jnp.array([0.0, 128.0, 128.0])
  y = _quantise_plane(ycc[..., 0], luma_table, round_fn)
  chroma = ycc[..., 1:]
  if subsample:
    *lead, hh, ww, c = chroma.shape
    small = chroma.reshape(*lead, hh // 2, 2, ww // 2, 2, c).mean(axis=(-4, -2))
    small = jnp.stack([_quantise_plane(small[..., i], chroma_table, round_fn)
                       for i in range(2)], axis=-1)
    chroma = jnp.repeat(jnp.repeat(small, 2, axis=-3), 2, axis=-2)
  else:
    chroma = jnp.stack([_quantise_plane(chroma[..., i], chroma_table, round_fn)
                        for i in range(2)], axis=-1)
  ycc = jnp.concatenate([y[..., None], chroma], axis=-1)
  rgb = (ycc - jnp.array([0.0, 128.0, 128.0])) @ _YCBCR_TO_RGB.T
  return jnp.clip(rgb, 0.0, 255.0)[..., :h, :w, :]
