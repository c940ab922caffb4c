"""The leave-one-out tables and chart: per target, mean and minimum over targets, per setting."""
from __future__ import annotations

import pathlib

import numpy as np

from opom_jax.eval.tables import csv_text, markdown_table
from opom_jax.files import atomic_write, atomic_write_text

# Columns taken from evaluate's row of a method on the target.
EVALUATED = ["protect@1", "protect@1_lo", "protect@1_hi", "protect@5", "protect@10",
             "train_protect@1", "verif_reject", "psnr", "ssim"]
FIELDS = ["setting", "method", "target", "ensemble", *EVALUATED[:6], "clean@1",
          *EVALUATED[6:], "sec_per_person"]
# A bootstrap interval is one target's: it has no mean or minimum over targets.
SUMMARISED = [f for f in FIELDS[4:] if not f.endswith(("_lo", "_hi"))]
ABLATION_FIELDS = ["setting", "method", "targets", "mean protect@1", "min protect@1",
                   "mean train_protect@1", "train - unseen", "psnr", "ssim", "sec_per_person"]

ABOUT = """\
Each target's masks are learned by an ensemble of the other models of the pool (any
model sharing the target's weights left out) and evaluated on the target alone, through
its own runtime where it has one (else its JAX import, `jax:`). protect@k: the share of
(protected unseen photo, another clean photo of the person) pairs in which the target does
not rank the clean photo within the top k among it and the distractors; _lo, _hi: its 95 %
bootstrap interval over people; train_protect@1: protected training photos as the probes;
clean@1: unprotected probes; psnr, ssim: of the protected unseen photos; sec_per_person:
learning the masks, per person, as timed when they were learned. `mean`, `min`: over targets."""


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
  groups: dict[tuple[str, str], list[dict]] = {}
  for r in rows:
    groups.setdefault((r["setting"], r["method"]), []).append(r)
  return groups


def _over_targets(rows: list[dict], field: str, reduce) -> float | None:
  values = [r[field] for r in rows if r.get(field) is not None]
  return float(reduce(values)) if values else None


def with_summary(rows: list[dict]) -> list[dict]:
  """Per (setting, method): its rows, one per target, then their mean and their minimum."""
  out = []
  for (setting, method), group in _groups(rows).items():
    out += group
    for name, reduce in (("mean", np.mean), ("min", np.min)):
      out.append({"setting": setting, "method": method, "target": name, "ensemble": "-",
                  **{f: _over_targets(group, f, reduce) for f in SUMMARISED}})
  return out


def ablation(rows: list[dict]) -> list[dict]:
  """One row per (setting, method): protection over targets, the unseen-photo gap, quality, cost."""
  out = []
  for (setting, method), group in _groups(rows).items():
    mean = {f: _over_targets(group, f, np.mean) for f in SUMMARISED}
    out.append({"setting": setting, "method": method, "targets": len(group),
                "mean protect@1": mean["protect@1"],
                "min protect@1": _over_targets(group, "protect@1", np.min),
                "mean train_protect@1": mean["train_protect@1"],
                "train - unseen": mean["train_protect@1"] - mean["protect@1"],
                "psnr": mean["psnr"], "ssim": mean["ssim"], "sec_per_person": mean["sec_per_person"]})
  return out


def _column(by_target: dict[str, dict], targets: list[str], field: str) -> np.ndarray:
  """The field of each target's row; nan where a target has no value."""
  return np.array([np.nan if by_target.get(t, {}).get(field) is None else by_target[t][field]
                   for t in targets], float)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # headless: runs write files, never open windows
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, ax, path) -> pathlib.Path:
  """The legend beside the axes, then the PNG written atomically."""
  ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
  fig.tight_layout()
  try:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
  finally:
    _pyplot().close(fig)


