"""Translation invariance (TI, Dong et al. 2019): the gradient smoothed by a Gaussian.

The gradient over all translations of the image is, to first order, the
gradient convolved with a kernel; a Gaussian weighs small shifts most. A
smoother step depends less on the exact receptive fields of the surrogate,
so it transfers better to other networks.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_taps(size: int, sigma: float = 0.0) -> np.ndarray:
  """(size,) 1-D Gaussian summing to 1; sigma 0 is the paper's radius / sqrt(3)."""
  radius = (size - 1) // 2
  sigma = sigma or radius / math.sqrt(3.0)
  x = np.arange(size, dtype=np.float64) - radius
  taps = np.exp(-0.5 * (x / sigma) ** 2)
  return (taps / taps.sum()).astype(np.float32)


def smooth(grads, size: int, sigma: float = 0.0):
  """(N, H, W, C) gradient convolved per channel with the size x size Gaussian, zero-padded.

  The 2-D Gaussian is separable: two 1-D passes cost 2*size taps per pixel, not size^2.
  """
  taps = jnp.asarray(gaussian_taps(size, sigma))
  c = grads.shape[-1]
  dims = ("NHWC", "HWIO", "NHWC")
  for kernel in (taps.reshape(size, 1, 1, 1), taps.reshape(1, size, 1, 1)):
    grads = jax.lax.conv_general_dilated(
        grads, jnp.tile(kernel, (1, 1, 1, c)).astype(grads.dtype), (1, 1), "SAME",
        dimension_numbers=dims, feature_group_count=c)
  return grads
