"""A picture of protected full photos beside their originals."""
from __future__ import annotations

import pathlib

import matplotlib
matplotlib.use("Agg")  # headless: runs write files, never open windows
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from opom_jax.files import atomic_write


def before_after(originals: list[np.ndarray], protected: dict[str, list[np.ndarray]],
                 path) -> pathlib.Path:
  """Rows: photos; columns: the original, then each method's protected photo (full size)."""
  methods = list(protected)
  cols = 1 + len(methods)
  fig, axes = plt.subplots(len(originals), cols, figsize=(2.6 * cols, 2.8 * len(originals)),
                           squeeze=False)
  for r, original in enumerate(originals):
    axes[r, 0].imshow(original)
    for c, m in enumerate(methods, start=1):
      axes[r, c].imshow(protected[m][r])
  for c, title in enumerate(["original"] + methods):
    axes[0, c].set_title(title, fontsize=8)
  for ax in axes.ravel():
    ax.axis("off")
  fig.tight_layout()
  try:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
  finally:
    plt.close(fig)
