"""Protecting a user's own photo folder: the originals are never touched, every
photo gets its own output, outputs are never protected again, and every user
mistake is refused before the slow work."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from opom_jax import attack
from opom_jax.errors import UserError
from opom_jax.run import protect
from opom_jax.run.config import ProtectConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERSON = "Abdullah_Gul"
CFG = attack.AttackConfig(iters=2, nter=1)


def _config(photos, output, **kw) -> ProtectConfig:
  return ProtectConfig(photos=str(photos), output=str(output), attack=CFG, **kw)


def _digests(folder):
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _make_photos(folder, lfw_root):
  """a.jpg and a.png (two different photos, one stem), b.png, a broken JPEG, a text file."""
  folder.mkdir()
  sources = sorted((lfw_root / PERSON).iterdir())[:3]
  shutil.copyfile(sources[0], folder / "a.jpg")
  Image.open(sources[1]).save(folder / "a.png")
  Image.open(sources[2]).save(folder / "b.png")
  (folder / "broken.jpg").write_bytes(b"not a jpeg")
  (folder / "notes.txt").write_text("not a photo")
  return folder


@pytest.fixture
def photos(tmp_path, lfw_root):
  return _make_photos(tmp_path / "me", lfw_root)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, lfw_root):
  """One real protection run (foamliu surrogate, 2 iterations)."""
  root = tmp_path_factory.mktemp("protect")
  photos_dir = _make_photos(root / "me", lfw_root)
  before = _digests(photos_dir)
  result = protect.protect_folder(_config(photos_dir, root / "out"), log=lambda _: None)
  return photos_dir, root / "out", before, result


@pytest.fixture
def no_slow_work(monkeypatch):
  """Fails the test if alignment, model loading or learning starts."""
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top

  def fail(*args, **kwargs):
    raise AssertionError("slow work started before the user's input was checked")
  monkeypatch.setattr(align, "align_image", fail)
  monkeypatch.setattr(zoo, "load_surrogate", fail)
  monkeypatch.setattr(protect, "learn_masks", fail)


def test_every_photo_gets_its_own_output_and_originals_are_untouched(first_run):
  photos_dir, out, before, result = first_run
  assert _digests(photos_dir) == before
  expected = [str(out / n) for n in ("a.jpg.protected.png", "a.png.protected.png",
                                     "b.png.protected.png")]
  report = json.loads((out / "report.json").read_text())
  assert report["protected"] == expected == result.protected
  assert report["originals"] == {str(out / (n + ".protected.png")): str(photos_dir / n)
                                 for n in ("a.jpg", "a.png", "b.png")}
  assert {os.path.basename(s["path"]): s["reason"] for s in report["skipped"]} == {
      "broken.jpg": "unreadable image", "notes.txt": "not a photo file extension"}
  # a.jpg and a.png are different photos: both outputs exist and differ.
  a_jpg, a_png = (np.asarray(Image.open(p)) for p in expected[:2])
  assert a_jpg.shape == a_png.shape and not np.array_equal(a_jpg, a_png)
  assert sorted(p.name for p in out.iterdir()) == sorted(
      ["mask.npy", "report.json"] + [os.path.basename(p) for p in expected])  # no temp files


def test_only_the_face_region_changes_within_the_budget(first_run):
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top
  photos_dir, out, _, result = first_run
  mask = np.load(result.mask_path)
  assert mask.shape == (112, 112, 3) and np.abs(mask).max() <= CFG.eps + 1e-5
  for name in ("a.jpg", "a.png", "b.png"):
    clean = np.asarray(Image.open(photos_dir / name).convert("RGB"), np.int16)
    protected = np.asarray(Image.open(out / (name + ".protected.png")), np.int16)
    assert protected.shape == clean.shape
    # The face region: photo pixels whose crop coordinates fall in the 112x112
    # square, widened by the one-pixel bilinear fade at its edge.
    m = align.align_file(photos_dir / name).transform
    ys, xs = np.mgrid[:clean.shape[0], :clean.shape[1]]
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    face = (u > -1) & (u < 112) & (v > -1) & (v < 112)
    diff = np.abs(protected - clean).max(axis=-1)
    np.testing.assert_array_equal(protected[~face], clean[~face])
    assert diff[face].max() <= CFG.eps + 1
    assert (diff[face] > 0).mean() > 0.3  # the mask is really there


def test_outputs_among_the_photos_are_not_protected_again(first_run, tmp_path):
  photos_dir, out, _, _ = first_run
  merged = tmp_path / "merged"
  shutil.copytree(photos_dir, merged)
  for p in out.glob("*.protected.png"):
    shutil.copyfile(p, merged / p.name)
  result = protect.protect_folder(_config(merged, tmp_path / "out2"), log=lambda _: None)
  assert [os.path.basename(p) for p in result.protected] == [
      "a.jpg.protected.png", "a.png.protected.png", "b.png.protected.png"]
  reasons = {os.path.basename(s["path"]): s["reason"] for s in result.skipped}
  for p in out.glob("*.protected.png"):
    assert reasons[p.name] == protect.ALREADY_PROTECTED


@pytest.mark.parametrize("where", ["same", "inside", "symlink", "symlink_inside"])
def test_output_in_the_photos_folder_is_refused(photos, tmp_path, no_slow_work, where):
  before = _digests(photos)
  (tmp_path / "link").symlink_to(photos)
  output = {"same": photos, "inside": photos / "protected", "symlink": tmp_path / "link",
            "symlink_inside": tmp_path / "link" / "protected"}[where]
  with pytest.raises(UserError, match="--output=.* is inside --photos="):
    protect.protect_folder(_config(photos, output))
  assert _digests(photos) == before


def test_launcher_refuses_output_equal_to_photos_and_keeps_png_originals(photos):
  before = _digests(photos)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.protect", f"--photos={photos}", f"--output={photos}",
       "--iters=2", "--nter=1"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "is inside --photos=" in proc.stderr
  assert _digests(photos) == before


def test_output_that_is_a_file_is_refused_before_slow_work(photos, tmp_path, no_slow_work):
  existing = tmp_path / "taken"
  existing.write_text("keep me")
  with pytest.raises(UserError, match="--output=.*taken is a file"):
    protect.protect_folder(_config(photos, existing))
  with pytest.raises(UserError, match="--output=.*taken/out cannot be created"):
    protect.protect_folder(_config(photos, existing / "out"))
  assert existing.read_text() == "keep me"


def test_unwritable_output_is_refused_before_slow_work(photos, no_slow_work):
  # /proc/self is a folder that not even root can write into.
  with pytest.raises(UserError, match="--output=/proc/self cannot be created or written"):
    protect.protect_folder(_config(photos, "/proc/self"))


def test_missing_weights_and_bad_arguments_are_refused_before_slow_work(
    photos, tmp_path, no_slow_work):
  empty_models = tmp_path / "models"
  empty_models.mkdir()
  out = tmp_path / "out"
  with pytest.raises(UserError, match="model_root=.* has no weights file foamliu"):
    protect.protect_folder(_config(photos, out, model_root=str(empty_models)))
  with pytest.raises(UserError, match="surrogates=no_such_net .*choose from"):
    protect.protect_folder(_config(photos, out, surrogates=("no_such_net",)))
  with pytest.raises(UserError, match="max_train=0 must be >= 1"):
    protect.protect_folder(_config(photos, out, max_train=0))
  with pytest.raises(UserError, match="--photos=.*missing is not a folder"):
    protect.protect_folder(_config(tmp_path / "missing", out))


def test_folder_without_originals_is_refused(tmp_path, no_slow_work):
  photos_dir = tmp_path / "me"
  photos_dir.mkdir()
  (photos_dir / "notes.txt").write_text("x")
  (photos_dir / "a.jpg.protected.png").write_bytes(b"an earlier output")
  with pytest.raises(UserError, match="--photos=.*me has no photo files"):
    protect.protect_folder(_config(photos_dir, tmp_path / "out"))
  assert not (tmp_path / "out").exists()
