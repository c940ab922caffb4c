"""Bootstrap intervals over people for pooled, pair-weighted rates."""
import numpy as np
import pytest

from opom_jax.eval import bootstrap


def _people(n, seed=0):
  """n people with 6..30 ordered pairs each and a person-level rate drawn from Beta(2, 3)."""
  rng = np.random.default_rng(seed)
  pairs = rng.integers(6, 31, n)
  events = rng.binomial(pairs, rng.beta(2, 3, n))
  return events, pairs


def test_interval_contains_the_point_estimate():
  events, pairs = _people(40)
  lo, hi = bootstrap.pooled_rate_ci(events, pairs)
  assert lo < events.sum() / pairs.sum() < hi
  assert 0 <= lo and hi <= 1


def test_interval_shrinks_with_more_people():
  widths = []
  for n in (20, 80, 320):
    lo, hi = bootstrap.pooled_rate_ci(*_people(n, seed=n))
    widths.append(hi - lo)
  assert widths[0] > 1.5 * widths[1] > 2.25 * widths[2], widths


def test_width_matches_the_standard_error_of_the_pooled_rate():
  """Independent check: the 95% interval is about +-1.96 standard errors of the ratio
  estimator over people (delta method), for many people."""
  events, pairs = _people(400, seed=3)
  rate = events.sum() / pairs.sum()
  n = len(pairs)
  residual = events - rate * pairs
  se = np.sqrt(np.sum(residual ** 2) / n ** 2) / pairs.mean()
  lo, hi = bootstrap.pooled_rate_ci(events, pairs)
  assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_interval_is_degenerate_when_every_person_has_the_same_rate():
  pairs = np.array([2, 6, 12, 20, 30])
  lo, hi = bootstrap.pooled_rate_ci(pairs // 2, pairs)
  assert lo == hi == 0.5


def test_pooling_weighs_people_by_their_pairs():
  # One person with many pairs and all events, many with few pairs and none:
  # the pooled rate (not the mean of people's rates) must sit inside.
  events = np.array([100] + [0] * 9)
  pairs = np.array([100] + [2] * 9)
  lo, hi = bootstrap.pooled_rate_ci(events, pairs)
  assert lo < 100 / 118 <= hi
  assert hi > 0.5   # the mean of people's rates, 0.1, would never reach this


def test_deterministic_for_a_seed():
  events, pairs = _people(30)
  assert bootstrap.pooled_rate_ci(events, pairs, seed=7) == bootstrap.pooled_rate_ci(
      events, pairs, seed=7)
  assert bootstrap.pooled_rate_ci(events, pairs, seed=7) != bootstrap.pooled_rate_ci(
      events, pairs, seed=8)


def test_people_without_pairs_take_no_part():
  events, pairs = _people(30)
  padded = bootstrap.pooled_rate_ci(np.append(events, 0), np.append(pairs, 0))
  assert padded == bootstrap.pooled_rate_ci(events, pairs)
  assert np.isnan(bootstrap.pooled_rate_ci(np.zeros(3), np.zeros(3))).all()
