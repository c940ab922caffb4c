"""LFW face verification: the standard 10-fold pairs protocol.

    pairs = verification.read_pairs(".../lfw-protocol/pairs.txt")
    faces = verification.load_pair_faces(pairs, ".../lfw-deepfunneled", cache)
    result = verification.verify(target.embed, faces, pairs)
    result.mean, result.std    # accuracy over the folds, in 0..1

`pairs.txt` (LFW README, View 2): a header line "<folds> <n>", then per fold
n matched lines "name i j" followed by n mismatched lines "name1 i name2 j".
Scores are cosine similarities of L2-normalised embeddings; each fold is
classified with the threshold that maximises accuracy on the other folds.

The crops come from `data.lfw_pairs_faces` (alignment, centre-crop fallback
for photos the detector misses, and the .npz cache); the fallback count is
reported with the accuracy.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from opom_jax.data import lfw_pairs_faces
from opom_jax.data.lfw_pairs_faces import PairFaces
from opom_jax.models.base import l2_normalize_np


@dataclasses.dataclass(frozen=True)
class Pairs:
  """One row per pair; image ids are "<Person>/<Person>_<NNNN>.jpg"."""
  left: tuple[str, ...]
  right: tuple[str, ...]
  same: np.ndarray   # (P,) bool
  fold: np.ndarray   # (P,) int, 0-based

  def __len__(self):
    return len(self.same)

  @property
  def num_folds(self) -> int:
    return len(np.unique(self.fold))

  def images(self) -> list[str]:
    """Unique image ids, sorted."""
    return sorted(set(self.left) | set(self.right))


def image_id(person: str, number: int | str) -> str:
  return f"{person}/{person}_{int(number):04d}.jpg"


def read_pairs(path: str | os.PathLike) -> Pairs:
  """Parses an LFW pairs file (pairs.txt, or pairsDevTest.txt with one fold)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"LFW pairs file {path} not found (flag --pairs)")
  lines = [l.split() for l in path.read_text().splitlines() if l.strip()]
  header = lines[0]
  if len(header) == 1:   # pairsDevTrain/DevTest: one fold, "n"
    folds, per_class = 1, int(header[0])
  elif len(header) == 2:
    folds, per_class = int(header[0]), int(header[1])
  else:
    raise ValueError(f"{path}:1: expected '<folds> <pairs per class>', got {' '.join(header)!r}")
  body = lines[1:]
  if len(body) != folds * 2 * per_class:
    raise ValueError(f"{path}: header promises {folds} x 2 x {per_class} pairs, "
                     f"found {len(body)} lines")
  left, right, same, fold = [], [], [], []
  for n, row in enumerate(body):
    lineno = n + 2
    k, within = divmod(n, 2 * per_class)
    matched = within < per_class
    if matched and len(row) == 3:
      left.append(image_id(row[0], row[1]))
      right.append(image_id(row[0], row[2]))
    elif not matched and len(row) == 4:
      left.append(image_id(row[0], row[1]))
      right.append(image_id(row[2], row[3]))
    else:
      kind = "matched 'name i j'" if matched else "mismatched 'name1 i name2 j'"
      raise ValueError(f"{path}:{lineno}: expected a {kind} line, got {' '.join(row)!r}")
    same.append(matched)
    fold.append(k)
  return Pairs(tuple(left), tuple(right), np.array(same, bool), np.array(fold, np.int64))


