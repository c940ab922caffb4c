"""Paired comparisons: one bootstrap over people shared by both sides of a difference."""
import csv

import numpy as np
import pytest

from opom_jax.eval import bootstrap, paired
from opom_jax.eval.sweep_report import is_control, per_person_means, write_report

PAIRS = 90  # ordered pairs per person (10 photos)


def _people(n=30, seed=0):
  """Per-person misses of a method b spread from 10% to 90%, and a method a that misses
  4 more pairs for every person: a small difference, the same for everyone."""
  rng = np.random.default_rng(seed)
  b = np.round(rng.uniform(0.1, 0.9, n) * PAIRS)
  return b + 4, np.full(n, float(PAIRS)), b


def test_a_consistent_small_difference_is_found_that_separate_intervals_miss():
  a, pairs, b = _people()
  d, lo, hi = paired.difference_ci(a, pairs, b, pairs)
  assert d == pytest.approx(a.sum() / pairs.sum() - b.sum() / pairs.sum())
  assert 0 < lo <= d <= hi
  # Each method's own interval is wide (people differ a lot): they overlap.
  a_lo, a_hi = bootstrap.pooled_rate_ci(a, pairs)
  b_lo, b_hi = bootstrap.pooled_rate_ci(b, pairs)
  assert a_lo < b_hi and b_lo < a_hi
  assert paired.verdict(lo, hi, "a", "b") == "a higher"


def test_identical_sides_differ_by_exactly_zero_and_swapping_negates():
  a, pairs, b = _people()
  assert paired.difference_ci(b, pairs, b, pairs) == (0.0, 0.0, 0.0)
  d, lo, hi = paired.difference_ci(a, pairs, b, pairs)
  assert paired.difference_ci(b, pairs, a, pairs) == pytest.approx((-d, -hi, -lo))


def test_several_targets_average_their_pooled_rates():
  a1, pairs, b1 = _people(seed=1)
  a2, _, b2 = _people(seed=2)
  pairs2 = pairs.copy()
  pairs2[:5] = 0       # a target where five people have no pairs: they do not count there
  a2[:5] = b2[:5] = 0
  d, lo, hi = paired.difference_ci(np.stack([a1, b2]), np.stack([pairs, pairs2]),
                                   np.stack([b1, a2]), np.stack([pairs, pairs2]))
  by_hand = ((a1.sum() - b1.sum()) / pairs.sum() + (b2.sum() - a2.sum()) / pairs2.sum()) / 2
  assert d == pytest.approx(by_hand)
  assert d == pytest.approx(0, abs=1e-12)  # +4 and -4 pairs per person cancel
  assert lo <= d <= hi


def test_mismatched_shapes_are_refused():
  with pytest.raises(ValueError, match=r"\(T, P\)"):
    paired.difference_ci(np.ones(3), np.ones(3), np.ones(4), np.ones(4))


def _per_person_rows():
  """convex_hull misses 4 more pairs per person than class_center against the black-box
  target and 40 fewer against the white-box one; fi_uap is never evaluated."""
  a, pairs, b = _people()
  rows = []
  for method, target, box, misses, train in [
      ("clean", "w600k_mbf", "black-box", np.zeros_like(b), np.zeros_like(b)),
      ("class_center", "w600k_mbf", "black-box", b, b),
      ("convex_hull", "w600k_mbf", "black-box", a, a - 4),
      ("class_center", "jax:foamliu_mbf", "white-box", b, b),
      ("convex_hull", "jax:foamliu_mbf", "white-box", np.maximum(b - 40, 0), b),
      ("pgd_per_image", "w600k_mbf", "black-box", a + 2, None),
      ("pgd_per_image", "jax:foamliu_mbf", "white-box", a + 2, None)]:
    for i in range(len(b)):
      rows.append({"method": method, "target": target, "box": box, "person": f"p,{i}",
                   "pairs": int(pairs[i]), "misses@1": int(misses[i]),
                   "train_pairs": 0 if train is None else int(pairs[i]),
                   "train_misses@1": 0 if train is None else int(train[i])})
  return rows


def test_comparisons_use_black_box_targets_and_skip_missing_methods(tmp_path):
  path = paired.write_per_person(tmp_path, _per_person_rows())
  counts, boxes, people = paired.read_per_person(path)
  assert people[:2] == ["p,0", "p,1"] and boxes["w600k_mbf"] == "black-box"
  rows = {r["comparison"]: r for r in paired.comparisons(counts, boxes, is_control=is_control)}
  assert set(rows) == {"convex_hull - class_center", "pgd_per_image - convex_hull",
                       "class_center: training - unseen", "convex_hull: training - unseen"}
  a, pairs, b = _people()
  hull = rows["convex_hull - class_center"]
  assert hull["targets"] == 1 and hull["difference"] == pytest.approx(4 / PAIRS)
  assert hull["verdict"] == "convex_hull higher"
  assert rows["convex_hull: training - unseen"]["difference"] == pytest.approx(-4 / PAIRS)
  assert rows["convex_hull: training - unseen"]["verdict"] == "unseen higher"
  assert rows["class_center: training - unseen"]["verdict"] == "no clear difference"


