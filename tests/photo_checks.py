"""Real photos with EXIF tags, and checks that a written photo carries no metadata."""
import struct

import numpy as np
from PIL import Image

PHOTO = "Abdullah_Gul/Abdullah_Gul_0001.jpg"
ORIENTATION, MAKE, GPS_IFD = 0x0112, 0x010F, 0x8825


def upright_photo(lfw_root) -> np.ndarray:
  """A real non-square photo (250 high, 200 wide), so a turn shows in its size."""
  return np.ascontiguousarray(np.asarray(Image.open(lfw_root / PHOTO))[:, 25:225])


def write_sideways_jpeg(path, upright):
  """Stored turned a quarter left, with the EXIF tag (6) that says: turn right to view;
  plus a camera make and a GPS position that must not leak."""
  exif = Image.Exif()
  exif[ORIENTATION] = 6
  exif[MAKE] = "TestCam"
  exif[GPS_IFD] = {1: "N", 2: (52.0, 12.0, 30.0)}
  Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(
      path, format="JPEG", quality=95, exif=exif)


def png_chunks(data: bytes) -> list[str]:
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  chunks, pos = [], 8
  while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    chunks.append(kind.decode())
    pos += 12 + length
  return chunks


def jpeg_markers(data: bytes) -> list[int]:
  """The segment markers before the image data (start of scan)."""
  assert data[:2] == b"\xff\xd8"
  markers, pos = [], 2
  while True:
    marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
    markers.append(marker)
    if marker == 0xDA:
      return markers
    pos += 2 + length


def assert_no_metadata(path):
  data = path.read_bytes()
  with Image.open(path) as im:
    assert not im.getexif() and "exif" not in im.info and "icc_profile" not in im.info
  if data.startswith(b"\x89PNG"):
    assert set(png_chunks(data)) == {"IHDR", "IDAT", "IEND"}
  else:
    app_or_comment = [m for m in jpeg_markers(data) if 0xE1 <= m <= 0xEF or m == 0xFE]
    assert not app_or_comment, [hex(m) for m in app_or_comment]
