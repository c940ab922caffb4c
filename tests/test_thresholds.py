"""Verification thresholds at a fixed FAR, and the rejection of protected probes."""
import json

import numpy as np
import pytest

from opom_jax import paths
from opom_jax.eval import metrics, thresholds
from opom_jax.runtimes.jax_runtime import JaxTarget


def _embeddings(n=60, people=12, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(people, dim))
  person = rng.integers(0, people, n)
  emb = centres[person] + 0.8 * rng.normal(size=(n, dim))
  return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), person


def _all_impostor_scores(emb, person):
  i, j = np.triu_indices(len(emb), k=1)
  different = person[i] != person[j]
  return np.sum(emb[i[different]] * emb[j[different]], axis=1)


def test_far_threshold_accepts_the_requested_share():
  scores = np.random.default_rng(1).permutation(np.arange(1000) / 1000)
  t = thresholds.far_threshold(scores, 0.01)
  assert np.sum(scores > t) == 10 and t == pytest.approx(0.989)
  assert thresholds.far_threshold(scores, 0.0) == pytest.approx(0.999)


@pytest.mark.parametrize("far", [1e-3, 0.01, 0.1])
def test_impostor_threshold_over_every_different_person_pair(far):
  emb, person = _embeddings()
  scores = _all_impostor_scores(emb, person)
  t = thresholds.impostor_threshold(emb, person, far, chunk=7)   # many uneven chunks
  assert t.impostor_pairs == len(scores) and t.images == len(emb)
  allowed = int(far * len(scores))   # the requested share, rounded down
  # The (allowed + 1)-th largest score; chunked float32 products round a little differently.
  assert t.value == pytest.approx(np.sort(scores)[::-1][allowed], abs=1e-6)
  assert np.sum(scores > t.value + 1e-6) <= allowed <= far * len(scores)
  assert np.sum(scores > t.value - 1e-6) > allowed   # no higher threshold would do


def test_same_person_pairs_do_not_count():
  # Two people whose own photos are identical: their same-person scores are 1, impostors 0.
  emb = np.repeat(np.eye(4, dtype=np.float32)[:2], 3, axis=0)
  t = thresholds.impostor_threshold(emb, [0, 0, 0, 1, 1, 1], far=0.0)
  assert t.value == pytest.approx(0.0) and t.impostor_pairs == 9


def _people_features(vectors, photos=3):
  return np.repeat(vectors, photos, axis=0), np.repeat(np.arange(len(vectors)), photos)


def test_rejection_of_identical_and_orthogonal_probes():
  basis = np.eye(8, dtype=np.float32)
  clean, identity = _people_features(basis[:3])
  same = metrics.verification_rejection(clean, clean, identity, threshold=0.3)
  assert same.rate == 0.0 and same.person_pairs.sum() == 3 * 6
  orthogonal, _ = _people_features(basis[3:6])
  other = metrics.verification_rejection(orthogonal, clean, identity, threshold=0.3)
  assert other.rate == 1.0
  assert other.ci() == (1.0, 1.0)


def test_rejection_counts_each_person_pairs():
  basis = np.eye(8, dtype=np.float32)
  clean, identity = _people_features(basis[:2])
  probe = clean.copy()
  probe[0] = basis[5]        # person 0, photo 0: rejected against its 2 other photos
  res = metrics.verification_rejection(probe, clean, identity, threshold=0.5)
  np.testing.assert_array_equal(res.person_rejected, [2, 0])
  assert res.rate == pytest.approx(2 / 12)


def test_lfw_threshold_is_sane_and_cached(tmp_path, foamliu):
  target = JaxTarget(foamliu)
  calls = []

  def counting_embed(images):
    calls.append(len(images))
    return target.embed(images)

  root = paths.data_root()
  kwargs = dict(pairs_path=root / "lfw-protocol" / "pairs.txt", lfw_dir=root / "lfw-deepfunneled",
                cache_dir=tmp_path, max_images=24, log=lambda _: None)
  t = thresholds.lfw_threshold(target.name, counting_embed, **kwargs)
  assert sum(calls) == 24
  people = [i.split("/")[0] for i in thresholds.pairs_file_images(kwargs["pairs_path"])[:24]]
  sizes = np.unique(people, return_counts=True)[1]
  assert t.impostor_pairs == 24 * 23 // 2 - int(np.sum(sizes * (sizes - 1) // 2))
  assert 0.0 < t.value < 1.0 and t.far == thresholds.FAR and t.images == 24

  again = thresholds.lfw_threshold(target.name, counting_embed, **kwargs)
  assert again == t and sum(calls) == 24          # read back: nothing embedded

  (written,) = (tmp_path / "verification_thresholds").glob("*.json")
  assert json.loads(written.read_text())["value"] == t.value
  written.write_text("{not json")
  assert thresholds.lfw_threshold(target.name, counting_embed, **kwargs) == t
  assert sum(calls) == 48                          # a damaged cache is recomputed
  # Another target (or FAR) is another cache entry.
  thresholds.lfw_threshold("jax:other", counting_embed, **kwargs)
  assert sum(calls) == 72 and len(list((tmp_path / "verification_thresholds").glob("*"))) == 2
