"""Protecting a user's own photo folder end to end, with a bad file among the photos."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_protect_folder_changes_only_faces_and_reports_bad_files(tmp_path, lfw_root):
  photos = tmp_path / "me"
  photos.mkdir()
  originals = sorted((lfw_root / "Angelina_Jolie").iterdir())[:3]
  for p in originals:
    (photos / p.name).symlink_to(p)
  (photos / "broken.jpg").write_bytes(b"not a jpeg")
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.protect", f"--photos={photos}", f"--output={out}",
       "--iters=4", "--nter=1"], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((out / "report.json").read_text())
  assert [os.path.basename(s["path"]) for s in report["skipped"]] == ["broken.jpg"]
  assert report["skipped"][0]["reason"] == "unreadable image"
  assert len(report["protected"]) == 3
  mask = np.load(out / "mask.npy")
  assert mask.shape == (112, 112, 3) and np.abs(mask).max() <= 8 + 1e-5
  for p in originals:
    clean = np.asarray(Image.open(p).convert("RGB"), np.int16)
    protected = np.asarray(Image.open(out / (p.stem + ".png")), np.int16)
    diff = np.abs(protected - clean)
    assert protected.shape == clean.shape
    assert diff.max() <= 9  # the budget, plus rounding of the warp back
    changed = diff.max(axis=-1) > 0
    assert changed.mean() > 0.05  # the face region carries the mask
    assert not changed[:5].any() and not changed[-5:].any()  # 250x250 LFW: borders are untouched
