"""Faces in: detection, alignment, split rules, tfds round trip, paste back.

Real LFW photos from the shared data folder; a tiny folder tree is built in a
temp dir with a corrupt file, a blank image and a non-photo file.
"""
import json
import os
import pathlib
import shutil
import sys

import cv2
import numpy as np
from PIL import Image
import pytest

from opom_jax.data import align
from opom_jax.data import faces
from opom_jax.data import splits
from opom_jax.data import tfds_builder

REFERENCE_PEOPLE = [
    "Abdullah_Gul", "Alejandro_Toledo", "Alvaro_Uribe", "Amelie_Mauresmo",
    "Andre_Agassi", "Andy_Roddick", "Angelina_Jolie", "Ariel_Sharon",
    "Arnold_Schwarzenegger", "Atal_Bihari_Vajpayee"]


@pytest.fixture(scope="module")
def tiny_root(lfw_root, tmp_path_factory):
  """2 protected people (one with bad files), 2 distractors, junk."""
  root = tmp_path_factory.mktemp("faces") / "root"
  gul = root / "Abdullah_Gul"
  gul.mkdir(parents=True)
  for i in range(1, 5):
    name = f"Abdullah_Gul_{i:04d}.jpg"
    os.symlink(lfw_root / "Abdullah_Gul" / name, gul / name)
  bad = root / "Bad_Person"
  bad.mkdir()
  (bad / "Bad_Person_0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
  Image.fromarray(np.full((250, 250, 3), 128, np.uint8)).save(
      bad / "Bad_Person_0002.png")
  shutil.copy(lfw_root / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg",
              bad / "Bad_Person_0003.jpg")
  (bad / "notes.txt").write_text("not a photo")
  for person in ("Aaron_Eckhart", "Aaron_Guiel"):
    (root / person).mkdir()
    os.symlink(lfw_root / person / f"{person}_0001.jpg",
               root / person / f"{person}_0001.jpg")
  return root


TINY = dict(n_train=2, min_photos=3)


def test_umeyama_recovers_a_similarity():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 250, (5, 2))
  angle, scale, shift = 0.3, 0.45, np.array([-20.0, 7.5])
  rot = scale * np.array([[np.cos(angle), -np.sin(angle)],
                          [np.sin(angle), np.cos(angle)]])
  m = align.umeyama(src, src @ rot.T + shift)
  np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
  np.testing.assert_allclose(m[:, 2], shift, atol=1e-7)


def test_alignment_puts_the_face_on_the_template(lfw_root):
  for name in ("Abdullah_Gul_0001.jpg", "Abdullah_Gul_0002.jpg"):
    img = align.read_rgb(lfw_root / "Abdullah_Gul" / name)
    points = align.detect_landmarks(img)
    assert points[0, 0] < points[1, 0], "eye with the smaller x comes first"
    crop, m = align.align_face(img, points)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    err = np.linalg.norm(align.apply_transform(m, points)
                         - align.ARCFACE_TEMPLATE, axis=1)
    # dlib's points differ from the template's by a few pixels (head pose,
    # mouth corners); a mirrored or wrong warp is off by tens of pixels.
    assert err.mean() < 6.0 and err.max() < 12.0, err
    # M is the least-squares similarity: nudging it only adds error.
    sse = lambda mm: ((align.apply_transform(mm, points)
                       - align.ARCFACE_TEMPLATE) ** 2).sum()
    rot = np.array([[np.cos(0.01), -np.sin(0.01)], [np.sin(0.01), np.cos(0.01)]])
    for nudged in (m * [[1.01], [1.01]], np.hstack([rot @ m[:, :2], m[:, 2:]]),
                   m + [[0, 0, 0.3], [0, 0, 0]]):
      assert sse(nudged) > sse(m)
    # Detecting again inside the crop finds the face where the template is,
    # which fails if the warp went the wrong way.
    again = align.detect_landmarks(cv2.resize(crop, (224, 224))) / 2
    assert np.abs(again - align.ARCFACE_TEMPLATE).max() < 12.0


