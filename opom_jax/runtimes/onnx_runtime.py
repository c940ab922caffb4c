"""Black-box face-recognition targets run by onnxruntime (never differentiated).

    target = w600k_runtime()
    emb = target.embed(images)   # uint8 (N, 112, 112, 3) RGB -> (N, d) L2-normalised

``one_image_per_run``: the w600k int8 graph quantises activations dynamically
with one scale per ``session.run`` call, so a batch changes every image's
embedding (by up to 0.023 in the reference); like the reference it runs one
image per call by default. foamliu is fp32 and runs batched: its export fixes
the batch at 1, so the loaded ModelProto is edited in memory to a dynamic batch
(final ``Reshape [1, -1]`` -> ``[0, -1]``, as the official reference did;
identical for batch 1). faceplugin is fp32 with the same fixed-batch export and
runs batched the same way.

onnxruntime's telemetry (event logging, on by default on Windows builds) is
switched off before every session is created.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from opom_jax import paths
from opom_jax.models.networks import onnx_mobilefacenets
from opom_jax.models.networks import faceplugin_mobilefacenet

INTRA_OP_THREADS = 2
BATCH = 128   # photos per session.run of a batched model


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
  """Leading dim of inputs/outputs -> symbolic; Reshape targets [1, ...] -> [0, ...]."""
  g = model.graph
  init_by_name = {i.name: i for i in g.initializer}
  for v in list(g.input) + list(g.output):
    if v.name in init_by_name or not v.type.tensor_type.shape.dim:
      continue
    v.type.tensor_type.shape.dim[0].dim_param = "N"
  del g.value_info[:]   # stale intermediate shapes would pin the batch again
  constant_by_output = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
  for n in g.node:
    # Only activation reshapes: a Reshape of a constant (e.g. a bias to [1, -1, 1, 1])
    # has no batch to keep.
    if n.op_type != "Reshape" or n.input[0] in init_by_name or n.input[0] in constant_by_output:
      continue
    shape_name = n.input[1]
    if shape_name in constant_by_output:
      attr = next(a for a in constant_by_output[shape_name].attribute if a.name == "value")
      tensor = attr.t
    elif shape_name in init_by_name:
      tensor = init_by_name[shape_name]
    else:
      continue
    shape = numpy_helper.to_array(tensor).copy()
    if shape.ndim == 1 and shape.size and shape[0] == 1:
      shape[0] = 0   # allowzero=0: 0 copies the input's (batch) dim
      tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
  return model


class OnnxRuntimeTarget:
  """An ONNX face-recognition model as a black-box embedding target."""

  def __init__(self, path: str | os.PathLike, name: str,
               preprocess: Callable[[np.ndarray], np.ndarray],
               one_image_per_run: bool = False, dynamic_batch: bool = False):
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{name}: ONNX model {path} not found")
    self.name = name
    self.path = path
    self.preprocess = preprocess
    self.one_image_per_run = one_image_per_run
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = INTRA_OP_THREADS
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3   # the exports' stale output shapes only warn
    model = onnx.load(path)
    if dynamic_batch:
      model = make_batch_dynamic(model)
    ort.disable_telemetry_events()
    self.session = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    self.input_name = self.session.get_inputs()[0].name

  def raw(self, images: np.ndarray) -> np.ndarray:
    """Un-normalised (N, d) float32 embeddings."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (112, 112, 3):
      raise ValueError(f"{self.name}: expected uint8 (N, 112, 112, 3) RGB images, got "
                       f"{images.dtype} {images.shape}")
    x = np.ascontiguousarray(self.preprocess(images), np.float32)
    if self.one_image_per_run:
      out = [self.session.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(len(x))]
      return np.concatenate(out, 0).astype(np.float32)
    # Chunks: one run over thousands of photos holds every activation at once (20 GB for
    # faceplugin on 4231 photos, enough for the kernel to kill the process).
    out = [self.session.run(None, {self.input_name: x[i:i + BATCH]})[0]
           for i in range(0, len(x), BATCH)]
    return np.concatenate(out, 0).astype(np.float32)

  def embed(self, images: np.ndarray) -> np.ndarray:
    y = self.raw(images)
    return (y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def foamliu_runtime(model_root=None, one_image_per_run: bool = False) -> OnnxRuntimeTarget:
  """foamliu MobileFaceNet fp32 (128-d), batched through a dynamic-batch copy."""
  return OnnxRuntimeTarget(paths.model_file(onnx_mobilefacenets.FOAMLIU_FILE, model_root),
                           "foamliu_onnx", onnx_mobilefacenets.foamliu_preprocess,
                           one_image_per_run=one_image_per_run, dynamic_batch=True)


def w600k_runtime(model_root=None, one_image_per_run: bool = True) -> OnnxRuntimeTarget:
  """InsightFace w600k_mbf int8 (512-d), one image per run by default (see module doc)."""
  return OnnxRuntimeTarget(paths.model_file(onnx_mobilefacenets.W600K_FILE, model_root),
                           "w600k_int8_onnx", onnx_mobilefacenets.w600k_preprocess,
                           one_image_per_run=one_image_per_run)


def faceplugin_runtime(model_root=None, one_image_per_run: bool = False) -> OnnxRuntimeTarget:
  """Faceplugin MobileFaceNet fp32 (512-d), batched through a dynamic-batch copy."""
  return OnnxRuntimeTarget(paths.model_file(faceplugin_mobilefacenet.FILE, model_root),
                           "faceplugin_onnx", faceplugin_mobilefacenet.preprocess,
                           one_image_per_run=one_image_per_run, dynamic_batch=True)
