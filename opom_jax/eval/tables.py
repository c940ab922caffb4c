"""Results as files a person reads: CSV, Markdown and JSON tables."""
from __future__ import annotations

import csv
import json
import pathlib

def write_results(workdir, rows: list[dict], fields: list[str]) -> str:
  workdir = pathlib.Path(workdir)
  with open(workdir / "results.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
      w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
  table = markdown_table(rows, fields)
  (workdir / "results.md").write_text(table + "\n")
  (workdir / "results.json").write_text(json.dumps(rows, indent=1))
  return table


def markdown_table(rows: list[dict], fields: list[str]) -> str:
  """Floats to three decimals; a missing cell is '-'."""
  lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
  for r in rows:
    cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in fields]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
