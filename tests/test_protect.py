"""Protecting a user's own photo folder: the originals are never touched, every
photo gets its own output at its own size, only the face region changes,
outputs are never protected again, unusable photos are listed with a reason,
and every user mistake is refused before the slow work. Most tests apply a
saved random mask, so only one learns a mask."""
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from opom_jax import attack
from opom_jax.errors import UserError
from opom_jax.run import mask_file
from opom_jax.run import protect
from opom_jax.run.config import ProtectConfig
from opom_jax.run.protect import mask_photo
from photo_checks import assert_no_metadata, upright_photo, write_sideways_jpeg

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
  """One real protection run (foamliu surrogate, 2 iterations) that keeps its mask."""
  root = tmp_path_factory.mktemp("protect")
  photos_dir = _make_photos(root / "me", lfw_root)
  before = _digests(photos_dir)
  result = protect.protect_folder(
      _config(photos_dir, root / "out", save_mask=str(root / "kept" / "mask.npz")),
      log=lambda _: None)
  return photos_dir, root / "out", before, result


@pytest.fixture(scope="module")
def random_mask(tmp_path_factory):
  """A saved mask of random values within eps = 8 (no learning)."""
  path = tmp_path_factory.mktemp("mask") / "random.npz"
  mask = np.random.default_rng(0).uniform(-8, 8, (112, 112, 3))
  mask_file.save_mask(path, mask, 8.0, {"random": True})
  return path


def _face_coordinates(transform, shape):
  """Each photo pixel's distance inside the crop's edge (< 0: outside), from M alone."""
  ys, xs = np.mgrid[:shape[0], :shape[1]]
  u = transform[0, 0] * xs + transform[0, 1] * ys + transform[0, 2]
  v = transform[1, 0] * xs + transform[1, 1] * ys + transform[1, 2]
  return np.minimum(np.minimum(u, 111 - u), np.minimum(v, 111 - v))


@pytest.fixture
def no_slow_work(monkeypatch):
  """Fails the test if alignment, model loading or learning starts."""
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top

  def fail(*args, **kwargs):
    raise AssertionError("slow work started before the user's input was checked")
  monkeypatch.setattr(align, "align_faces", fail)
  monkeypatch.setattr(zoo, "load_surrogate", fail)
  monkeypatch.setattr(protect, "learn_person_mask", fail)


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
      ["mask.npz", "report.json", "contact_sheet.png"]
      + [os.path.basename(p) for p in expected])  # no temp files
  assert report["summary"] == {"photos_protected": 3, "faces_protected": 3, "skipped": 2,
                               "skipped_by_reason": {"not a photo file extension": 1,
                                                     "unreadable image": 1}}
  sheet = Image.open(out / "contact_sheet.png")
  assert sheet.format == "PNG" and sheet.width > sheet.height   # 3 pairs side by side
  for p in expected:
    assert_no_metadata(pathlib.Path(p))


def test_the_learned_mask_is_kept_with_its_settings(first_run):
  photos_dir, out, _, result = first_run
  kept = mask_file.load_mask(out.parent / "kept" / "mask.npz")
  in_output = mask_file.load_mask(result.mask_path)
  np.testing.assert_array_equal(kept.mask, in_output.mask)
  assert kept.eps == CFG.eps and np.abs(kept.mask).max() > 0
  assert kept.settings["attack"]["iters"] == 2 and kept.settings["surrogates"] == ["foamliu_mbf"]
  assert kept.settings["trained_on"] == 3 and kept.settings["photos"] == str(photos_dir)


def test_only_the_face_region_changes_within_the_budget(first_run):
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top
  photos_dir, out, _, result = first_run
  mask = mask_file.load_mask(result.mask_path).mask
  assert mask.shape == (112, 112, 3) and np.abs(mask).max() <= CFG.eps + 1e-5
  for name in ("a.jpg", "a.png", "b.png"):
    clean = np.asarray(Image.open(photos_dir / name).convert("RGB"), np.int16)
    protected = np.asarray(Image.open(out / (name + ".protected.png")), np.int16)
    assert protected.shape == clean.shape
    edge = _face_coordinates(align.align_file(photos_dir / name).transform, clean.shape)
    diff = np.abs(protected - clean).max(axis=-1)
    np.testing.assert_array_equal(protected[edge <= 0], clean[edge <= 0])
    assert diff.max() <= CFG.eps + 1
    assert (diff[edge > align.FEATHER] > 0).mean() > 0.3  # the mask is really there
    assert diff[(edge > 0) & (edge < 1)].max() <= 1       # faded out at the border: no seam


def test_outputs_among_the_photos_are_not_protected_again(first_run, tmp_path):
  photos_dir, out, _, _ = first_run
  merged = tmp_path / "merged"
  shutil.copytree(photos_dir, merged)
  for p in out.glob("*.protected.png"):
    shutil.copyfile(p, merged / p.name)
  shutil.copyfile(out / "a.jpg.protected.png", merged / "a.jpg.protected.jpg")
  result = protect.protect_folder(
      _config(merged, tmp_path / "out2", mask=str(out / protect.MASK_FILE)), log=lambda _: None)
  assert [os.path.basename(p) for p in result.protected] == [
      "a.jpg.protected.png", "a.png.protected.png", "b.png.protected.png"]
  reasons = {os.path.basename(s["path"]): s["reason"] for s in result.skipped}
  for p in [*out.glob("*.protected.png"), merged / "a.jpg.protected.jpg"]:
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


