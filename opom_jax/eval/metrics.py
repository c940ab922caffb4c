"""Protection metrics (the reference's protocol) and image-quality metrics.

For every identity and every ordered pair (i, j), i != j, of its photos, the
probe is the *protected* photo i and the gallery is the *clean* photo j plus
the distractors. The rank of the true match is the number of distractors with
a strictly higher cosine; a hit at k means rank < k. Protection@k = 1 - hit@k.

Verification rejection uses the same pairs without distractors: the share a
verifier accepting `cosine > threshold` (eval.thresholds) rejects. Both keep
per-person counts, so eval.bootstrap can resample people for an interval.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from opom_jax.eval import bootstrap
from opom_jax.models.base import l2_normalize_np

KS = (1, 5, 10)


@dataclasses.dataclass
class Protection:
  pooled: dict[int, float]          # k -> protection over all ordered pairs
  per_person: dict[int, np.ndarray]  # k -> (P,) protection per identity (nan: < 2 photos)
  pairs: int
  # Per identity, for pooling over resampled people (eval.bootstrap):
  person_misses: dict[int, np.ndarray]  # k -> (P,) pairs whose true match ranks >= k
  person_pairs: np.ndarray              # (P,) ordered pairs

  def person_mean(self, k: int) -> float:
    return float(np.nanmean(self.per_person[k]))

  def ci(self, k: int, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval over people of the pooled protection@k."""
    return bootstrap.pooled_rate_ci(self.person_misses[k], self.person_pairs, seed=seed)


def match_ranks(probe, gallery_match, distractors):
  """(M,) ranks of the true match for probe i against gallery photo j.

  probe, gallery_match: (M, d) L2-normalised; distractors: (D, d).
  """
  target = np.sum(probe * gallery_match, axis=-1)
  sims = probe @ distractors.T
  return np.sum(sims > target[:, None], axis=-1)


def _person_pairs(identity, probe_identity, exclude_same_index):
  """Per identity (sorted): its index and the (probe, gallery) index arrays of its ordered pairs."""
  for p_idx, person in enumerate(np.unique(identity)):
    probes = np.flatnonzero(probe_identity == person)
    gallery = np.flatnonzero(identity == person)
    pi, gj = np.meshgrid(probes, gallery, indexing="ij")
    keep = (pi != gj) if exclude_same_index else np.ones_like(pi, bool)
    yield p_idx, pi[keep], gj[keep]


def protection(probe_feats, clean_feats, identity, distractor_feats, ks=KS,
               probe_identity=None, exclude_same_index=True) -> Protection:
  """Protection@k with the ordered-pair protocol.

  probe_feats (M, d) and their identity labels; clean_feats (M', d) gallery
  photos with `identity`. By default probes and gallery are the same photos
  (protected vs clean versions), and pairs with the same index are skipped.
  """
  probe_identity = identity if probe_identity is None else probe_identity
  people = np.unique(identity)
  hits = {k: np.zeros(len(people)) for k in ks}
  counts = np.zeros(len(people))
  for p_idx, pi, gj in _person_pairs(identity, probe_identity, exclude_same_index):
    if pi.size == 0:
      continue
    ranks = match_ranks(probe_feats[pi], clean_feats[gj], distractor_feats)
    counts[p_idx] = pi.size
    for k in ks:
      hits[k][p_idx] = np.sum(ranks < k)
  total = counts.sum()
  with np.errstate(invalid="ignore", divide="ignore"):
    per_person = {k: np.where(counts > 0, 1.0 - hits[k] / counts, np.nan) for k in ks}
  pooled = {k: float(1.0 - hits[k].sum() / max(total, 1)) for k in ks}
  return Protection(pooled=pooled, per_person=per_person, pairs=int(total),
                    person_misses={k: counts - hits[k] for k in ks}, person_pairs=counts)


@dataclasses.dataclass
class Rejection:
  """Verification of protected probes against clean photos of the same person."""
  person_rejected: np.ndarray  # (P,) pairs scored at or below the threshold
  person_pairs: np.ndarray     # (P,) ordered pairs

  @property
  def rate(self) -> float:
    return float(self.person_rejected.sum() / max(self.person_pairs.sum(), 1))

  def ci(self, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval over people of the pooled rejection rate."""
    return bootstrap.pooled_rate_ci(self.person_rejected, self.person_pairs, seed=seed)


def verification_rejection(probe_feats, clean_feats, identity, threshold: float) -> Rejection:
  """Share of ordered pairs (protected photo i, clean photo j != i of the same person)
  that a verifier accepting `cosine > threshold` rejects."""
  probe, clean = l2_normalize_np(probe_feats), l2_normalize_np(clean_feats)
  people = np.unique(identity)
  rejected, counts = np.zeros(len(people)), np.zeros(len(people))
  for p_idx, pi, gj in _person_pairs(identity, identity, exclude_same_index=True):
    scores = np.sum(probe[pi] * clean[gj], axis=-1)
    rejected[p_idx], counts[p_idx] = np.sum(scores <= threshold), pi.size
  return Rejection(rejected, counts)


def psnr(protected_uint8, clean_uint8) -> float:
  """Mean over photos of the PSNR (dB, peak 255) between protected and clean."""
  a = np.asarray(protected_uint8, np.float64).reshape(len(protected_uint8), -1)
  b = np.asarray(clean_uint8, np.float64).reshape(len(clean_uint8), -1)
  mse = np.mean((a - b) ** 2, axis=1)
  with np.errstate(divide="ignore"):
    values = 10.0 * np.log10(255.0 ** 2 / mse)
  return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("inf")
