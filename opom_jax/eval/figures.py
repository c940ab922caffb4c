"""Pictures of a run: protection bars, its spread over people, and masks on faces."""
from __future__ import annotations

import pathlib

import matplotlib
matplotlib.use("Agg")  # headless: runs write files, never open windows
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from opom_jax.files import atomic_write


def _save(fig, path, dpi: int) -> pathlib.Path:
  """Writes the figure as PNG atomically and closes it."""
  try:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
  finally:
    plt.close(fig)


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
  return _save(fig, path, dpi=120)


def per_person_protection(per_person: dict[tuple[str, str], np.ndarray], path) -> pathlib.Path:
  """Protection@1 of each person: a box and the people as points, per method and target.

  per_person: (method, target) -> (P,) protection per person (nan: not measured).
  """
  targets = list(dict.fromkeys(t for _, t in per_person))
  methods = list(dict.fromkeys(m for m, _ in per_person))
  fig, axes = plt.subplots(1, len(targets), figsize=(1.0 + 0.7 * len(methods) * len(targets), 3.6),
                           squeeze=False, sharey=True)
  jitter = np.random.default_rng(0)   # fixed: the same data draws the same picture
  for ax, t in zip(axes[0], targets):
    values = [per_person.get((m, t), np.array([np.nan])) for m in methods]
    values = [v[np.isfinite(v)] for v in values]
    ax.boxplot(values, positions=np.arange(len(methods)), widths=0.6, showfliers=False)
    for i, v in enumerate(values):
      ax.scatter(i + jitter.uniform(-0.18, 0.18, len(v)), v, s=8, alpha=0.6, color=f"C{i}")
    ax.set_xticks(np.arange(len(methods)), methods, rotation=35, ha="right", fontsize=7)
    ax.set_title(t, fontsize=8)
    ax.set_ylim(-0.03, 1.03)
  axes[0, 0].set_ylabel("protection@1 per person")
  fig.tight_layout()
  return _save(fig, path, dpi=120)


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
  return _save(fig, path, dpi=100)
