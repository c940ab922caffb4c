"""Paired comparisons of two methods (or of training vs unseen photos) on the same people.

Two methods' protect@1 on the same people are not independent: a person whose
photos are easy to protect is easy for both. Comparing their separate bootstrap
intervals (eval.bootstrap) ignores that and misses small but consistent
differences. Here each resample draws people once and recomputes both rates on
that draw, so the interval is the one of the difference itself. Over several
targets the statistic is the difference of the mean over targets of each
method's pooled rate, every target seeing the same resampled people.

Per-person counts come from each evaluated run's per_person.csv (run.evaluate).
"""
from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Callable, Sequence

import numpy as np

from opom_jax.eval import bootstrap
from opom_jax.eval.tables import csv_text
from opom_jax.files import atomic_write_text

PER_PERSON = "per_person.csv"
PER_PERSON_FIELDS = ["method", "target", "box", "person", "pairs", "misses@1",
                     "train_pairs", "train_misses@1"]

# The paper's claims, as (higher, lower) method pairs: the hulls beat the class
# centre, which beats FI-UAP; the per-photo PGD reference is the ceiling.
CLAIMS = (("convex_hull", "class_center"), ("affine_hull", "class_center"),
          ("reduced_convex_hull", "class_center"), ("convex_hull", "affine_hull"),
          ("class_center", "fi_uap"), ("fi_uap_plus", "fi_uap"), ("convex_hull", "fi_uap"),
          ("pgd_per_image", "convex_hull"))


@dataclasses.dataclass(frozen=True)
class Counts:
  """Per person (P,) counts of one method against one target."""
  pairs: np.ndarray
  misses: np.ndarray
  train_pairs: np.ndarray   # zeros: no training-photo evaluation (per-photo methods)
  train_misses: np.ndarray


def write_per_person(workdir, rows: Sequence[dict]) -> pathlib.Path:
  return atomic_write_text(pathlib.Path(workdir) / PER_PERSON, csv_text(rows, PER_PERSON_FIELDS))


def per_person_rows(method, target, box, names, res, uni) -> list[dict]:
  """per_person.csv rows from metrics.Protection of the unseen (res) and training (uni) photos."""
  rows = []
  for i, name in enumerate(names):
    rows.append({"method": method, "target": target, "box": box, "person": name,
                 "pairs": int(res.person_pairs[i]), "misses@1": int(res.person_misses[1][i]),
                 "train_pairs": int(uni.person_pairs[i]) if uni is not None else 0,
                 "train_misses@1": int(uni.person_misses[1][i]) if uni is not None else 0})
  return rows


