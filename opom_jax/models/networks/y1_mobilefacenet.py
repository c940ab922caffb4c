"""InsightFace MobileFaceNet "model-y1-test2" (128-d, TFLite fp32) in the zoo.

Imported by `tflite_import`. The graph normalises its input itself
((x - 127.5) / 128, RGB NHWC), so the canonical batch goes in unchanged.
"""
from __future__ import annotations

import os

import jax.numpy as jnp

from opom_jax import paths
from opom_jax.models import base
from opom_jax.models.importers import tflite_import

Y1_FILE = "insightface_mobilefacenet_y1_fp32.tflite"


def load_y1(path: str | os.PathLike | None = None, model_root=None,
            dropout_ops=None):
  """-> (params, apply), the zoo contract (models/base.py).

  dropout_ops overrides the DFANet sites (see tflite_import.make_apply).
  """
  path = path or paths.model_file(Y1_FILE, model_root)
  params, apply_graph = tflite_import.load_tflite(path, dropout_ops)

  def apply(params, x, *, dropout_rate: float = 0.0, rng=None):
    x = jnp.asarray(x, jnp.float32)
    base.check_canonical(x, "y1")
    (emb,) = apply_graph(params, x, dropout_rate=dropout_rate, rng=rng)
    return emb

  return params, apply
