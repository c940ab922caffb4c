"""The two ONNX MobileFaceNets of the zoo: weights file, preprocessing, loader.

foamliu's MobileFaceNet (fp32, 128-d) and InsightFace's w600k_mbf (int8,
512-d), imported by `onnx_import` and wrapped in the zoo contract
(models/base.py): canonical (N, 112, 112, 3) RGB 0..255 in, raw embedding out.
The preprocessing works on numpy or jax arrays alike, so the onnxruntime
targets share it.
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from opom_jax import paths
from opom_jax.models import base
from opom_jax.models.importers import onnx_import

FOAMLIU_FILE = "foamliu_mobilefacenet.onnx"
W600K_FILE = "insightface_w600k_mbf_int8.onnx"

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


def foamliu_preprocess(x):
  """x/255 then ImageNet mean/std (foamliu's transforms), NCHW."""
  x = (x.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
  return x.transpose(0, 3, 1, 2)


def w600k_preprocess(x):
  """(x - 127.5) / 127.5 (InsightFace), NCHW."""
  x = (x.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)
  return x.transpose(0, 3, 1, 2)


def _zoo_model(filename, preprocess, path, model_root, dequantize=True):
  path = path or paths.model_file(filename, model_root)
  params, apply_graph = onnx_import.load_onnx(path, dequantize=dequantize)

  def apply(params, x, *, dropout_rate: float = 0.0, rng=None):
    x = jnp.asarray(x, jnp.float32)
    base.check_canonical(x, filename)
    return apply_graph(params, preprocess(x), dropout_rate=dropout_rate, rng=rng)

  return params, apply


def load_foamliu(path: str | os.PathLike | None = None, model_root=None):
  """foamliu MobileFaceNet (128-d), zoo contract: NHWC RGB 0..255 in, raw embedding out."""
  return _zoo_model(FOAMLIU_FILE, foamliu_preprocess, path, model_root)


def load_w600k(path: str | os.PathLike | None = None, model_root=None,
               dequantize: bool = True):
  """InsightFace w600k_mbf (512-d), weights dequantised to float once here."""
  return _zoo_model(W600K_FILE, w600k_preprocess, path, model_root, dequantize)