def read_per_person(path) -> tuple[dict[tuple[str, str], Counts], dict[str, str], list[str]]:
  """((method, target) -> Counts, target -> box, people) from a per_person.csv."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  people = list(dict.fromkeys(r["person"] for r in rows))
  index = {p: i for i, p in enumerate(people)}
  columns = ("pairs", "misses@1", "train_pairs", "train_misses@1")
  arrays, boxes = {}, {}
  for r in rows:
    key = (r["method"], r["target"])
    if key not in arrays:
      arrays[key] = np.zeros((len(columns), len(people)))
    arrays[key][:, index[r["person"]]] = [float(r[c]) for c in columns]
    boxes[r["target"]] = r["box"]
  return {key: Counts(*a) for key, a in arrays.items()}, boxes, people


def black_box_targets(boxes: dict[str, str]) -> list[str]:
  return [t for t, b in boxes.items() if b == "black-box"]


def stacked(counts: dict[tuple[str, str], Counts], method: str, targets, field: str) -> np.ndarray:
  """(T, P): one Counts field of `method` for each target."""
  return np.stack([getattr(counts[(method, t)], field) for t in targets])


def _over_people(statistic, people: int, resamples: int, level: float, seed: int):
  """(value, lo, hi) of statistic(weights (R, P)) -> (R,) on all people and on resamples."""
  value = float(statistic(np.ones((1, people)))[0])
  draws = np.random.default_rng(seed).multinomial(people, np.full(people, 1.0 / people),
                                                  size=resamples)
  # A draw holding no pair of some target has no rate there; such draws are left out.
  values = statistic(draws)
  values = values[np.isfinite(values)]
  if not len(values):
    return value, float("nan"), float("nan")
  tail = 100 * (1 - level) / 2
  lo, hi = np.percentile(values, [tail, 100 - tail])
  return value, float(lo), float(hi)


def _mean_rate(weights, misses, pairs):
  """(R,) mean over targets of the pooled rate on each weighting of the people."""
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.mean((weights @ misses.T) / (weights @ pairs.T), axis=-1)


def _counts(*arrays):
  arrays = [np.atleast_2d(np.asarray(x, np.float64)) for x in arrays]
  if len({a.shape for a in arrays}) != 1:
    raise ValueError(f"the count arrays must have one (T, P) shape, got "
                     f"{[a.shape for a in arrays]}")
  return arrays


def difference_ci(misses_a, pairs_a, misses_b, pairs_b, *, resamples: int = bootstrap.RESAMPLES,
                  level: float = bootstrap.LEVEL, seed: int = 0) -> tuple[float, float, float]:
  """(difference, lo, hi): mean over targets of pooled rate a minus pooled rate b.

  Each argument is (T, P): T targets, P people (the same people in all four).
  Each resample draws P people with replacement, once for every target and both sides.
  """
  ma, pa, mb, pb = _counts(misses_a, pairs_a, misses_b, pairs_b)
  return _over_people(lambda w: _mean_rate(w, ma, pa) - _mean_rate(w, mb, pb), pa.shape[1],
                      resamples, level, seed)


def mean_ci(misses, pairs, *, resamples: int = bootstrap.RESAMPLES,
            level: float = bootstrap.LEVEL, seed: int = 0) -> tuple[float, float, float]:
  """(mean, lo, hi): the mean over targets of the pooled rate, (T, P) counts."""
  m, p = _counts(misses, pairs)
  return _over_people(lambda w: _mean_rate(w, m, p), p.shape[1], resamples, level, seed)


def black_box_means(counts: dict[tuple[str, str], Counts], boxes: dict[str, str]) -> list[dict]:
  """Per method: protect@1 of unseen and of training photos, each the mean over the
  black-box targets with its 95% CI by bootstrap over people."""
  targets = black_box_targets(boxes)
  rows = []
  for m in dict.fromkeys(m for m, _ in counts):
    if not targets or not all((m, t) in counts for t in targets):
      continue
    stack = lambda field, m=m: stacked(counts, m, targets, field)
    row = {"method": m, "targets": len(targets)}
    row["unseen"], row["unseen_lo"], row["unseen_hi"] = mean_ci(stack("misses"), stack("pairs"))
    if stack("train_pairs").sum(1).all():
      row["training"], row["training_lo"], row["training_hi"] = mean_ci(
          stack("train_misses"), stack("train_pairs"))
    rows.append(row)
  return rows


def verdict(lo: float, hi: float, higher: str, lower: str) -> str:
  if lo > 0:
    return f"{higher} higher"
  if hi < 0:
    return f"{lower} higher"
  return "no clear difference" if lo == lo else "-"


def comparisons(counts: dict[tuple[str, str], Counts], boxes: dict[str, str], *,
                is_control: Callable[[str], bool], claims=CLAIMS) -> list[dict]:
  """Rows over the black-box targets: each claim whose two methods were both evaluated, then
  training vs unseen photos for each universal learned method (controls left out)."""
  targets = black_box_targets(boxes)
  methods = list(dict.fromkeys(m for m, _ in counts))
  rows = []
  stack = lambda method, field: stacked(counts, method, targets, field)

  for a, b in claims:
    if a in methods and b in methods and targets:
      d, lo, hi = difference_ci(stack(a, "misses"), stack(a, "pairs"),
                                stack(b, "misses"), stack(b, "pairs"))
      rows.append({"comparison": f"{a} - {b}", "photos": "unseen", "targets": len(targets),
                   "difference": d, "lo": lo, "hi": hi, "verdict": verdict(lo, hi, a, b)})
  for m in methods:
    if not is_control(m) and targets and all(counts[(m, t)].train_pairs.sum() > 0 for t in targets):
      d, lo, hi = difference_ci(stack(m, "train_misses"), stack(m, "train_pairs"),
                                stack(m, "misses"), stack(m, "pairs"))
      rows.append({"comparison": f"{m}: training - unseen", "photos": "both",
                   "targets": len(targets), "difference": d, "lo": lo, "hi": hi,
                   "verdict": verdict(lo, hi, "training", "unseen")})
  return rows


def between_points(a: tuple[dict, dict, list], b: tuple[dict, dict, list], names: tuple[str, str],
                   *, is_control: Callable[[str], bool]) -> list[dict]:
  """Rows `method: name_a - name_b` for each learned method both points evaluated, over the
  black-box targets of both; [] unless the points hold the same people.

  a, b: read_per_person() of two points, e.g. two update rules at one eps; names: theirs.
  """
  (counts_a, boxes_a, people_a), (counts_b, boxes_b, people_b) = a, b
  if people_a != people_b:
    return []
  targets = [t for t in black_box_targets(boxes_a) if boxes_b.get(t) == "black-box"]
  methods = [m for m in dict.fromkeys(m for m, _ in counts_a)
             if not is_control(m) and all((m, t) in counts_a and (m, t) in counts_b
                                          for t in targets)]
  rows = []
  for m in methods if targets else ():
    d, lo, hi = difference_ci(*(stacked(c, m, targets, f)
                                for c in (counts_a, counts_b) for f in ("misses", "pairs")))
    rows.append({"comparison": f"{m}: {names[0]} - {names[1]}", "photos": "unseen",
                 "targets": len(targets), "difference": d, "lo": lo, "hi": hi,
                 "verdict": verdict(lo, hi, *names)})
  return rows
