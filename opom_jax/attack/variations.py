"""Expectation over photo variations: the mask learned on varied photos of the person.

A universal mask is applied to photos it never saw: the same person, with
another pose, framing, light and focus. Learning it on random variations of
the training photos (each photo flipped, shifted, rotated, re-lit, blurred,
each with probability `prob`) with the perturbation added *after* the
variation, as the mask lands on a new aligned photo, makes it work on the
person's photos rather than on these photos. The variations touch only the
clean photos, so the loss is differentiable in the perturbation as before.
"""
import jax
import jax.numpy as jnp

MAX_SHIFT = 4.0          # pixels of the 112-pixel aligned crop: alignment jitter
MAX_ROTATION = 8.0       # degrees: residual roll after 5-point alignment
MAX_BRIGHTNESS = 20.0    # added to every pixel (0..255)
MAX_CONTRAST = 0.2       # contrast scaled by 1 +- this about the photo's mean
BLUR_SIGMA = 1.0         # the mild blur's Gaussian; its strength is drawn in [0, 1]


def _bilinear(photo, y, x):
  """(H, W, C) photo sampled at (H', W') float coordinates; outside, the nearest edge pixel."""
  h, w, _ = photo.shape
  y, x = jnp.clip(y, 0, h - 1), jnp.clip(x, 0, w - 1)
  y0, x0 = jnp.floor(y), jnp.floor(x)
  fy, fx = (y - y0)[..., None], (x - x0)[..., None]
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
  top = photo[y0, x0] * (1 - fx) + photo[y0, x1] * fx
  bottom = photo[y1, x0] * (1 - fx) + photo[y1, x1] * fx
  return top * (1 - fy) + bottom * fy


def _warp(photo, flip, angle, shift):
  """One (H, W, C) photo flipped, rotated about its centre and shifted; edges repeat."""
  h, w, _ = photo.shape
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=photo.dtype), jnp.arange(w, dtype=photo.dtype),
                        indexing="ij")
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  # Where each output pixel comes from: the inverse of shift . rotate . flip.
  y, x = yy - cy - shift[0], xx - cx - shift[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src_y, src_x = cos * y + sin * x, -sin * y + cos * x
  src_x = jnp.where(flip, -src_x, src_x)
  return _bilinear(photo, src_y + cy, src_x + cx)


def _blur(photos):
  """Gaussian blur (sigma BLUR_SIGMA) of (N, H, W, C) photos, edges repeated."""
  radius = 2
  x = jnp.arange(-radius, radius + 1, dtype=photos.dtype)
  taps = jnp.exp(-0.5 * (x / BLUR_SIGMA) ** 2)
  taps = taps / taps.sum()
  c = photos.shape[-1]
  photos = jnp.pad(photos, [(0, 0), (radius, radius), (radius, radius), (0, 0)], mode="edge")
  for kernel in (taps.reshape(-1, 1, 1, 1), taps.reshape(1, -1, 1, 1)):
    photos = jax.lax.conv_general_dilated(
        photos, jnp.tile(kernel, (1, 1, 1, c)), (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
  return photos


def vary(key, images, prob: float):
  """(N, H, W, C) photos 0..255, each variation applied to each photo with probability `prob`."""
  # One draw of every random number (a uniform per photo and use): each
  # separate draw would be its own threefry program to compile.
  u = jax.random.uniform(key, (10, images.shape[0]))
  on = lambda row: u[row] < prob
  sym = lambda row: 2.0 * u[row] - 1.0
  flip = on(0)
  angle = jnp.where(on(1), sym(2) * jnp.deg2rad(MAX_ROTATION), 0.0)
  shift = jnp.where(on(3)[:, None], jnp.stack([sym(4), sym(5)], -1) * MAX_SHIFT, 0.0)
  x = jax.vmap(_warp)(images, flip, angle, shift)
  per_photo = lambda v: v[:, None, None, None]
  brightness = jnp.where(on(6), sym(7) * MAX_BRIGHTNESS, 0.0)
  contrast = jnp.where(on(6), 1.0 + sym(8) * MAX_CONTRAST, 1.0)
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  x = (x - mean) * per_photo(contrast) + mean + per_photo(brightness)
  # The blur's strength reuses its coin: given the blur is on, u[9] / prob is uniform in [0, 1).
  strength = jnp.where(on(9), u[9] / prob, 0.0)
  x = x + per_photo(strength) * (_blur(x) - x)
  return jnp.clip(x, 0.0, 255.0)


def on_varied_photos(key, images, x_adv, prob: float):
  """The perturbed photos as the mask would meet them on varied photos of the person."""
  if prob <= 0.0:
    return x_adv
  varied = jax.lax.stop_gradient(vary(key, images, prob))
  return jnp.clip(varied + (x_adv - images), 0.0, 255.0)