def subset(pairs: Pairs, max_pairs_per_fold: int | None = None,
           folds: Sequence[int] | None = None) -> Pairs:
  """The first max_pairs_per_fold/2 matched and mismatched pairs of each chosen fold."""
  keep = np.ones(len(pairs), bool)
  if folds is not None:
    keep &= np.isin(pairs.fold, np.asarray(folds))
  if max_pairs_per_fold:
    per_class = max(max_pairs_per_fold // 2, 1)
    rank = np.zeros(len(pairs), np.int64)
    for k in np.unique(pairs.fold):
      for s in (True, False):
        idx = np.flatnonzero((pairs.fold == k) & (pairs.same == s))
        rank[idx] = np.arange(len(idx))
    keep &= rank < per_class
  idx = np.flatnonzero(keep)
  return Pairs(tuple(pairs.left[i] for i in idx), tuple(pairs.right[i] for i in idx),
               pairs.same[idx], pairs.fold[idx])


# --- accuracy ---------------------------------------------------------------


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
  """(threshold, accuracy) maximising accuracy of `same <=> score > threshold`.

  Candidates: midpoints between consecutive distinct sorted scores, plus one
  below the smallest and one above the largest. Ties go to the lowest threshold.
  """
  scores = np.asarray(scores, np.float64)
  same = np.asarray(same, bool)
  order = np.argsort(scores, kind="stable")
  s, y = scores[order], same[order]
  n = len(s)
  # Threshold just below s[i] (i = 0..n): predicted same = s[i:], different = s[:i].
  diff_below = np.concatenate([[0], np.cumsum(~y)])
  same_above = y.sum() - np.concatenate([[0], np.cumsum(y)])
  correct = diff_below + same_above
  # Only cut between distinct values (a tie cannot be split by a threshold).
  valid = np.ones(n + 1, bool)
  valid[1:n] = s[1:] != s[:-1]
  i = int(np.argmax(np.where(valid, correct, -1)))
  if i == 0:
    t = s[0] - 1.0 if n else 0.0
  elif i == n:
    t = s[-1] + 1.0
  else:
    t = 0.5 * (s[i - 1] + s[i])
  return float(t), float(correct[i] / max(n, 1))


@dataclasses.dataclass(frozen=True)
class FoldResult:
  accuracies: np.ndarray   # (K,) test accuracy of each fold, 0..1
  thresholds: np.ndarray   # (K,) threshold chosen on the other folds

  @property
  def mean(self) -> float:
    return float(self.accuracies.mean())

  @property
  def std(self) -> float:
    return float(self.accuracies.std())


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> FoldResult:
  """Per fold: threshold from the other folds, accuracy on this one."""
  scores, same, fold = np.asarray(scores), np.asarray(same, bool), np.asarray(fold)
  if not len(scores) == len(same) == len(fold):
    raise ValueError(f"scores, same, fold differ in length: {len(scores)}, {len(same)}, {len(fold)}")
  ks = np.unique(fold)
  if len(ks) < 2:
    raise ValueError(f"k-fold accuracy needs at least 2 folds, got {len(ks)}")
  accs, thresholds = [], []
  for k in ks:
    test = fold == k
    t, _ = best_threshold(scores[~test], same[~test])
    accs.append(np.mean((scores[test] > t) == same[test]))
    thresholds.append(t)
  return FoldResult(np.array(accs), np.array(thresholds))


# --- faces ------------------------------------------------------------------


def load_pair_faces(pairs: Pairs | Iterable[str], lfw_dir: str | os.PathLike,
                    cache_path: str | os.PathLike | None = None,
                    progress: Callable[[str], None] | None = None,
                    save_every: int = 500) -> PairFaces:
  """Aligned crops of every image of the pairs (or of the given image ids), cached."""
  ids = pairs.images() if isinstance(pairs, Pairs) else pairs
  return lfw_pairs_faces.load_crops(ids, lfw_dir, cache_path, progress, save_every)


# --- end to end -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VerificationResult:
  folds: FoldResult
  scores: np.ndarray        # (P,) cosine similarity per pair
  num_pairs: int
  fallback_images: int      # images of these pairs that were centre-cropped
  fallback_pairs: int       # pairs with at least one such image
  seconds: float            # embedding time

  @property
  def mean(self) -> float:
    return self.folds.mean

  @property
  def std(self) -> float:
    return self.folds.std


def embed_all(embed: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, batch_size: int = 100,
              progress: Callable[[str], None] | None = None) -> np.ndarray:
  """Embeds uint8 crops in batches; rows are L2-normalised here once more."""
  out, t0 = [], time.perf_counter()
  for start in range(0, len(crops), batch_size):
    out.append(np.asarray(embed(crops[start:start + batch_size]), np.float32))
    done = min(start + batch_size, len(crops))
    if progress and ((done // batch_size) % 10 == 0 or done == len(crops)):
      rate = done / (time.perf_counter() - t0)
      progress(f"  embedded {done}/{len(crops)} ({rate:.1f}/s)")
  return l2_normalize_np(np.concatenate(out))


def pair_scores(emb: np.ndarray, faces: PairFaces, pairs: Pairs) -> np.ndarray:
  index = faces.index()
  a = emb[[index[i] for i in pairs.left]]
  b = emb[[index[i] for i in pairs.right]]
  return np.sum(a * b, axis=1)


def verify(embed: Callable[[np.ndarray], np.ndarray], faces: PairFaces, pairs: Pairs,
           batch_size: int = 100, progress: Callable[[str], None] | None = None
           ) -> VerificationResult:
  """10-fold (or k-fold) verification accuracy of a black-box embed(uint8 crops)."""
  needed = set(pairs.images())
  keep = np.array([i in needed for i in faces.ids], bool)
  sub = PairFaces(tuple(i for i, k in zip(faces.ids, keep) if k), faces.crops[keep],
                  faces.fallback[keep])
  missing = needed - set(sub.ids)
  if missing:
    raise ValueError(f"{len(missing)} pair images have no crop, e.g. {sorted(missing)[:3]}")
  t0 = time.perf_counter()
  emb = embed_all(embed, sub.crops, batch_size, progress)
  seconds = time.perf_counter() - t0
  scores = pair_scores(emb, sub, pairs)
  fell_back = {i for i, f in zip(sub.ids, sub.fallback) if f}
  fallback_pairs = sum(l in fell_back or r in fell_back for l, r in zip(pairs.left, pairs.right))
  return VerificationResult(kfold_accuracy(scores, pairs.same, pairs.fold), scores, len(pairs),
                            len(fell_back), int(fallback_pairs), seconds)