def test_the_sweep_report_shows_and_writes_the_comparisons(tmp_path):
  per_person = {"p": paired.write_per_person(tmp_path / "p", _per_person_rows())}
  rows = [{"point": "p", "dataset": "att_faces", "surrogate": "foamliu_mbf", "target": t,
           "box": box, "eps": 8.0, "rule": "base", "method": m, "protect@1": 0.5,
           "protect@1_lo": 0.4, "protect@1_hi": 0.6}
          for m in ("clean", "class_center", "convex_hull")
          for t, box in (("w600k_mbf", "black-box"), ("jax:foamliu_mbf", "white-box"))]
  report = write_report(tmp_path, rows, spec="attack.eps=8", points=["p"], failed={},
                        examples={}, per_person=per_person).read_text()
  assert "Paired comparisons at `p`" in report
  assert "![per-person protection](figures/p_per_person.png)" in report
  assert (tmp_path / "figures" / "p_per_person.png").read_bytes()[:4] == b"\x89PNG"
  assert "| convex_hull - class_center | 1 | 0.044 |" in report
  a, pairs, b = _people()
  with open(tmp_path / "black_box.csv") as f:
    means = {r["method"]: r for r in csv.DictReader(f)}
  assert float(means["convex_hull"]["unseen"]) == pytest.approx(a.sum() / pairs.sum(), abs=1e-4)
  assert float(means["convex_hull"]["training"]) == pytest.approx((a - 4).sum() / pairs.sum(),
                                                                  abs=1e-4)
  assert float(means["convex_hull"]["unseen_lo"]) < float(means["convex_hull"]["unseen"])
  assert means["pgd_per_image"]["training"] == ""      # per-photo: no training photos
  assert f"| convex_hull | 1 | {a.sum() / pairs.sum():.3f} [" in report
  written = (tmp_path / "comparisons.csv").read_text().splitlines()
  assert written[0] == "point,dataset,comparison,photos,targets,difference,lo,hi,verdict"
  assert written[1].startswith("p,att_faces,convex_hull - class_center,unseen,1,0.0444,")


def test_points_of_one_eps_are_compared_on_the_same_people(tmp_path):
  """A transfer-rule point whose hull misses 4 more pairs per person than the base-rule point
  of the same eps; the eps-4 point has no partner."""
  base = _per_person_rows()
  better = [{**r, "misses@1": r["misses@1"] + 4} if r["method"] == "convex_hull" else r
            for r in base]
  per_person = {p: paired.write_per_person(tmp_path / p, rows)
                for p, rows in (("base8", base), ("transfer8", better), ("base4", base))}
  rows = [{"point": p, "dataset": "lfw-deepfunneled", "surrogate": "foamliu_mbf",
           "target": "w600k_mbf", "box": "black-box", "eps": eps, "rule": rule, "method": m,
           "protect@1": 0.5, "protect@1_lo": 0.4, "protect@1_hi": 0.6}
          for p, eps, rule in (("base8", 8.0, "base"), ("transfer8", 8.0, "transfer"),
                               ("base4", 4.0, "base"))
          for m in ("clean", "class_center", "convex_hull")]
  write_report(tmp_path, rows, spec="...", points=list(per_person), failed={}, examples={},
               per_person=per_person)
  with open(tmp_path / "comparisons.csv") as f:
    between = [r for r in csv.DictReader(f) if "rule=" in r["comparison"]]
  assert [(r["point"], r["comparison"], r["verdict"]) for r in between] == [
      ("transfer8", "class_center: rule=transfer - rule=base", "no clear difference"),
      ("transfer8", "convex_hull: rule=transfer - rule=base", "rule=transfer higher"),
      ("transfer8", "pgd_per_image: rule=transfer - rule=base", "no clear difference")]
  assert float(between[1]["difference"]) == pytest.approx(4 / PAIRS, abs=1e-4)


def test_each_persons_protection_is_averaged_over_black_box_targets(tmp_path):
  rows = [{"method": "convex_hull", "target": t, "box": box, "person": person, "pairs": pairs,
           "misses@1": misses, "train_pairs": 0, "train_misses@1": 0}
          for t, box, person, pairs, misses in (
              ("w600k_mbf", "black-box", "a", 10, 5), ("y1_mbf", "black-box", "a", 10, 10),
              ("jax:foamliu_mbf", "white-box", "a", 10, 0),
              ("w600k_mbf", "black-box", "b", 0, 0), ("y1_mbf", "black-box", "b", 0, 0),
              ("jax:foamliu_mbf", "white-box", "b", 0, 0))]
  counts, boxes, _ = paired.read_per_person(paired.write_per_person(tmp_path, rows))
  means = per_person_means(counts, boxes)
  assert means["convex_hull"][0] == pytest.approx(0.75)   # (0.5 + 1.0) / 2, white-box left out
  assert np.isnan(means["convex_hull"][1])                # no pairs anywhere
