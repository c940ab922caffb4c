"""Photos in and out of protection: upright by their EXIF tag, skipped with a
reason, written without metadata; saved masks checked on load; the feathered
paste-back; the contact sheet."""
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from opom_jax.data import align
from opom_jax.errors import UserError
from opom_jax.eval import contact_sheet
from opom_jax.run import mask_file
from opom_jax.run import photo_io
import photo_checks
from photo_checks import assert_no_metadata, upright_photo, write_sideways_jpeg

def test_exif_orientation_is_applied(lfw_root, tmp_path):
  upright = upright_photo(lfw_root)
  write_sideways_jpeg(tmp_path / "side.jpg", upright)
  assert Image.open(tmp_path / "side.jpg").size == (250, 200)   # stored sideways
  photo = photo_io.read_photo(tmp_path / "side.jpg")
  assert photo.shape == upright.shape
  assert np.abs(photo.astype(int) - upright).mean() < 3          # JPEG loss only
  # Without the turn dlib finds no face in this photo; upright, it does.
  with pytest.raises(align.AlignError):
    align.align_image(np.asarray(Image.open(tmp_path / "side.jpg")))
  assert align.align_image(photo).crop.shape == (112, 112, 3)


def test_unusable_files_get_their_reason(tmp_path):
  (tmp_path / "empty.jpg").write_bytes(b"")
  (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  Image.fromarray(np.full((30, 300, 3), 90, np.uint8)).save(tmp_path / "strip.png")
  for name, reason in [("empty.jpg", photo_io.EMPTY), ("corrupt.jpg", align.UNREADABLE),
                       ("strip.png", photo_io.TOO_SMALL), ("missing.png", align.UNREADABLE)]:
    with pytest.raises(align.AlignError) as e:
      photo_io.read_photo(tmp_path / name)
    assert e.value.reason == reason, name


def test_a_truncated_jpeg_is_unreadable(lfw_root, tmp_path):
  data = (lfw_root / photo_checks.PHOTO).read_bytes()
  (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
  with pytest.raises(align.AlignError) as e:
    photo_io.read_photo(tmp_path / "cut.jpg")
  assert e.value.reason == align.UNREADABLE


def test_outputs_carry_no_metadata(lfw_root, tmp_path):
  write_sideways_jpeg(tmp_path / "side.jpg", upright_photo(lfw_root))
  photo = photo_io.read_photo(tmp_path / "side.jpg")
  for fmt in ("png", "jpeg"):
    out = photo_io.write_photo(tmp_path / photo_io.output_name("side.jpg", fmt), photo, fmt, 90)
    assert_no_metadata(out)
    assert Image.open(out).format == {"png": "PNG", "jpeg": "JPEG"}[fmt]
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "side.jpg", "side.jpg.protected.jpg", "side.jpg.protected.png"]   # no temp files


def test_jpeg_is_written_at_the_given_quality(lfw_root, tmp_path):
  photo = upright_photo(lfw_root)

  def pil_tables(quality):  # PIL's own tables for that quality: independent of our writer
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="JPEG", quality=quality)
    return Image.open(buf).quantization

  out = photo_io.write_photo(tmp_path / "q.jpg", photo, "jpeg", 40)
  with Image.open(out) as im:
    assert im.format == "JPEG" and im.size == (200, 250)
    assert im.quantization == pil_tables(40) != pil_tables(95)


def test_output_names_keep_the_whole_original_name():
  assert photo_io.output_name("a.jpg", "png") == "a.jpg.protected.png"
  assert photo_io.output_name("a.png", "jpeg") == "a.png.protected.jpg"
  assert photo_io.is_protected_output("A.JPG.PROTECTED.JPG")
  assert not photo_io.is_protected_output("protected.jpg")


def test_saved_mask_round_trip(tmp_path):
  mask = np.random.default_rng(0).uniform(-4, 4, (112, 112, 3))
  mask_file.save_mask(tmp_path / "m.npz", mask, 4.0, {"seed": 3, "surrogates": ["foamliu_mbf"]})
  saved = mask_file.load_mask(tmp_path / "m.npz")
  np.testing.assert_array_equal(saved.mask, mask.astype(np.float32))
  assert saved.eps == 4.0 and saved.settings == {"seed": 3, "surrogates": ["foamliu_mbf"]}
  assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]   # written atomically, no temp file


def _npz(path, **arrays):
  with open(path, "wb") as f:
    np.savez(f, **arrays)
  return path


