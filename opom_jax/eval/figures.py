"""Pictures of a run: a protection bar chart and a grid of masks on faces."""
from __future__ import annotations

import pathlib

import matplotlib
matplotlib.use("Agg")  # headless: runs write files, never open windows
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np


def protection_chart(rows: list[dict], path) -> pathlib.Path:
  """Grouped bars of protection@1 per method, one group per target."""
  targets = list(dict.fromkeys(r["target"] for r in rows))
  methods = list(dict.fromkeys(r["method"] for r in rows))
  value = {(r["target"], r["method"]): r["protect@1"] for r in rows}
  fig, ax = plt.subplots(figsize=(3.0 + 1.4 * len(targets), 3.6))
  width = 0.8 / max(len(methods), 1)
  for i, m in enumerate(methods):
    xs = np.arange(len(targets)) + i * width
    ax.bar(xs, [value.get((t, m), np.nan) for t in targets], width, label=m)
  ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2, targets, rotation=15)
  ax.set_ylabel("protection@1")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return pathlib.Path(path)


def mask_grid(clean: np.ndarray, masks: dict[str, np.ndarray], eps: float, path) -> pathlib.Path:
  """Rows: one photo per person; columns: clean, then each method's protected photo and mask.

  clean: (P, 112, 112, 3) uint8, one photo per person; masks: method -> (P, 112, 112, 3).
  Masks are shown amplified from [-eps, eps] to [0, 255].
  """
  methods = list(masks)
  people = len(clean)
  fig, axes = plt.subplots(people, 1 + 2 * len(methods),
                           figsize=(1.2 * (1 + 2 * len(methods)), 1.3 * people), squeeze=False)
  for p in range(people):
    axes[p, 0].imshow(clean[p])
    for j, m in enumerate(methods):
      protected = np.clip(clean[p].astype(np.float32) + masks[m][p], 0, 255).astype(np.uint8)
      axes[p, 1 + 2 * j].imshow(protected)
      axes[p, 2 + 2 * j].imshow(((masks[m][p] + eps) / (2 * eps)).clip(0, 1))
      if p == 0:
        axes[p, 1 + 2 * j].set_title(m, fontsize=6)
        axes[p, 2 + 2 * j].set_title("mask", fontsize=6)
  axes[0, 0].set_title("clean", fontsize=6)
  for ax in axes.ravel():
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return pathlib.Path(path)
