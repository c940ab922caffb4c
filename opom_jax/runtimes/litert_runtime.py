"""A .tflite face-recognition model run by LiteRT, used as a black box.

The interpreter is the reference the JAX import (models/importers/
tflite_import.py) is checked against, and a target model for transfer evaluation. It is never
differentiated.
"""
from __future__ import annotations

import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from opom_jax import paths
from opom_jax.models import base
from opom_jax.models.networks import y1_mobilefacenet


class LiteRtTarget:
  """embed(uint8 (N, 112, 112, 3) RGB) -> (N, d) float32, L2-normalised.

  The graph is fed float32 0..255 NHWC RGB, one image per invoke (the export
  fixes the batch at 1; resizing the input is not reliable across exports).
  """

  def __init__(self, model_path: str | os.PathLike, name: str | None = None,
               num_threads: int | None = None):
    self.name = name or os.path.splitext(os.path.basename(model_path))[0]
    self.model_path = str(model_path)
    self._interp = Interpreter(model_path=self.model_path,
                               num_threads=num_threads)
    self._interp.allocate_tensors()
    (inp,) = self._interp.get_input_details()
    (out,) = self._interp.get_output_details()
    if inp["dtype"] != np.float32:
      raise ValueError(f"{self.model_path}: expected a float32 input, "
                       f"got {inp['dtype']}")
    self._in_index, self._out_index = inp["index"], out["index"]
    self.input_shape = tuple(int(d) for d in inp["shape"])
    self.emb_dim = int(out["shape"][-1])

  def embed(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or \
        images.shape[1:] != self.input_shape[1:]:
      raise ValueError(
          f"{self.name}: embed expects uint8 (N, {self.input_shape[1]}, "
          f"{self.input_shape[2]}, {self.input_shape[3]}) images, got "
          f"{images.dtype} {images.shape}")
    embs = np.empty((len(images), self.emb_dim), np.float32)
    for i, img in enumerate(images):
      self._interp.set_tensor(self._in_index,
                              img[None].astype(np.float32))
      self._interp.invoke()
      embs[i] = self._interp.get_tensor(self._out_index).reshape(-1)
    return base.l2_normalize_np(embs)


def y1_runtime(model_root=None, num_threads: int | None = None) -> LiteRtTarget:
  """InsightFace MobileFaceNet y1 (128-d) run by LiteRT."""
  return LiteRtTarget(paths.model_file(y1_mobilefacenet.Y1_FILE, model_root),
                      name="y1-litert", num_threads=num_threads)
