"""What happens to a shared photo: real JPEG re-compression and resizing (PIL).

These are the evaluation's transformations of full photos (uint8 RGB), done
the way services do them; attack.eot holds their differentiable stand-ins used
while learning a mask.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image

from opom_jax.registry import Registry

SOCIAL_SCALE = 0.8     # a resize that is not a power of two: resampling mixes pixels
SOCIAL_CROP = 0.9      # centre crop keeping 90% of each side
SOCIAL_QUALITY = 85


def jpeg(photo: np.ndarray, quality: int) -> np.ndarray:
  """An encode-decode round trip through PIL's JPEG (4:2:0 chroma, like most services)."""
  buffer = io.BytesIO()
  Image.fromarray(photo).save(buffer, format="JPEG", quality=int(quality))
  buffer.seek(0)
  with Image.open(buffer) as im:
    return np.asarray(im.convert("RGB"), np.uint8)


def resize(photo: np.ndarray, scale: float) -> np.ndarray:
  h, w = photo.shape[:2]
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC), np.uint8)


def down_up(photo: np.ndarray, factor: int = 2) -> np.ndarray:
  """Downscaled by `factor` (anti-aliased) and back up to the original size."""
  h, w = photo.shape[:2]
  small = Image.fromarray(photo).resize((max(1, w // factor), max(1, h // factor)),
                                        Image.Resampling.BICUBIC)
  return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.uint8)


def social(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Resize to 0.8x, centre crop 90%, JPEG 85: a social network's copy.

  Returns the photo and the 2x3 map of original -> new pixel coordinates.
  """
  small = resize(photo, SOCIAL_SCALE)
  h, w = small.shape[:2]
  ch, cw = round(h * SOCIAL_CROP), round(w * SOCIAL_CROP)
  top, left = (h - ch) // 2, (w - cw) // 2
  out = jpeg(np.ascontiguousarray(small[top:top + ch, left:left + cw]), SOCIAL_QUALITY)
  sy, sx = h / photo.shape[0], w / photo.shape[1]
  return out, np.array([[sx, 0.0, -left], [0.0, sy, -top]])


_SAME_PLACE = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _in_place(fn: Callable[[np.ndarray], np.ndarray]):
  """A transformation that keeps every pixel where it was."""
  return lambda photo: (fn(photo), _SAME_PLACE)


# name -> photo -> (transformed photo, 2x3 map of original -> new pixel coordinates).
TRANSFORMS: Registry[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = Registry(
    "transformation", {
        "none": _in_place(lambda photo: photo),
        "jpeg95": _in_place(lambda photo: jpeg(photo, 95)),
        "jpeg85": _in_place(lambda photo: jpeg(photo, 85)),
        "jpeg75": _in_place(lambda photo: jpeg(photo, 75)),
        "down2": _in_place(down_up),
        "social": social,
    })
