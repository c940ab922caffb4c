"""A contact sheet: each original beside its protected copy, as small thumbnails,
so a user can check a whole folder at a glance."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

MAX_PHOTOS = 24      # more would make thumbnails too small to judge
THUMB = 160          # longer side of a thumbnail, pixels
PAIRS_PER_ROW = 3
GAP = 8
LABEL = 14           # height of the name line under each pair
BACKGROUND = (255, 255, 255)


def thumbnail(rgb: np.ndarray, size: int = THUMB) -> np.ndarray:
  """The photo shrunk (never enlarged) so that its longer side is at most `size`."""
  image = Image.fromarray(np.asarray(rgb, np.uint8), "RGB")
  image.thumbnail((size, size), Image.Resampling.LANCZOS)
  return np.asarray(image)


def contact_sheet(pairs: list[tuple[np.ndarray, np.ndarray, str]], size: int = THUMB) -> np.ndarray:
  """(original, protected, name) thumbnails -> one uint8 RGB sheet; the first MAX_PHOTOS are shown.

  Each pair sits in a cell of two size x size squares (thumbnails centred)
  with its name below, PAIRS_PER_ROW cells a row.
  """
  pairs = pairs[:MAX_PHOTOS]
  if not pairs:
    raise ValueError("contact_sheet: no photos")
  cell_w, cell_h = 2 * size + 3 * GAP, size + LABEL + 2 * GAP
  columns = min(PAIRS_PER_ROW, len(pairs))
  rows = -(-len(pairs) // columns)
  sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), BACKGROUND)
  draw = ImageDraw.Draw(sheet)
  for i, (original, protected, name) in enumerate(pairs):
    left, top = (i % columns) * cell_w, (i // columns) * cell_h
    for j, thumb in enumerate((original, protected)):
      thumb = thumbnail(thumb, size)
      x = left + GAP + j * (size + GAP) + (size - thumb.shape[1]) // 2
      y = top + GAP + (size - thumb.shape[0]) // 2
      sheet.paste(Image.fromarray(thumb), (x, y))
    draw.text((left + GAP, top + GAP + size + 2), _fit(name, 2 * size + GAP), fill=(0, 0, 0))
  return np.asarray(sheet)


def _fit(name: str, width: int) -> str:
  """The name, shortened in the middle to fit `width` pixels of PIL's default font (~6 px a
  letter)."""
  letters = max(8, width // 6)
  if len(name) <= letters:
    return name
  return name[:letters // 2 - 1] + "..." + name[-(letters // 2 - 2):]
