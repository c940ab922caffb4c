"""Committed reports bundled from finished sweeps: tables, figures, never face images."""
import csv
import os
import pathlib
import subprocess
import sys

import pytest

from opom_jax.errors import UserError
from opom_jax.eval import report_bundle

REPO = pathlib.Path(__file__).resolve().parents[1]
FIELDS = ["point", "dataset", "method", "target", "box", "protect@1", "train_protect@1",
          "verif_reject", "psnr", "ssim"]


def _sweep(root: pathlib.Path, name: str) -> pathlib.Path:
  """A finished sweep's files: two black-box targets and one white-box per method."""
  work = root / name
  (work / "figures").mkdir(parents=True)
  rows = []
  for method, values, train in (("clean", (0.1, 0.3, 0.0), (0.1, 0.3)),
                                ("convex_hull", (0.6, 0.8, 0.99), (0.7, 0.9)),
                                ("pgd_per_image", (0.9, 0.7, 1.0), None)):
    for (target, box), p1, i in zip((("w600k_mbf", "black-box"), ("y1_mbf", "black-box"),
                                     ("jax:foamliu_mbf", "white-box")), values, range(3)):
      rows.append({"point": "eps=8.0", "dataset": "lfw-deepfunneled", "method": method,
                   "target": target, "box": box, "protect@1": p1,
                   "train_protect@1": "" if train is None else train[min(i, 1)],
                   "verif_reject": p1 / 2, "psnr": 31.5, "ssim": 0.91234})
  with open(work / "results.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  (work / "comparisons.csv").write_text("point,comparison\neps=8.0,convex_hull - clean\n")
  (work / "black_box.csv").write_text("point,method,unseen\neps=8.0,convex_hull,0.7\n")
  (work / "figures" / "lfw_protection_vs_eps.png").write_bytes(b"\x89PNG eps")
  (work / "figures" / "lfw_examples.png").write_bytes(b"\x89PNG faces")
  (work / "figures" / "old_point_per_person.png").write_bytes(b"\x89PNG stale")  # not shown
  (work / "report.md").write_text(
      "# Sweep report\n\n## lfw-deepfunneled\n\n![eps](figures/lfw_protection_vs_eps.png)\n\n"
      "Example faces of the point `eps=8.0`:\n\n![faces](figures/lfw_examples.png)\n")
  return work


def test_bundle_summarises_black_box_targets_and_leaves_faces_out(tmp_path):
  sweep = _sweep(tmp_path, "lfw")
  out = tmp_path / "reports" / "lfw"
  readme = report_bundle.bundle([sweep], out, "# LFW\n\nWhat was run.\n").read_text()
  assert readme.startswith("# LFW\n\nWhat was run.\n")
  summary = {r["method"]: r for r in report_bundle.black_box_summary(
      list(csv.DictReader(open(sweep / "results.csv"))))}
  hull = summary["convex_hull"]
  assert hull["black-box targets"] == 2                      # the white-box row is left out
  assert hull["mean protect@1"] == pytest.approx(0.7)
  assert (hull["min"], hull["max"]) == (0.6, 0.8)
  assert hull["mean train_protect@1"] == pytest.approx(0.8)
  assert summary["pgd_per_image"]["mean train_protect@1"] == "-"   # per-photo: none
  assert "| eps=8.0 | convex_hull | 2 | 0.700 | 0.600 | 0.800 | 0.800 | 0.350 |" in readme
  # Figures are copied and linked under the sweep's name; face grids never.
  assert (out / "figures" / "lfw_lfw_protection_vs_eps.png").read_bytes() == b"\x89PNG eps"
  assert "(figures/lfw_lfw_protection_vs_eps.png)" in readme
  assert not list(out.rglob("*examples*")) and "examples" not in readme
  assert [p.name for p in (out / "figures").iterdir()] == ["lfw_lfw_protection_vs_eps.png"]
  assert (out / "results_lfw.csv").read_text() == (sweep / "results.csv").read_text()
  assert (out / "comparisons_lfw.csv").exists() and (out / "black_box_lfw.csv").exists()


def test_an_unfinished_sweep_is_named(tmp_path):
  (tmp_path / "half").mkdir()
  with pytest.raises(UserError, match=r"half is not a finished sweep: .*report.md"):
    report_bundle.bundle([tmp_path / "half"], tmp_path / "out", "# x")


def test_the_launcher_needs_the_hand_written_part(tmp_path):
  sweep = _sweep(tmp_path, "lfw")
  out = tmp_path / "out"
  run = lambda: subprocess.run(
      [sys.executable, "-m", "experiments.report", f"--sweeps={sweep}", f"--out={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  missing = run()
  assert missing.returncode == 1 and "about.md is missing" in missing.stderr
  out.mkdir()
  (out / "about.md").write_text("# About\n")
  done = run()
  assert done.returncode == 0, done.stderr
  assert (out / "README.md").read_text().startswith("# About\n")
