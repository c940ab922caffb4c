"""A sweep's report: Markdown tables of protect@1 with its CI, and PNG figures.

From the sweep's aggregate rows (opom_jax.run.sweep.write_results): per data
set a method x target table; protection vs eps per method with CI bands (when
eps varies); a surrogate x target heatmap of protect@1, the mean over the
learned methods (the clean and random controls left out); and example clean /
protected / mask faces, from celebrity data sets only: the other sets' people
are ordinary people, whose faces are never published.
"""
from __future__ import annotations

import collections
import pathlib
import re

import numpy as np

from opom_jax.eval import figures, paired
from opom_jax.eval.tables import csv_text, markdown_table
from opom_jax.files import atomic_write, atomic_write_text

CELEBRITY_DATASETS = ("lfw-deepfunneled", "celeba-subset")
FIGURES = "figures"
COMPARISON_COLUMNS = ["comparison", "targets", "difference", "95% CI", "verdict"]
# Columns that are metrics or say which row it is, not a setting of the point.
_NOT_SETTINGS = {"point", "dataset", "method", "target", "box", "protect@1", "protect@1_lo",
                 "protect@1_hi", "protect@5", "protect@10", "person_mean@1", "train_protect@1",
                 "verif_reject", "verif_reject_lo", "verif_reject_hi", "psnr", "ssim", "pairs"}


def is_celebrity(dataset: str) -> bool:
  return pathlib.PurePath(dataset).name in CELEBRITY_DATASETS


def is_control(method: str) -> bool:
  """The unprotected and random-noise rows evaluate adds beside the learned methods."""
  return method == "clean" or re.fullmatch(r"random_[0-9.e+-]+", method) is not None


def _control_name(method: str) -> str:
  """random_4 and random_8 are one method at two budgets: one line along eps."""
  return "random" if is_control(method) and method != "clean" else method


def _varying(rows: list[dict], exclude=()) -> list[str]:
  """The setting columns that take more than one value among the rows."""
  names = [k for k in rows[0] if k not in _NOT_SETTINGS and k not in exclude] if rows else []
  return [k for k in names if len({r[k] for r in rows}) > 1]


def _label(row: dict, keys: list[str]) -> str:
  return ", ".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                   for k in keys)


def _interval(row: dict, key: str) -> str:
  if key not in row:
    return "-"
  return f"{row[key]:.3f} [{row[key + '_lo']:.3f}, {row[key + '_hi']:.3f}]"


def _ci(row: dict) -> str:
  value, lo, hi = row["protect@1"], row["protect@1_lo"], row["protect@1_hi"]
  if np.isnan(lo):
    return f"{value:.3f}"
  return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def protection_table(rows: list[dict]) -> str:
  """Rows: (settings that vary, method); columns: targets; cells: protect@1 [95% CI].

  Points that differ only in their methods repeat the controls; the first is shown.
  """
  targets = list(dict.fromkeys(r["target"] for r in rows))
  varying = _varying(rows)
  lines = {}
  for r in rows:
    key = (_label(r, varying), r["method"])
    lines.setdefault(key, {"settings": key[0], "method": key[1]})
    lines[key].setdefault(r["target"], _ci(r))
  fields = (["settings"] if varying else []) + ["method", *targets]
  return markdown_table(list(lines.values()), fields)


