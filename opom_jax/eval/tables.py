"""Results as files a person reads: CSV, Markdown and JSON tables."""
from __future__ import annotations

import csv
import io
import json
import pathlib

from opom_jax.files import atomic_write_text


def csv_text(rows: list[dict], fields: list[str]) -> str:
  """Floats to four decimals; keys not in fields are left out."""
  buffer = io.StringIO(newline="")
  w = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
  w.writeheader()
  for r in rows:
    w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
  return buffer.getvalue()


def write_results(workdir, rows: list[dict], fields: list[str]) -> str:
  workdir = pathlib.Path(workdir)
  atomic_write_text(workdir / "results.csv", csv_text(rows, fields))
  table = markdown_table(rows, fields)
  atomic_write_text(workdir / "results.md", table + "\n")
  atomic_write_text(workdir / "results.json", json.dumps(rows, indent=1))
  return table


def markdown_table(rows: list[dict], fields: list[str]) -> str:
  """Floats to three decimals; a missing cell is '-'."""
  lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
  for r in rows:
    cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in fields]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
