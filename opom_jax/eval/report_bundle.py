"""A committed report (reports/<name>/) from one or more finished sweeps.

Each sweep's workdir holds results.csv, comparisons.csv, report.md and
figures/ (run.sweep). The bundle copies the tables and figures beside a
README.md that starts with a hand-written part (what was run, the exact
commands, what it confirms or refutes) and goes on with a black-box summary
per sweep and the sweep's own report. Face images never leave the workdir:
the example grids show photos of real people, derivatives of the data sets,
which are not committed (the workdir's report.md still shows them).
"""
from __future__ import annotations

import csv
import pathlib
import re
import shutil
import statistics

from opom_jax.errors import UserError
from opom_jax.eval.tables import markdown_table
from opom_jax.files import atomic_write_text

_FACES = "_examples.png"
SUMMARY_FIELDS = ["point", "method", "black-box targets", "mean protect@1", "min", "max",
                  "mean train_protect@1", "mean verif_reject", "psnr", "ssim"]


def _number(row: dict, key: str) -> float:
  value = row.get(key, "")
  return float(value) if value not in ("", "nan", None) else float("nan")


def black_box_summary(rows: list[dict]) -> list[dict]:
  """Per point and learned or control method: protect@1 over the black-box targets."""
  summary = []
  for point in dict.fromkeys(r["point"] for r in rows):
    at_point = [r for r in rows if r["point"] == point and r["box"] == "black-box"]
    for method in dict.fromkeys(r["method"] for r in at_point):
      bb = [r for r in at_point if r["method"] == method]
      p1 = [_number(r, "protect@1") for r in bb]
      train = [_number(r, "train_protect@1") for r in bb]
      summary.append({
          "point": point, "method": method, "black-box targets": len(bb),
          "mean protect@1": statistics.mean(p1), "min": min(p1), "max": max(p1),
          "mean train_protect@1": (statistics.mean(train) if all(t == t for t in train)
                                   else "-"),
          "mean verif_reject": statistics.mean(_number(r, "verif_reject") for r in bb),
          "psnr": _number(bb[0], "psnr"), "ssim": f"{_number(bb[0], 'ssim'):.4f}"})
  return summary


def _sweep_files(sweep: pathlib.Path) -> dict[str, pathlib.Path]:
  needed = {"results": sweep / "results.csv", "report": sweep / "report.md"}
  missing = [str(p) for p in needed.values() if not p.exists()]
  if missing:
    raise UserError(f"{sweep} is not a finished sweep: {', '.join(missing)} missing (run "
                    "python -m experiments.sweep with the same flags until it finishes)")
  return needed


def bundle(sweeps: list[pathlib.Path], out: pathlib.Path, about: str) -> pathlib.Path:
  """out/README.md (about + per sweep: summary and report) with the sweeps' tables and
  figures copied into out; returns the README's path."""
  out = pathlib.Path(out)
  (out / "figures").mkdir(parents=True, exist_ok=True)
  parts = [about.rstrip(), ""]
  for sweep in map(pathlib.Path, sweeps):
    files = _sweep_files(sweep)
    name = sweep.name
    shutil.copyfile(files["results"], out / f"results_{name}.csv")
    for table in ("comparisons", "black_box"):
      if (sweep / f"{table}.csv").exists():
        shutil.copyfile(sweep / f"{table}.csv", out / f"{table}_{name}.csv")
    report = files["report"].read_text()
    # Only the figures the report shows: a figures/ folder may hold a renamed point's old ones.
    for figure in dict.fromkeys(re.findall(r"\(figures/([^)]+)\)", report)):
      if not figure.endswith(_FACES):
        shutil.copyfile(sweep / "figures" / figure, out / "figures" / f"{name}_{figure}")
    with open(files["results"], newline="") as f:
      rows = list(csv.DictReader(f))
    report = re.sub(r"\(figures/([^)]+)\)", lambda m: f"(figures/{name}_{m.group(1)})", report)
    report = "\n".join(line for line in report.splitlines()
                       if _FACES not in line and not line.startswith("Example faces"))
    report = report.replace("# Sweep report", f"### Every row of `{name}` "
                            f"(results_{name}.csv)", 1)
    report = re.sub(r"^## ", "#### ", report, flags=re.M)
    parts += [f"## Sweep `{name}`", "",
              "Black-box summary: per point and method, protect@1 over the black-box targets "
              "(every zoo model that shares no weights with the surrogate); the per-target rows "
              "with 95% bootstrap intervals follow.", "",
              markdown_table(black_box_summary(rows), SUMMARY_FIELDS), "", report, ""]
  return atomic_write_text(out / "README.md", "\n".join(parts) + "\n")