def chart(rows: list[dict], path) -> pathlib.Path:
  """protect@1 per target, one bar per setting (its CI as a line), and training photos as dots."""
  plt = _pyplot()

  summary = with_summary(rows)
  targets = list(dict.fromkeys(r["target"] for r in summary))
  groups = list(_groups(rows))
  several_methods = len({m for _, m in groups}) > 1
  fig, ax = plt.subplots(figsize=(2.5 + 0.35 * len(targets) * max(len(groups), 2), 3.8))
  width = 0.8 / len(groups)
  for i, (setting, method) in enumerate(groups):
    by_target = {r["target"]: r for r in summary if (r["setting"], r["method"]) == (setting, method)}
    xs = np.arange(len(targets)) + (i - (len(groups) - 1) / 2) * width
    label = f"{setting}:{method}" if several_methods else setting
    ax.bar(xs, _column(by_target, targets, "protect@1"), width, color=f"C{i}",
           label=f"{label} (unseen photos)")
    ax.vlines(xs, _column(by_target, targets, "protect@1_lo"),
              _column(by_target, targets, "protect@1_hi"), color="k", linewidth=0.8)
    ax.scatter(xs, _column(by_target, targets, "train_protect@1"), marker="D", s=14,
               color="k", zorder=3, label="training photos" if i == 0 else None)
  ax.axvline(len(targets) - 2.5, color="grey", linewidth=0.8, linestyle=":")  # targets | mean, min
  ax.set_xticks(np.arange(len(targets)), targets, rotation=25, ha="right", fontsize=8)
  ax.set_ylabel("protect@1 (leave-one-out)")
  ax.set_ylim(0, 1)
  return _save(fig, ax, path)


def ablation_chart(rows: list[dict], path) -> pathlib.Path:
  """Per setting: mean and minimum protect@1 over targets, and the training photos' mean."""
  plt = _pyplot()

  table = ablation(rows)
  several_methods = len({r["method"] for r in table}) > 1
  labels = [(f"{r['setting']}:{r['method']}" if several_methods else r["setting"]).replace("__", " + ")
            for r in table]
  ys = np.arange(len(table))[::-1]
  fig, ax = plt.subplots(figsize=(6.5 + 0.06 * max(map(len, labels)), 1.4 + 0.32 * len(table)))
  ax.barh(ys + 0.2, [r["mean protect@1"] for r in table], 0.4, color="C0", label="mean, unseen photos")
  ax.barh(ys - 0.2, [r["min protect@1"] for r in table], 0.4, color="C1", label="min, unseen photos")
  ax.scatter([r["mean train_protect@1"] for r in table], ys + 0.2, marker="D", s=14, color="k",
             zorder=3, label="mean, training photos")
  base = table[0]["mean protect@1"]
  ax.axvline(base, color="C0", linewidth=0.8, linestyle=":")  # the first setting's mean
  ax.set_yticks(ys, labels, fontsize=8)
  ax.set_xlim(0, 1)
  ax.set_xlabel(f"protect@1 over {table[0]['targets']} black-box targets")
  return _save(fig, ax, path)


def _present(rows: list[dict]) -> list[dict]:
  """Rows without their missing values, which the tables show as '-'."""
  return [{k: v for k, v in r.items() if v is not None} for r in rows]


def write(workdir, rows: list[dict]) -> str:
  """transfer.md / transfer.csv (per target, mean, min), ablation.csv and .png, transfer.png."""
  workdir = pathlib.Path(workdir)
  summary, settings = _present(with_summary(rows)), _present(ablation(rows))
  atomic_write_text(workdir / "transfer.csv", csv_text(summary, FIELDS))
  atomic_write_text(workdir / "ablation.csv", csv_text(settings, ABLATION_FIELDS))
  picture = chart(rows, workdir / "transfer.png")
  per_setting = ablation_chart(rows, workdir / "ablation.png")
  text = (f"# Leave-one-out transfer\n\n{ABOUT}\n\n## Per target\n\n"
          f"{markdown_table(summary, FIELDS)}\n\n## Per setting\n\n"
          f"{markdown_table(settings, ABLATION_FIELDS)}\n\n![per setting]({per_setting.name})\n\n"
          f"![protect@1 per target]({picture.name})\n")
  atomic_write_text(workdir / "transfer.md", text)
  return text