def _lfw(lfw_root, name):
  person = name.rpartition("_")[0]
  return np.asarray(Image.open(lfw_root / person / f"{name}.jpg"))


def test_unusable_photos_are_listed_with_their_reason(random_mask, lfw_root, tmp_path):
  photos_dir = tmp_path / "me"
  photos_dir.mkdir()
  shutil.copyfile(lfw_root / PERSON / f"{PERSON}_0001.jpg", photos_dir / "good.jpg")
  Image.fromarray(np.full((200, 300, 3), 120, np.uint8)).save(photos_dir / "wall.png")  # no face
  (photos_dir / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken off")
  (photos_dir / "empty.jpg").write_bytes(b"")
  Image.fromarray(_lfw(lfw_root, f"{PERSON}_0002")[100:130, 100:130]).save(photos_dir / "tiny.png")
  lines = []
  result = protect.protect_folder(_config(photos_dir, tmp_path / "out", mask=str(random_mask)),
                                  log=lines.append)
  assert [os.path.basename(p) for p in result.protected] == ["good.jpg.protected.png"]
  expected = {"wall.png": "no face found", "corrupt.jpg": "unreadable image",
              "empty.jpg": "empty file", "tiny.png": "photo too small (under 40 pixels on a side)"}
  assert {os.path.basename(s["path"]): s["reason"] for s in result.skipped} == expected
  report = json.loads((tmp_path / "out" / "report.json").read_text())
  assert report["summary"] == {"photos_protected": 1, "faces_protected": 1, "skipped": 4,
                               "skipped_by_reason": {r: 1 for r in sorted(expected.values())}}
  assert report["mask"]["source"] == str(random_mask)
  assert report["mask"]["settings"] == {"random": True}
  summary = lines[-1]
  assert summary.startswith("summary: 1 photos protected (1 faces)") and "4 skipped" in summary
  for reason in expected.values():
    assert reason in summary
  for name in expected:
    assert any(line == f"skipped {photos_dir / name}: {expected[name]}" for line in lines)


def test_a_sideways_photo_is_found_upright_and_loses_its_exif(random_mask, lfw_root, tmp_path):
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top
  photos_dir = tmp_path / "me"
  photos_dir.mkdir()
  upright = upright_photo(lfw_root)
  write_sideways_jpeg(photos_dir / "phone.jpg", upright)
  result = protect.protect_folder(_config(photos_dir, tmp_path / "out", mask=str(random_mask)),
                                  log=lambda _: None)
  assert not result.skipped
  out = pathlib.Path(result.protected[0])
  assert_no_metadata(out)
  protected = np.asarray(Image.open(out), np.int16)
  assert protected.shape == upright.shape                         # upright, original size
  clean = np.asarray(Image.open(photos_dir / "phone.jpg").transpose(Image.Transpose.ROTATE_270),
                     np.int16)
  edge = _face_coordinates(align.align_image(clean.astype(np.uint8)).transform, clean.shape)
  np.testing.assert_array_equal(protected[edge <= 0], clean[edge <= 0])
  diff = np.abs(protected - clean).max(axis=-1)
  assert diff.max() <= 9 and (diff[edge > 6] > 0).mean() > 0.5


def test_jpeg_output_on_request_with_a_warning(random_mask, photos, tmp_path):
  lines = []
  result = protect.protect_folder(
      _config(photos, tmp_path / "out", mask=str(random_mask), format="jpeg", quality=40),
      log=lines.append)
  assert [os.path.basename(p) for p in result.protected] == [
      "a.jpg.protected.jpg", "a.png.protected.jpg", "b.png.protected.jpg"]
  assert any(line.startswith("warning:") and "weakens the mask" in line for line in lines)
  buf = io.BytesIO()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG", quality=40)
  for p in result.protected:
    with Image.open(p) as im:
      assert im.format == "JPEG" and im.quantization == Image.open(buf).quantization
    assert_no_metadata(pathlib.Path(p))
    original = photos / os.path.basename(p).removesuffix(".protected.jpg")
    assert Image.open(p).size == Image.open(original).size


def test_every_face_or_one(random_mask, lfw_root, tmp_path):
  """Two people side by side: the larger on the right, the one nearer the centre on the left."""
  photos_dir = tmp_path / "group"
  photos_dir.mkdir()
  group = np.concatenate([_lfw(lfw_root, "Abdullah_Gul_0001"),
                          _lfw(lfw_root, "Angelina_Jolie_0001")], axis=1)
  Image.fromarray(group).save(photos_dir / "group.png")
  changed = {}
  for face in ("largest", "centre", "all"):
    result = protect.protect_folder(
        _config(photos_dir, tmp_path / face, mask=str(random_mask), face=face), log=lambda _: None)
    out = np.asarray(Image.open(result.protected[0]), np.int16)
    diff = np.abs(out - group).max(axis=-1)
    assert diff.max() <= 9   # overlapping or not, the budget holds
    changed[face] = ((diff[:, :250] > 0).sum(), (diff[:, 250:] > 0).sum())
    assert result.faces[result.protected[0]] == (2 if face == "all" else 1)
  assert changed["largest"][0] == 0 < changed["largest"][1]
  assert changed["centre"][1] == 0 < changed["centre"][0]
  assert changed["all"] == (changed["centre"][0], changed["largest"][1])


def test_overlapping_faces_stay_within_the_budget(lfw_root):
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top
  photo = (_lfw(lfw_root, f"{PERSON}_0001") * 0.8 + 20).astype(np.uint8)  # no clipping at 0/255
  m = align.align_image(photo).transform
  mask = np.full((112, 112, 3), 6.0, np.float32)
  once = mask_photo(photo, [m], mask, 8.0).astype(int) - photo
  twice = mask_photo(photo, [m, m], mask, 8.0).astype(int) - photo
  assert once.max() == 6 and twice.max() == 8   # 12 where they overlap, cut to eps
  assert (twice >= once).all() and twice[once == 0].max() <= 1   # same footprint, same fade


@pytest.mark.parametrize("identity", ["7201", "7204"])
def test_celeba_photos_keep_their_size_and_change_only_the_face(random_mask, identity, tmp_path):
  """In-the-wild CelebA photos: varied sizes, faces anywhere."""
  from opom_jax import paths  # pylint: disable=g-import-not-at-top
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top
  source = paths.data_root() / "celeba-subset" / identity
  assert source.is_dir(), f"CelebA subset not found at {source}"
  photos_dir = tmp_path / "me"
  photos_dir.mkdir()
  for p in sorted(source.iterdir())[:3]:
    shutil.copyfile(p, photos_dir / p.name)
  result = protect.protect_folder(_config(photos_dir, tmp_path / "out", mask=str(random_mask)),
                                  log=lambda _: None)
  assert result.protected
  for out in result.protected:
    original = pathlib.Path(json.loads((tmp_path / "out" / "report.json").read_text())
                            ["originals"][out])
    clean = np.asarray(Image.open(original).convert("RGB"), np.int16)
    protected = np.asarray(Image.open(out), np.int16)
    assert protected.shape == clean.shape
    edge = _face_coordinates(align.align_file(original).transform, clean.shape)
    np.testing.assert_array_equal(protected[edge <= 0], clean[edge <= 0])
    diff = np.abs(protected - clean).max(axis=-1)
    assert diff.max() <= 9 and (diff[edge > align.FEATHER] > 0).mean() > 0.3


def test_a_bad_saved_mask_is_refused_before_slow_work(photos, tmp_path, no_slow_work):
  bad = tmp_path / "bad.npz"
  with open(bad, "wb") as f:
    np.savez(f, mask=np.full((112, 112, 3), 20.0), eps=8.0, settings=np.array("{}"))
  with pytest.raises(UserError, match=f"--mask={bad} holds a mask reaching 20"):
    protect.protect_folder(_config(photos, tmp_path / "out", mask=str(bad)))
  with pytest.raises(UserError, match="--mask=.*missing.npz does not exist"):
    protect.protect_folder(_config(photos, tmp_path / "out", mask=str(tmp_path / "missing.npz")))
  with pytest.raises(UserError, match="--save_mask=.*keeps a learned mask"):
    protect.protect_folder(_config(photos, tmp_path / "out", mask=str(bad),
                                   save_mask=str(tmp_path / "again.npz")))
  with pytest.raises(UserError, match="face=every has unknown face choice"):
    protect.protect_folder(_config(photos, tmp_path / "out", face="every"))
  with pytest.raises(UserError, match="quality=101 is out of range"):
    protect.protect_folder(_config(photos, tmp_path / "out", format="jpeg", quality=101))
  assert not (tmp_path / "out").exists()


def _console(args):
  script = pathlib.Path(sys.executable).parent / "opom-protect"
  assert script.is_file(), f"{script} missing: pip install -e . installs the console script"
  return subprocess.run([str(script), *args], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_console_script_applies_a_saved_mask(random_mask, photos, tmp_path):
  proc = _console([f"--photos={photos}", f"--output={tmp_path / 'out'}", f"--mask={random_mask}",
                   "--format=jpeg", "--quality=70", "--face=centre"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "summary: 3 photos protected" in proc.stdout and "warning:" in proc.stdout
  report = json.loads((tmp_path / "out" / "report.json").read_text())
  assert report["config"]["face"] == "centre" and report["config"]["quality"] == 70
  assert sorted(os.path.basename(p) for p in report["protected"]) == [
      "a.jpg.protected.jpg", "a.png.protected.jpg", "b.png.protected.jpg"]


def test_console_script_refuses_a_bad_mask_in_one_line(photos, tmp_path):
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not an npz")
  proc = _console([f"--photos={photos}", f"--output={tmp_path / 'out'}", f"--mask={bad}"])
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert len(lines) == 1 and lines[0].startswith(f"error: --mask={bad} "), proc.stderr[-2000:]
