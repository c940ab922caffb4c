"""Image quality of protected photos against the clean ones: SSIM.

SSIM is dm-pix's (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, valid
convolution, mean over the pixels and the colour channels), on the uint8
crops read as floats in 0..255 with max_val 255.
"""
from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

# Photos per compiled call: every call has this shape, so SSIM compiles once.
BATCH = 64


@jax.jit
def _ssim_batch(a: jax.Array, b: jax.Array) -> jax.Array:
  return dm_pix.ssim(a.astype(jnp.float32), b.astype(jnp.float32), max_val=255.0)


def ssim_per_photo(protected_uint8: np.ndarray, clean_uint8: np.ndarray) -> np.ndarray:
  """(N,) SSIM of each protected photo against its clean version, in [-1, 1]."""
  a, b = np.asarray(protected_uint8), np.asarray(clean_uint8)
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f"expected two (N, H, W, C) stacks of the same shape, "
                     f"got {a.shape}, {b.shape}")
  out = []
  for start in range(0, len(a), BATCH):
    n = min(BATCH, len(a) - start)
    pad = ((0, BATCH - n),) + ((0, 0),) * 3   # padded photos compare zeros with zeros: dropped
    out.append(np.asarray(_ssim_batch(np.pad(a[start:start + n], pad),
                                      np.pad(b[start:start + n], pad)))[:n])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def ssim(protected_uint8: np.ndarray, clean_uint8: np.ndarray) -> float:
  """Mean over photos of the SSIM between protected and clean photos (1: identical)."""
  return float(np.mean(ssim_per_photo(protected_uint8, clean_uint8)))