def test_greyscale_photo_reads_as_rgb(tmp_path, lfw_root):
  grey = np.asarray(Image.open(lfw_root / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg")
                    .convert("L"))
  Image.fromarray(grey).save(tmp_path / "g.pgm")
  img = align.read_rgb(tmp_path / "g.pgm")
  assert img.shape == (250, 250, 3)
  np.testing.assert_array_equal(img[..., 0], grey)
  np.testing.assert_array_equal(img[..., 2], grey)


def test_lfw_split_follows_the_reference_protocol(lfw_root):
  listing = splits.list_identities(lfw_root)
  people = splits.select_people(listing.photos, max_people=10)
  assert people == REFERENCE_PEOPLE
  assert len(splits.select_distractors(listing.photos, exclude=people)) == 4069
  plan = splits.make_split(listing.photos, names=["Andy_Roddick"],
                           include_distractors=False)
  assert plan == splits.make_split(listing.photos, names=["Andy_Roddick"],
                                   include_distractors=False)
  train = [os.path.basename(p.path) for p in plan if p.role == "train"]
  test = [os.path.basename(p.path) for p in plan if p.role == "test"]
  assert train == [f"Andy_Roddick_{i:04d}.jpg" for i in range(1, 11)]
  assert test == [f"Andy_Roddick_{i:04d}.jpg" for i in range(11, 16)]
  skipped = []
  recs = list(faces.iter_faces(plan, skipped))
  assert [(os.path.basename(s.path), s.reason) for s in skipped] == [
      ("Andy_Roddick_0005.jpg", align.NO_FACE)]
  roles = [r["role"] for r in recs]
  assert roles.count("train") == 9 and roles.count("test") == 5


def test_split_rejects_people_below_min_photos(lfw_root):
  listing = splits.list_identities(lfw_root)
  with pytest.raises(ValueError, match="Aaron_Eckhart"):
    splits.make_split(listing.photos, names=["Aaron_Eckhart"])


def test_skip_report_and_parallel_order(tiny_root):
  skipped = []
  recs = list(faces.iter_faces(tiny_root, skipped))
  reasons = {os.path.basename(s.path): s.reason for s in skipped}
  assert reasons == {"Bad_Person_0001.jpg": align.UNREADABLE,
                     "Bad_Person_0002.png": align.NO_FACE,
                     "notes.txt": "not a photo file extension"}
  assert [os.path.basename(r["path"]) for r in recs] == [
      "Aaron_Eckhart_0001.jpg", "Aaron_Guiel_0001.jpg",
      "Abdullah_Gul_0001.jpg", "Abdullah_Gul_0002.jpg",
      "Abdullah_Gul_0003.jpg", "Abdullah_Gul_0004.jpg",
      "Bad_Person_0003.jpg"]
  par = list(faces.iter_faces(tiny_root, num_workers=2))
  assert [r["path"] for r in par] == [r["path"] for r in recs]
  for a, b in zip(par, recs):
    np.testing.assert_array_equal(a["crop"], b["crop"])


def test_tfds_round_trip_without_tensorflow(tiny_root, tmp_path):
  data_dir = tmp_path / "tfds"
  builder, skipped = tfds_builder.prepare(tiny_root, data_dir, **TINY)
  assert {(os.path.basename(s["path"]), s["reason"]) for s in skipped} == {
      ("Bad_Person_0001.jpg", align.UNREADABLE),
      ("Bad_Person_0002.png", align.NO_FACE),
      ("notes.txt", "not a photo file extension")}
  version_dir = pathlib.Path(builder.data_dir)
  assert json.loads((version_dir / "skipped.json").read_text()) == skipped

  out = tfds_builder.load_split(tiny_root, data_dir, **TINY)
  plan = splits.make_split(splits.list_identities(tiny_root).photos, **TINY)
  direct = {}
  for rec in faces.iter_faces(plan):
    if rec["identity"] != "Bad_Person":  # dropped: none of its training photos aligns
      direct.setdefault(rec["role"], []).append(rec)
  assert sorted(out) == ["distractor", "test", "train"]
  for role, recs in direct.items():
    got = out[role]
    assert got["paths"] == [r["path"] for r in recs]
    np.testing.assert_array_equal(got["images"],
                                  np.stack([r["crop"] for r in recs]))
    np.testing.assert_allclose(got["transforms"],
                               np.stack([r["transform"] for r in recs]),
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(got["landmarks"],
                               np.stack([r["landmarks"] for r in recs]),
                               atol=1e-4)
    assert [got["names"][i] for i in got["identity"]] == [
        r["identity"] for r in recs]
  # Bad_Person: 0001 (corrupt) and 0002 (blank) were its training photos, so
  # it is dropped (its test photo 0003 too): no mask could be learned for it.
  assert out["train"]["names"] == ["Abdullah_Gul"]
  assert out["train"]["names"] == out["test"]["names"]
  assert [os.path.basename(p) for p in out["test"]["paths"]] == [
      "Abdullah_Gul_0003.jpg", "Abdullah_Gul_0004.jpg"]
  assert len(out["train"]["paths"]) == 2

  # The prepared dataset is the cache: with the photos gone, it still loads.
  moved = tiny_root.with_name("moved")
  tiny_root.rename(moved)
  try:
    again = tfds_builder.load_split(tiny_root, data_dir, **TINY)
  finally:
    moved.rename(tiny_root)
  np.testing.assert_array_equal(again["test"]["images"], out["test"]["images"])

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = tfds.builder_from_directory(version_dir).as_data_source(
      split="distractor")
  assert len(source) == 2
  np.testing.assert_array_equal(source[1]["image"],
                                out["distractor"]["images"][1])
  assert "tensorflow" not in sys.modules


def test_paste_back_round_trip(lfw_root):
  img = align.read_rgb(lfw_root / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg")
  # Keep away from 0 and 255 so that no clipping hides the comparison.
  img = (img * 0.9 + 12).astype(np.uint8)
  face = align.align_image(img)
  yy, xx = np.mgrid[0:112, 0:112] / 112.0
  delta = np.stack([8 * np.sin(2 * np.pi * xx), 8 * np.cos(2 * np.pi * yy),
                    8 * np.sin(2 * np.pi * (xx + yy))], -1).astype(np.float32)
  warp = lambda im: cv2.warpAffine(im.astype(np.float32), face.transform,
                                   (112, 112), borderValue=0.0)
  inner = (slice(8, 104), slice(8, 104))

  protected = align.paste_back(img, delta, face.transform)
  assert protected.shape == img.shape and protected.dtype == np.uint8
  got = (warp(protected) - warp(img))[inner]
  # Left: rounding to uint8 in the photo, blurred by the second warp.
  err = np.abs(got - delta[inner])
  assert err.mean() < 0.3 and err.max() < 0.75, (err.mean(), err.max())
  # Outside the crop's footprint the photo is untouched.
  outside = cv2.warpAffine(np.ones((112, 112), np.float32), face.transform,
                           img.shape[1::-1], flags=cv2.WARP_INVERSE_MAP
                           | cv2.INTER_LINEAR) == 0
  assert outside.sum() > 10000
  np.testing.assert_array_equal(protected[outside], img[outside])

  # A protected uint8 crop gives the same photo as its delta.
  protected_crop = np.clip(np.rint(face.crop + delta), 0, 255).astype(np.uint8)
  from_crop = align.paste_back(img, protected_crop, face.transform)
  assert np.abs(from_crop.astype(int) - protected.astype(int)).max() <= 2


def test_tfds_refuses_a_split_with_no_face(lfw_root, tmp_path):
  person = tmp_path / "root" / "Nobody"
  person.mkdir(parents=True)
  for i in (1, 2):
    Image.fromarray(np.full((120, 120, 3), 40 * i, np.uint8)).save(
        person / f"Nobody_{i:04d}.png")
  os.symlink(lfw_root / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg",
             person / "Nobody_0003.jpg")
  with pytest.raises(ValueError, match="none of the 2 'train' photos"):
    tfds_builder.prepare(tmp_path / "root", tmp_path / "tfds", **TINY)
