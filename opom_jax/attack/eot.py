"""Expectation over transformation: what a photo goes through after it is shared.

A protected photo is rarely seen as saved: services re-compress it (JPEG) and
resize it. Optimising through random draws of those transformations makes the
mask survive them (Athalye et al. 2018). Both are differentiable: JPEG through
attack.jpeg's approximation, resizing through an anti-aliased downscale and a
linear upscale, at fixed shapes so one compiled step serves every draw.
"""
import jax
import jax.numpy as jnp

from opom_jax.attack import jpeg

QUALITY_RANGE = (70.0, 95.0)     # what photo services re-compress with
MIN_RESIZE = 0.5                  # down to half the side, then back up


def down_up(x, scale):
  """(N, H, W, C) shrunk by `scale` (traced, in (0, 1]) with anti-aliasing, then scaled
  back up to (H, W): the detail a downscaled copy lost, at the original size."""
  n, h, w, c = x.shape
  zero = jnp.zeros(2)
  scales = jnp.stack([scale, scale])
  small = jax.image.scale_and_translate(x, (n, h, w, c), (1, 2), scales, zero,
                                        "linear", antialias=True)
  return jax.image.scale_and_translate(small, (n, h, w, c), (1, 2), 1.0 / scales, zero,
                                       "linear", antialias=False)


def real_world(key, x, prob: float):
  """Each of JPEG (random quality) and down-and-up resizing (random scale) applied
  with probability `prob`, resizing first, as a service resizes before it encodes."""
  if prob <= 0.0:
    return x
  k_resize, k_scale, k_jpeg, k_quality = jax.random.split(key, 4)
  scale = jax.random.uniform(k_scale, (), minval=MIN_RESIZE, maxval=1.0)
  x = jnp.where(jax.random.uniform(k_resize) < prob, down_up(x, scale), x)
  quality = jax.random.uniform(k_quality, (), minval=QUALITY_RANGE[0], maxval=QUALITY_RANGE[1])
  return jnp.where(jax.random.uniform(k_jpeg) < prob, jpeg.jpeg_approx(x, quality), x)