@pytest.mark.parametrize("case, problem", [
    ("missing", "does not exist"),
    ("garbage", "is not a saved mask"),
    ("folder", "cannot be read"),
    ("npy", "is not a saved mask"),
    ("no_eps", "lacks eps"),
    ("shape", r"shape \(112, 112\)"),
    ("nan", "non-finite"),
    ("beyond_eps", "reaching 9, beyond its own eps=8"),
    ("huge_eps", "eps=255"),
])
def test_a_bad_mask_file_is_refused_in_one_line(tmp_path, case, problem):
  good = np.zeros((112, 112, 3), np.float32)
  settings = np.array(json.dumps({}))
  path = tmp_path / f"{case}.npz"
  if case == "folder":
    path.mkdir()
  elif case == "garbage":
    path.write_bytes(b"PK\x03\x04 not a zip at all")
  elif case == "npy":
    np.save(open(path, "wb"), good)
  elif case == "no_eps":
    _npz(path, mask=good, settings=settings)
  elif case == "shape":
    _npz(path, mask=good[..., 0], eps=8.0, settings=settings)
  elif case == "nan":
    _npz(path, mask=np.where(np.eye(112, dtype=bool)[..., None], np.nan, good), eps=8.0,
         settings=settings)
  elif case == "beyond_eps":
    _npz(path, mask=good + 9, eps=8.0, settings=settings)
  elif case == "huge_eps":
    _npz(path, mask=good + 100, eps=255.0, settings=settings)
  with pytest.raises(UserError, match=problem) as e:
    mask_file.load_mask(path)
  message = str(e.value)
  assert message.startswith(f"--mask={path} ") and "\n" not in message


def test_paste_back_changes_only_the_face_and_fades_at_its_edge(lfw_root):
  # Kept away from 0 and 255 so that no clipping hides a change.
  img = (np.asarray(Image.open(lfw_root / photo_checks.PHOTO)) * 0.9 + 12).astype(np.uint8)
  face = align.align_image(img)
  delta = np.full((112, 112, 3), 8.0, np.float32)
  protected = align.paste_back(img, delta, face.transform)
  change = protected.astype(int) - img
  # Each photo pixel's crop coordinates, from the transform alone.
  ys, xs = np.mgrid[:img.shape[0], :img.shape[1]]
  m = face.transform
  u, v = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
  edge = np.minimum(np.minimum(u, 111 - u), np.minimum(v, 111 - v))  # < 0: outside the crop
  assert (edge < 0).sum() > 10000
  assert not change[edge <= 0].any()
  assert change.min() >= 0 and change.max() <= 8
  # A constant change is whole well inside, and fades out over the border: no
  # step anywhere bigger than the rounding of a smooth ramp.
  assert (change[edge > align.FEATHER + 1] == 8).all()
  assert change[(edge > 0) & (edge < 1)].max() <= 1
  largest = change.max(axis=-1)
  assert np.abs(np.diff(largest, axis=0)).max() <= 3 and np.abs(np.diff(largest, axis=1)).max() <= 3


def test_photo_delta_of_a_face_at_the_photo_edge(lfw_root):
  """A face cut by the photo's border: its footprint is clipped, nothing is lost or shifted."""
  img = np.asarray(Image.open(lfw_root / photo_checks.PHOTO))
  face = align.align_image(img)
  delta = np.random.default_rng(1).uniform(-8, 8, (112, 112, 3)).astype(np.float32)
  full = align.photo_delta(delta, face.transform, img.shape[:2])
  # The same face in the photo's right 150 columns: its transform shifts by 100 pixels.
  shifted = face.transform.copy()
  shifted[:, 2] += face.transform[:, :2] @ [100, 0]
  part = align.photo_delta(delta, shifted, (img.shape[0], 150))
  np.testing.assert_allclose(part, full[:, 100:], atol=1e-4)
  # And it equals a plain whole-photo inverse warp of the feathered delta.
  plain = cv2.warpAffine(delta * align.feather_alpha()[..., None], face.transform,
                         img.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
  np.testing.assert_allclose(full, plain, atol=1e-4)


def test_contact_sheet_shows_at_most_24_pairs():
  colours = [np.array([i * 8, 255 - i * 8, (i * 37) % 256], np.uint8) for i in range(30)]
  solid = lambda c: np.broadcast_to(c, (300, 200, 3)).copy()
  pairs = [(solid(c), solid(255 - c), f"photo_{i}.jpg") for i, c in enumerate(colours)]
  sheet = contact_sheet.contact_sheet(pairs)
  present = {tuple(c) for c in sheet.reshape(-1, 3)}
  for i, c in enumerate(colours):
    assert (tuple(c) in present) == (i < 24), i
    assert (tuple(255 - c) in present) == (i < 24), i
  # Each photo is shown downscaled, upright, keeping its 3:2 shape.
  ys, xs = np.nonzero((sheet == colours[0]).all(axis=-1))
  height, width = np.ptp(ys) + 1, np.ptp(xs) + 1
  assert 50 <= height < 300 and abs(height / width - 1.5) < 0.05
