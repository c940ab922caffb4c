"""Confidence intervals by bootstrap over people.

The photos of one person are not independent draws (the same face, the same
mask), so the unit resampled is the person: each resample draws as many people
as there are, with replacement, and recomputes the pooled, pair-weighted rate
sum(events) / sum(pairs) over the people drawn. The interval is the central
percentile range of those rates.
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def pooled_rate_ci(events: np.ndarray, pairs: np.ndarray, *, resamples: int = RESAMPLES,
                   level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
  """(lo, hi) percentile interval of sum(events) / sum(pairs) over people resampled.

  events, pairs: (P,) per person, e.g. missed matches and ordered pairs. People
  with no pairs take no part; with none left the interval is (nan, nan).
  """
  events, pairs = np.asarray(events, np.float64), np.asarray(pairs, np.float64)
  if events.shape != pairs.shape or events.ndim != 1:
    raise ValueError(f"events and pairs must be (P,) arrays, got {events.shape}, {pairs.shape}")
  if not 0 < level < 1:
    raise ValueError(f"level must lie in (0, 1), got {level}")
  keep = pairs > 0
  events, pairs = events[keep], pairs[keep]
  if not len(pairs):
    return float("nan"), float("nan")
  # How often each person is drawn in each resample: (resamples, P) counts.
  draws = np.random.default_rng(seed).multinomial(
      len(pairs), np.full(len(pairs), 1.0 / len(pairs)), size=resamples)
  rates = (draws @ events) / (draws @ pairs)
  tail = 100 * (1 - level) / 2
  lo, hi = np.percentile(rates, [tail, 100 - tail])
  return float(lo), float(hi)
