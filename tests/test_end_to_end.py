"""End-to-end protection on full in-the-wild photos: pipelines, transformations, table."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from opom_jax.attack.config import AttackConfig
from opom_jax.eval import end_to_end, pipelines, real_world

TARGETS = ("dlib_resnet", "jax:foamliu_mbf")
TRANSFORMS = ("none", "social")


@pytest.fixture(scope="module")
def cfg():
  return end_to_end.EndToEndConfig(
      people=2, n_train=10, distractor_people=3, distractors_per_person=2, targets=TARGETS,
      transforms=TRANSFORMS, eot_probs=(0.0, 1.0), attack=AttackConfig(rule="base", iters=2))


@pytest.fixture(scope="module")
def loaded(cfg):
  return end_to_end.load_people(cfg)


def test_people_split_into_train_crops_and_full_test_photos(cfg, loaded):
  people, distractors = loaded
  assert len(people) == 2 and len(distractors) == 6
  for person in people:
    assert person.train_crops.shape == (10, 112, 112, 3)
    assert len(person.test_photos) >= 2
    assert all(p.shape[0] > 112 or p.shape[1] > 112 for p in person.test_photos)  # full photos
  assert people[0].name < people[1].name   # the first people, in folder order


def test_learned_masks_give_the_table(cfg, loaded):
  people, distractors = loaded
  masks = {end_to_end.method_name(p): end_to_end.learn(cfg, people, p, log=lambda _: None)
           for p in cfg.eot_probs}
  cfg = dataclasses.replace(cfg, transforms=("social",))   # one transformation keeps it short
  assert set(masks) == {"base", "base+eot1"}
  for mask in masks.values():
    assert mask.shape == (2, 112, 112, 3) and 0 < np.abs(mask).max() <= cfg.attack.eps
  rows = end_to_end.evaluate(cfg, people, distractors, masks, log=lambda _: None)
  photo = [r for r in rows if r["level"] == "photo"]
  crop = [r for r in rows if r["level"] == "crop"]
  assert len(photo) == 2 * len(TARGETS) and len(crop) == 2 * len(TARGETS)
  for r in photo:
    assert set(r) == set(end_to_end.COLUMNS)
    assert 0.0 <= r["protection@1"] <= 1.0 and 0.0 <= r["detected"] <= 1.0
    assert 30.0 < r["psnr"] < 80.0   # a masked face in a bigger photo: some change, not much
  for r in crop:
    assert set(r) == set(end_to_end.COLUMNS) - {"detected"}
    assert 25.0 < r["psnr"] < 60.0


def test_zero_mask_protects_as_much_as_the_clean_error(cfg, loaded):
  people, distractors = loaded
  zero = {"none": np.zeros((2, 112, 112, 3), np.float32)}
  rows = end_to_end.evaluate(cfg, people, distractors, zero, log=lambda _: None)
  for r in rows:
    assert r["protection@1"] == r["clean_error@1"], r
  assert all(r["psnr"] == float("inf") for r in rows if r["level"] == "photo")


def test_social_transform_moves_the_face_where_the_detector_finds_it(loaded):
  people, _ = loaded
  photo, face = people[0].test_photos[0], people[0].test_faces[0]
  moved, m = real_world.TRANSFORMS.get("social")(photo)
  assert moved.shape[0] == round(round(photo.shape[0] * 0.8) * 0.9)
  predicted = pipelines.FacePlace(face.landmarks, face.box).moved(m)
  found = pipelines.find_face(moved)
  assert found is not None
  assert np.abs(found.points - predicted.points).mean() < 3.0


def test_jpeg_transform_changes_pixels_not_size(loaded):
  photo = loaded[0][0].test_photos[0]
  for name in ("jpeg95", "jpeg75", "down2"):
    out, m = real_world.TRANSFORMS.get(name)(photo)
    assert out.shape == photo.shape and not np.array_equal(out, photo)
    np.testing.assert_array_equal(m, [[1, 0, 0], [0, 1, 0]])
  err95 = np.abs(real_world.jpeg(photo, 95).astype(int) - photo).mean()
  err75 = np.abs(real_world.jpeg(photo, 75).astype(int) - photo).mean()
  assert err75 > err95


def test_launcher_bad_flag_is_one_line():
  result = subprocess.run([sys.executable, "-m", "experiments.protect_eval", "--eot_probs=0,x"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == "error: --eot_probs=0,x: give numbers in [0, 1]"
