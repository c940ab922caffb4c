"""LFW verification protocol: hand-computed folds, pairs.txt, a real model, the listing."""
import json
import subprocess
import sys

import numpy as np
import pytest

from opom_jax import paths
from opom_jax.data import align
from opom_jax.data import lfw_pairs_faces
from opom_jax.eval import verification
from opom_jax.models import zoo


@pytest.fixture(scope="module")
def pairs_file():
  return paths.data_root() / "lfw-protocol" / "pairs.txt"


@pytest.fixture(scope="module")
def pairs(pairs_file):
  return verification.read_pairs(pairs_file)


def test_best_threshold_by_hand():
  scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
  same = np.array([0, 0, 1, 0, 1, 1], bool)
  # Cuts at 0.25 and at 0.45 both get 5 of 6 right; ties go to the lower one.
  t, acc = verification.best_threshold(scores, same)
  assert t == pytest.approx(0.25) and acc == pytest.approx(5 / 6)


def test_best_threshold_cannot_split_ties():
  t, acc = verification.best_threshold(np.full(5, 0.3), np.array([1, 1, 1, 0, 0], bool))
  assert acc == pytest.approx(3 / 5) and t < 0.3   # all called "same"


def test_separable_scores_give_100_percent():
  rng = np.random.default_rng(0)
  fold = np.repeat(np.arange(10), 20)
  same = np.tile(np.repeat([True, False], 10), 10)
  scores = np.where(same, rng.uniform(0.5, 1.0, 200), rng.uniform(-0.2, 0.4, 200))
  result = verification.kfold_accuracy(scores, same, fold)
  np.testing.assert_array_equal(result.accuracies, np.ones(10))
  assert result.mean == 1.0 and result.std == 0.0
  assert np.all((result.thresholds > 0.4) & (result.thresholds < 0.5))


def test_two_folds_by_hand():
  # Fold 0 separates at 0.5; fold 1 overlaps (a same pair at 0.35).
  scores = np.array([0.8, 0.9, 0.1, 0.2, 0.6, 0.35, 0.3, 0.4])
  same = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
  fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  result = verification.kfold_accuracy(scores, same, fold)
  # Fold 1 tested at t = 0.5 (from fold 0): 0.35 is missed -> 3/4.
  # Fold 0 tested at t = 0.325 (fold 1's first best cut, 3/4): all right.
  np.testing.assert_allclose(result.thresholds, [0.325, 0.5])
  np.testing.assert_allclose(result.accuracies, [1.0, 0.75])
  assert result.mean == pytest.approx(0.875) and result.std == pytest.approx(0.125)


def test_pairs_file(pairs, lfw_root):
  assert len(pairs) == 6000 and pairs.num_folds == 10
  for k in range(10):
    in_fold = pairs.fold == k
    assert in_fold.sum() == 600 and pairs.same[in_fold].sum() == 300
  assert (pairs.left[0], pairs.right[0]) == ("Abel_Pacheco/Abel_Pacheco_0001.jpg",
                                             "Abel_Pacheco/Abel_Pacheco_0004.jpg")
  # Matched pairs are one person, mismatched pairs two.
  person = lambda i: i.split("/")[0]
  assert all((person(l) == person(r)) == s for l, r, s in zip(pairs.left, pairs.right, pairs.same))
  images = pairs.images()
  assert len(images) == 7701
  assert all((lfw_root / i).is_file() for i in images)


def test_bad_pairs_file_names_the_line(tmp_path):
  bad = tmp_path / "pairs.txt"
  bad.write_text("1\t1\nAbel_Pacheco\t1\t4\nAbel_Pacheco\t1\n")
  with pytest.raises(ValueError, match=r"pairs.txt:3: expected a mismatched"):
    verification.read_pairs(bad)


def test_subset(pairs):
  sub = verification.subset(pairs, max_pairs_per_fold=120, folds=[0, 1])
  assert len(sub) == 240 and sub.num_folds == 2
  for k in (0, 1):
    assert sub.same[sub.fold == k].sum() == 60 and (~sub.same[sub.fold == k]).sum() == 60
  assert sub.left[0] == pairs.left[0] and sub.left[60] == pairs.left[300]


def test_centre_crop_takes_the_middle():
  img = np.zeros((250, 250, 3), np.uint8)
  img[68:182, 68:182] = 200
  crop = lfw_pairs_faces.centre_crop(img)
  assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
  assert np.all(crop == 200)


def test_align_lfw_picks_the_centred_face(lfw_root):
  """Colin_Farrell_0003 has a larger bystander face; LFW labels the centred one."""
  img = align.read_rgb(lfw_root / "Colin_Farrell" / "Colin_Farrell_0003.jpg")
  centre = lambda box: np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
  largest = align.align_image(img)
  assert np.abs(centre(largest.box) - 125).sum() > 100
  face = lfw_pairs_faces.align_lfw(img)
  assert np.abs(centre(face.box) - 125).sum() < 40
  assert face.crop.shape == (112, 112, 3) and face.crop.dtype == np.uint8


def test_real_pairs_foamliu(pairs, lfw_root, tmp_path):
  """240 real pairs (2 folds x 60 + 60), aligned on the fly; foamliu JAX >= 97%."""
  sub = verification.subset(pairs, max_pairs_per_fold=120, folds=[0, 1])
  cache = tmp_path / "faces.npz"
  faces = verification.load_pair_faces(sub, lfw_root, cache)
  assert faces.crops.shape == (len(sub.images()), 112, 112, 3)
  again = verification.load_pair_faces(sub, lfw_root, cache)   # read back, no aligning
  np.testing.assert_array_equal(again.crops, faces.crops)
  np.testing.assert_array_equal(again.fallback, faces.fallback)
  result = verification.verify(zoo.load_target("jax:foamliu_mbf").embed, faces, sub)
  assert result.num_pairs == 240
  assert result.mean >= 0.97, result.folds.accuracies
  same, diff = result.scores[sub.same], result.scores[~sub.same]
  assert same.mean() > diff.mean() + 0.4


def test_listing_prints_one_lfw_line_per_model(tmp_path):
  acc = tmp_path / "acc.json"
  acc.write_text(json.dumps({"foamliu_mbf": {"jax": 99.42, "runtime": 99.4, "pairs": 6000}}))
  out = subprocess.run([sys.executable, "-m", "experiments.models", f"--accuracy_file={acc}"],
                       cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
  lines = [l for l in out.stdout.splitlines() if " lfw=" in l]
  assert sorted(l.split()[0] for l in lines) == sorted(zoo.surrogate_names())
  foamliu = next(l for l in lines if l.startswith("foamliu_mbf"))
  assert "lfw=99.42" in foamliu and "runtime_lfw=99.40" in foamliu
  assert all("lfw=n/a" in l for l in lines if l.startswith("iresnet"))
