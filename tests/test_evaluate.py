"""Protection metrics: checked against a direct re-statement of the protocol."""
import numpy as np
import pytest

from opom_jax.eval import metrics


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _brute_force(probe, clean, identity, distractors, k, probe_identity=None,
                 exclude_same_index=True):
  """The reference's loop: gallery = [clean j] + distractors, argsort, is index 0 in top k.

  Returns (pooled protection, {person: protection}, pairs).
  """
  probe_identity = identity if probe_identity is None else probe_identity
  hits, pairs = {}, {}
  for person in np.unique(identity):
    for i in np.flatnonzero(probe_identity == person):
      for j in np.flatnonzero(identity == person):
        if exclude_same_index and i == j:
          continue
        gallery = np.concatenate([clean[j:j + 1], distractors])
        sims = gallery @ probe[i]
        # Ties are broken against the true match (rank counts strictly higher only).
        order = np.lexsort((np.arange(len(sims)) != 0, -sims))
        hits[person] = hits.get(person, 0) + (0 in order[:k])
        pairs[person] = pairs.get(person, 0) + 1
  total = sum(pairs.values())
  per_person = {p: 1 - hits[p] / pairs[p] for p in pairs}
  return 1 - sum(hits.values()) / total, per_person, total


def test_protection_matches_brute_force_protocol():
  rng = np.random.default_rng(0)
  identity = np.repeat(np.arange(4), [2, 3, 5, 4])
  centres = _unit(rng.normal(size=(4, 16)))
  clean = _unit(centres[identity] + 0.6 * rng.normal(size=(len(identity), 16)))
  probe = _unit(clean + 0.9 * rng.normal(size=clean.shape))
  distractors = _unit(rng.normal(size=(50, 16)))
  res = metrics.protection(probe, clean, identity, distractors)
  for k in metrics.KS:
    expected, per_person, pairs = _brute_force(probe, clean, identity, distractors, k)
    assert res.pooled[k] == pytest.approx(expected)
    np.testing.assert_allclose(res.per_person[k], [per_person[p] for p in range(4)])
    assert res.pairs == pairs == 2 * 1 + 3 * 2 + 5 * 4 + 4 * 3
  assert 0 < res.pooled[1] < 1  # the example is neither trivially protected nor not


def test_clean_probes_are_found_and_far_probes_protected():
  rng = np.random.default_rng(1)
  identity = np.repeat(np.arange(3), 4)
  clean = _unit(np.eye(12, 32)[identity * 4] + 0.05 * rng.normal(size=(12, 32)))
  distractors = _unit(rng.normal(size=(40, 32)))
  assert metrics.protection(clean, clean, identity, distractors).pooled[1] == 0.0
  far = -clean  # the protected feature points away from everything of its person
  assert metrics.protection(far, clean, identity, distractors).pooled[10] == 1.0


def test_per_person_and_universality_variant():
  """Training photos' probes against every clean test photo of the person (no index pairing)."""
  rng = np.random.default_rng(2)
  identity = np.repeat(np.arange(2), [3, 6])
  centres = _unit(rng.normal(size=(2, 8)))
  clean = _unit(centres[identity] + 0.5 * rng.normal(size=(9, 8)))
  train_identity = np.array([0, 0, 1, 1])
  train_probe = _unit(centres[train_identity] + 0.9 * rng.normal(size=(4, 8)))
  distractors = _unit(rng.normal(size=(20, 8)))
  res = metrics.protection(train_probe, clean, identity, distractors,
                           probe_identity=train_identity, exclude_same_index=False)
  assert res.pairs == 2 * 3 + 2 * 6  # every training probe x every clean test photo
  for k in metrics.KS:
    expected, per_person, pairs = _brute_force(
        train_probe, clean, identity, distractors, k, probe_identity=train_identity,
        exclude_same_index=False)
    assert pairs == res.pairs and res.pooled[k] == pytest.approx(expected)
    np.testing.assert_allclose(res.per_person[k], [per_person[0], per_person[1]])
  assert 0 < res.pooled[1] < 1


def test_psnr_is_the_mean_over_photos_of_each_photos_psnr():
  clean = np.full((3, 4, 4, 3), 100, np.uint8)
  protected = clean.copy()
  protected[0] += 8   # MSE 64
  protected[1] += 2   # MSE 4
  # protected[2] is untouched: infinite PSNR, left out of the mean.
  expected = np.mean([10 * np.log10(255**2 / 64), 10 * np.log10(255**2 / 4)])
  assert metrics.psnr(protected, clean) == pytest.approx(expected)
  assert metrics.psnr(clean, clean) == float("inf")


def test_pictures_are_written(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from opom_jax.eval import figures  # pylint: disable=g-import-not-at-top
  rows = [{"method": m, "target": t, "protect@1": v}
          for (m, t, v) in [("clean", "a", 0.0), ("convex_hull", "a", 0.9), ("convex_hull", "b", 0.4)]]
  chart = figures.protection_chart(rows, tmp_path / "chart.png")
  clean = np.full((2, 112, 112, 3), 128, np.uint8)
  masks = {"convex_hull": np.full((2, 112, 112, 3), 8.0, np.float32)}
  grid = figures.mask_grid(clean, masks, 8.0, tmp_path / "grid.png")
  for path in (chart, grid):
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 1  # something was drawn
