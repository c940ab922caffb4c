"""Reading a user's photos as they see them, and writing protected copies that
carry nothing but pixels.

Phones store many photos sideways with an EXIF orientation tag: the photo is
turned upright before the face is looked for, and the output is saved upright.
Outputs are written without EXIF (camera, time, GPS), ICC profile or text
chunks: a privacy tool must not pass the location of a photo on.
"""
from __future__ import annotations

import os
import pathlib
import struct

import numpy as np
from PIL import Image, ImageOps

from opom_jax.data.align import AlignError, UNREADABLE
from opom_jax.files import atomic_write

# Skip reasons, beside align.UNREADABLE and align.NO_FACE.
EMPTY = "empty file"
MIN_SIDE = 40   # dlib's HOG detector finds no face under ~40 pixels (80 upsampled once)
TOO_SMALL = f"photo too small (under {MIN_SIDE} pixels on a side)"

SUFFIXES = {"png": ".protected.png", "jpeg": ".protected.jpg"}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}


def read_photo(path: str | os.PathLike) -> np.ndarray:
  """An upright uint8 RGB photo (EXIF orientation applied); AlignError with a skip reason."""
  path = pathlib.Path(path)
  try:
    empty = path.stat().st_size == 0
  except OSError as e:
    raise AlignError(UNREADABLE, f"{path}: {e}") from e
  if empty:
    raise AlignError(EMPTY, str(path))
  try:
    with Image.open(path) as im:
      upright = ImageOps.exif_transpose(im)
      photo = np.asarray(upright.convert("RGB"), dtype=np.uint8)
  except (OSError, ValueError, SyntaxError, EOFError, struct.error,
          Image.DecompressionBombError) as e:
    # A truncated file fails while decoding, a corrupt EXIF block while reading
    # its tag: both are unreadable photos, never a crash.
    raise AlignError(UNREADABLE, f"{path}: {e}") from e
  if min(photo.shape[:2]) < MIN_SIDE:
    raise AlignError(TOO_SMALL, f"{path}: {photo.shape[1]}x{photo.shape[0]}")
  return photo


def output_name(photo_name: str, image_format: str) -> str:
  """`a.jpg` -> `a.jpg.protected.png` (or `.protected.jpg`): the whole original name is kept,
  so `a.jpg` and `a.png` cannot collide."""
  return photo_name + SUFFIXES[image_format]


def is_protected_output(photo_name: str) -> bool:
  return photo_name.lower().endswith(tuple(SUFFIXES.values()))


def write_photo(path: str | os.PathLike, rgb: np.ndarray, image_format: str = "png",
                quality: int = 95) -> pathlib.Path:
  """Writes pixels only (no EXIF, ICC or text), atomically; `quality` is JPEG's 1..100."""
  # A fresh image from an array has an empty `info`, so PIL writes no metadata.
  image = Image.fromarray(np.asarray(rgb, np.uint8), "RGB")
  options = {"quality": int(quality)} if image_format == "jpeg" else {}
  return atomic_write(path, lambda f: image.save(f, format=_PIL_FORMATS[image_format], **options))