def eps_figure(rows: list[dict], path) -> pathlib.Path | None:
  """protect@1 vs eps, one panel per target, one line per method (and other varying setting)
  with its 95% CI as a band; None unless eps takes two or more values."""
  if len({r["eps"] for r in rows}) < 2:
    return None
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  targets = list(dict.fromkeys(r["target"] for r in rows))
  others = _varying(rows, exclude=("eps",))
  fig, axes = plt.subplots(1, len(targets), figsize=(0.5 + 3.6 * len(targets), 3.4),
                           squeeze=False, sharey=True)
  for ax, target in zip(axes[0], targets):
    series = collections.defaultdict(dict)
    for r in rows:
      if r["target"] == target:
        name = _control_name(r["method"]) + (f" ({_label(r, others)})" if others else "")
        series[name].setdefault(r["eps"], r)
    for i, (name, by_eps) in enumerate(series.items()):
      eps = sorted(by_eps)
      value = [by_eps[e]["protect@1"] for e in eps]
      ax.plot(eps, value, marker="o", ms=3, color=f"C{i % 10}", label=name)
      ax.fill_between(eps, [by_eps[e]["protect@1_lo"] for e in eps],
                      [by_eps[e]["protect@1_hi"] for e in eps], color=f"C{i % 10}", alpha=0.2)
    box = next(r["box"] for r in rows if r["target"] == target)
    ax.set_title(f"{target} ({box})", fontsize=8)
    ax.set_xlabel("eps (0..255 pixel units)")
    ax.set_ylim(-0.02, 1.02)
  axes[0, 0].set_ylabel("protection@1 (95% CI)")
  axes[0, -1].legend(fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")
  fig.tight_layout()
  return _save(fig, path)


def surrogate_heatmap(rows: list[dict], path) -> pathlib.Path | None:
  """Mean protect@1 over the learned methods (and any other varying setting) per surrogate
  (rows) and target (columns); white-box cells are marked 'wb'. None without learned methods."""
  learned = [r for r in rows if not is_control(r["method"])]
  if not learned:
    return None
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  surrogates = list(dict.fromkeys(r["surrogate"] for r in learned))
  targets = list(dict.fromkeys(r["target"] for r in learned))
  cells = collections.defaultdict(list)
  white = set()
  for r in learned:
    cells[(r["surrogate"], r["target"])].append(r["protect@1"])
    if r["box"] == "white-box":
      white.add((r["surrogate"], r["target"]))
  grid = np.array([[np.mean(cells[(s, t)]) if cells[(s, t)] else np.nan for t in targets]
                   for s in surrogates])
  fig, ax = plt.subplots(figsize=(3.2 + 1.1 * len(targets), 2.0 + 0.45 * len(surrogates)))
  image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis", aspect="auto")
  for i, s in enumerate(surrogates):
    for j, t in enumerate(targets):
      if np.isfinite(grid[i, j]):
        mark = " wb" if (s, t) in white else ""
        ax.text(j, i, f"{grid[i, j]:.2f}{mark}", ha="center", va="center", fontsize=7,
                color="white" if grid[i, j] < 0.6 else "black")
  ax.set_xticks(np.arange(len(targets)), targets, rotation=30, ha="right", fontsize=7)
  ax.set_yticks(np.arange(len(surrogates)), surrogates, fontsize=7)
  ax.set_xlabel("target")
  ax.set_ylabel("surrogate(s)")
  ax.set_title("protect@1, mean over the learned methods", fontsize=8)
  fig.colorbar(image, ax=ax, label="protect@1")
  fig.tight_layout()
  return _save(fig, path)


def example_faces(examples_file, dataset: str, path) -> pathlib.Path:
  """clean / protected / mask faces of a point's first few people (examples.npz).

  Refuses (ValueError) a data set that is not a celebrity set.
  """
  if not is_celebrity(dataset):
    raise ValueError(f"{dataset} is not a celebrity data set; its faces are never shown")
  with np.load(examples_file, allow_pickle=False) as z:
    masks = dict(zip([str(m) for m in z["methods"]], z["masks"]))
    return figures.mask_grid(z["clean"], masks, float(z["eps"]), path)


def _save(fig, path) -> pathlib.Path:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  try:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
  finally:
    plt.close(fig)


def _image(path: pathlib.Path, workdir: pathlib.Path, alt: str) -> str:
  return f"![{alt}]({path.relative_to(workdir).as_posix()})"


def per_person_means(counts: dict, boxes: dict) -> dict[str, np.ndarray]:
  """method -> (P,) each person's protect@1 on unseen photos, the mean over the black-box
  targets (nan for a person with no pairs); {} without black-box targets."""
  targets = paired.black_box_targets(boxes)
  methods = [m for m in dict.fromkeys(m for m, _ in counts)
             if targets and all((m, t) in counts for t in targets)]
  means = {}
  for m in methods:
    misses = paired.stacked(counts, m, targets, "misses")
    pairs = paired.stacked(counts, m, targets, "pairs")
    measured = (pairs > 0).sum(0)   # targets where the person has pairs
    rates = np.where(pairs > 0, misses / np.maximum(pairs, 1), 0.0)
    means[m] = np.where(measured > 0, rates.sum(0) / np.maximum(measured, 1), np.nan)
  return means


def per_person_figure(counts: dict, boxes: dict, path) -> pathlib.Path | None:
  """per_person_means of a point as a box and the people as points, per method."""
  means = per_person_means(counts, boxes)
  if not means:
    return None
  return figures.per_person_protection(
      {(m, "mean over black-box targets"): v for m, v in means.items()}, path)


def _signed_interval(row: dict) -> str:
  return f"[{row['lo']:+.3f}, {row['hi']:+.3f}]"


def _between_points(rows: list[dict], loaded: dict[str, tuple]) -> list[dict]:
  """Each later point of an eps against the first point of that eps (e.g. update rules).

  loaded: point -> its read_per_person()."""
  first_of_eps, found = {}, []
  for point in dict.fromkeys(r["point"] for r in rows if r["point"] in loaded):
    row = next(r for r in rows if r["point"] == point)
    if row["eps"] not in first_of_eps:
      first_of_eps[row["eps"]] = (point, row)
      continue
    base_point, base_row = first_of_eps[row["eps"]]
    keys = _varying([row, base_row])
    names = (_label(row, keys), _label(base_row, keys))
    for r in paired.between_points(loaded[point], loaded[base_point], names,
                                   is_control=is_control):
      found.append({"point": point, **r, "95% CI": _signed_interval(r)})
  return found


def write_report(workdir, rows: list[dict], *, spec: str, points: list[str],
                 failed: dict[str, str], examples: dict[str, pathlib.Path],
                 per_person: dict[str, pathlib.Path] | None = None) -> pathlib.Path:
  """<workdir>/report.md with its figures in <workdir>/figures, and comparisons.csv.

  rows: the aggregate rows (numbers as floats); examples: point -> its examples.npz;
  per_person: point -> its per_person.csv, for paired comparisons of its methods.
  """
  per_person = per_person or {}
  compared, black_box = [], []
  workdir = pathlib.Path(workdir)
  out = workdir / FIGURES
  finished = list(dict.fromkeys(r["point"] for r in rows))
  text = ["# Sweep report", "",
          f"Grid `{spec}`: {len(points)} points, {len(points) - len(failed)} finished, "
          f"{len(failed)} failed. Every metric of every row: `results.csv`. protect@1 is the "
          "share of (protected probe, clean gallery) pairs the target does not match at rank 1; "
          "brackets: 95% CI by bootstrap over people.", ""]
  if failed:
    text += ["Failed points (traceback in `<point>/error.txt`):", ""]
    text += [f"- `{name}`: {error}" for name, error in failed.items()] + [""]
  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  for dataset in datasets:
    part = [r for r in rows if r["dataset"] == dataset]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)
    text += [f"## {dataset}", "", "protect@1 [95% CI], method x target:", "",
             protection_table(part), ""]
    eps = eps_figure(part, out / f"{slug}_protection_vs_eps.png")
    if eps:
      text += ["Protection vs eps (bands: 95% CI):", "",
               _image(eps, workdir, "protection vs eps"), ""]
    heat = surrogate_heatmap(part, out / f"{slug}_surrogate_target.png")
    if heat:
      text += ["protect@1 per surrogate and target, the mean over the learned methods (controls "
               "left out) and over every other swept setting; `wb`: white-box:", "",
               _image(heat, workdir, "surrogate x target"), ""]
    shown = next((p for p in finished if p in examples and any(
        r["point"] == p for r in part)), None)
    if is_celebrity(dataset) and shown:
      faces = example_faces(examples[shown], dataset, out / f"{slug}_examples.png")
      text += [f"Example faces of the point `{shown}`: clean, then per method the protected "
               "photo and its mask (amplified from [-eps, eps]):", "",
               _image(faces, workdir, "example faces"), ""]
    elif not is_celebrity(dataset):
      text += ["No example faces: the people of this data set are not public figures.", ""]
    loaded = {p: paired.read_per_person(per_person[p]) for p in finished
              if p in per_person and any(r["point"] == p for r in part)}
    for point, (counts, boxes, _) in loaded.items():
      spread = per_person_figure(
          counts, boxes, out / f"{re.sub(r'[^A-Za-z0-9_.=-]+', '_', point)}_per_person.png")
      if spread:
        text += [f"protect@1 per person at `{point}` (each person's mean over the black-box "
                 "targets):", "", _image(spread, workdir, "per-person protection"), ""]
      means = paired.black_box_means(counts, boxes)
      if means:
        for r in means:
          r["unseen photos"] = _interval(r, "unseen")
          r["training photos"] = _interval(r, "training")
        text += [f"Mean protect@1 over the black-box targets at `{point}`, with a 95% CI by "
                 "bootstrap over people:", "",
                 markdown_table(means, ["method", "targets", "unseen photos",
                                        "training photos"]), ""]
        black_box += [{"point": point, "dataset": dataset, **r} for r in means]
      point_rows = paired.comparisons(counts, boxes, is_control=is_control)
      if point_rows:
        for r in point_rows:
          r["95% CI"] = _signed_interval(r)
        text += [f"Paired comparisons at `{point}`: the difference in protect@1 (unseen photos, "
                 "or training minus unseen photos), averaged over the black-box targets, with a "
                 "95% CI from one bootstrap over people shared by both sides; a verdict names a "
                 "side only when the interval excludes 0:", "",
                 markdown_table(point_rows, COMPARISON_COLUMNS), ""]
        compared += [{"point": point, "dataset": dataset, **r} for r in point_rows]
    between = _between_points(part, loaded)
    if between:
      text += ["Paired comparisons between points of one eps (the same people; black-box "
               "targets of both; 95% CI by one bootstrap over people):", "",
               markdown_table(between, COMPARISON_COLUMNS), ""]
      compared += [{"dataset": dataset, **r} for r in between]
  if black_box:
    atomic_write_text(workdir / "black_box.csv", csv_text(
        black_box, ["point", "dataset", "method", "targets", "unseen", "unseen_lo", "unseen_hi",
                    "training", "training_lo", "training_hi"]))
  if compared:
    atomic_write_text(workdir / "comparisons.csv", csv_text(
        compared, ["point", "dataset", "comparison", "photos", "targets", "difference", "lo",
                   "hi", "verdict"]))
  return atomic_write_text(workdir / "report.md", "\n".join(text))

