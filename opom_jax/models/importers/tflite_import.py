"""Imports a float32 TFLite graph into a pure, differentiable JAX function.

The .tflite flatbuffer is read with the schema bindings that ai-edge-litert
ships (``ai_edge_litert.schema_py_generated``), so neither TensorFlow nor the
LiteRT interpreter is involved: weights come straight from the model buffers.

    params, apply_graph = load_tflite(path)
    outputs = apply_graph(params, x)          # tuple, one per graph output

``params`` holds every float constant tensor (weights, biases, PReLU slopes,
normalisation constants) keyed by tensor name, so it is a plain pytree that can
be differentiated or checkpointed. Integer constants (PAD amounts, shapes) are
structure, not weights, and stay static inside ``apply_graph``.

Batching: TFLite exports usually fix the batch at 1. Every supported op is
written for an arbitrary leading batch dimension (elementwise constants
broadcast, FULLY_CONNECTED flattens to (-1, in_dim), RESHAPE keeps the batch),
so ``apply_graph`` takes any N.

DFANet rule (the same as the ONNX importer's): with ``dropout_rate > 0`` and
a key ``rng``, dropout (``base.dropout``, key ``fold_in(rng, op_index)``) is
applied to the output of the stem convolution and of every convolution whose
output feeds a residual ADD, i.e. after the convolutions that close each
residual block. Dropping after *every* convolution (49 sites on y1) leaves a
mean cosine of about 0.18 to the clean embedding at rate 0.1: a different
model, not a slightly perturbed one; the residual rule keeps about 0.69.
``dropout_rate = 0`` (or ``rng=None``) is exactly the deterministic graph;
``dropout_ops`` (operator indices) overrides the sites.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ai_edge_litert import schema_py_generated as schema

from opom_jax.models import base
from opom_jax.models import ops

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items()
             if not k.startswith("_")}
_DTYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.INT64: np.int64,
}
_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


@dataclasses.dataclass(frozen=True)
class Op:
  index: int
  kind: str                  # BuiltinOperator name, e.g. "CONV_2D"
  inputs: tuple[int, ...]    # tensor indices; -1 marks an omitted optional input
  outputs: tuple[int, ...]
  options: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Graph:
  ops: tuple[Op, ...]
  inputs: tuple[int, ...]
  outputs: tuple[int, ...]
  param_keys: dict[int, str]          # tensor index -> params key (float consts)
  static_consts: dict[int, np.ndarray]  # tensor index -> int consts
  shapes: dict[int, tuple[int, ...]]   # tensor index -> shape as exported


# ----------------------------------------------------------------------------
# Op implementations. Each takes (inputs, options) where inputs is a list of
# arrays (None for an omitted optional input) and returns one array.

def _activation(x, code: int):
  A = schema.ActivationFunctionType
  if code == A.NONE:
    return x
  if code == A.RELU:
    return jax.nn.relu(x)
  if code == A.RELU6:
    return jnp.clip(x, 0.0, 6.0)
  if code == A.RELU_N1_TO_1:
    return jnp.clip(x, -1.0, 1.0)
  if code == A.TANH:
    return jnp.tanh(x)
  raise NotImplementedError(f"fused activation code {code} is not supported")


def _same_pads(size: int, k: int, stride: int, dilation: int):
  # TF "SAME": output ceil(size / stride); odd padding goes to the bottom/right.
  eff_k = (k - 1) * dilation + 1
  out = -(-size // stride)
  total = max((out - 1) * stride + eff_k - size, 0)
  return total // 2, total - total // 2


def _conv_padding(x_hw, k_hw, strides, dilations, padding: int):
  if padding == schema.Padding.VALID:
    return [(0, 0), (0, 0)]
  if padding == schema.Padding.SAME:
    return [_same_pads(s, k, st, d)
            for s, k, st, d in zip(x_hw, k_hw, strides, dilations)]
  raise NotImplementedError(f"padding code {padding} is not supported")


def _conv_2d(ins, o):
  x, w, b = (ins + [None])[:3]   # w is OHWI
  strides = (o["strideH"], o["strideW"])
  dil = (o["dilationHFactor"], o["dilationWFactor"])
  y = ops.conv2d(
      x, jnp.transpose(w, (1, 2, 3, 0)), strides=strides,
      padding=_conv_padding(x.shape[1:3], w.shape[1:3], strides, dil,
                            o["padding"]),
      dilation=dil, groups=x.shape[-1] // w.shape[-1])
  if b is not None:
    y = y + b
  return _activation(y, o["fusedActivationFunction"])


def _depthwise_conv_2d(ins, o):
  # TFLite kernel is (1, kh, kw, C * M) with output channel c * M + m, which is
  # the HWIO layout of a grouped conv with C groups of M outputs each.
  x, w, b = (ins + [None])[:3]
  c = x.shape[-1]
  if w.shape[-1] != c * o["depthMultiplier"] and o["depthMultiplier"] != 0:
    raise ValueError(f"DEPTHWISE_CONV_2D kernel {w.shape} does not match "
                     f"{c} channels x depth multiplier {o['depthMultiplier']}")
  strides = (o["strideH"], o["strideW"])
  dil = (o["dilationHFactor"], o["dilationWFactor"])
  kernel = jnp.transpose(w, (1, 2, 0, 3))  # (kh, kw, 1, C * M)
  y = ops.conv2d(
      x, kernel, strides=strides,
      padding=_conv_padding(x.shape[1:3], w.shape[1:3], strides, dil,
                            o["padding"]),
      dilation=dil, groups=c)
  if b is not None:
    y = y + b
  return _activation(y, o["fusedActivationFunction"])


def _fully_connected(ins, o):
  x, w, b = (ins + [None])[:3]
  in_dim = w.shape[1]
  y = jnp.matmul(x.reshape(-1, in_dim), w.T, precision=ops.PRECISION)
  if b is not None:
    y = y + b
  if o.get("keepNumDims"):
    y = y.reshape(x.shape[:-1] + (w.shape[0],))
  return _activation(y, o["fusedActivationFunction"])


def _binary(fn):
  def op(ins, o):
    y = fn(ins[0], ins[1])
    return _activation(y, (o or {}).get("fusedActivationFunction", 0))
  return op


def _pad(ins, o):
  x, pads = ins[0], np.asarray(ins[1])
  return jnp.pad(x, [tuple(int(v) for v in p) for p in pads])


def _reshape(ins, o):
  # The exported shape bakes in batch 1; keep the runtime batch instead.
  x = ins[0]
  shape = ins[1] if len(ins) > 1 and ins[1] is not None else o["newShape"]
  shape = [int(v) for v in np.asarray(shape).reshape(-1)]
  if shape and shape[0] in (1, -1):
    shape = [x.shape[0]] + shape[1:]
  return x.reshape(shape)


def _prelu(ins, o):
  x, alpha = ins
  return jnp.where(x >= 0, x, alpha * x)


OPS: dict[str, Callable] = {
    "CONV_2D": _conv_2d,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "FULLY_CONNECTED": _fully_connected,
    "ADD": _binary(jnp.add),
    "SUB": _binary(jnp.subtract),
    "MUL": _binary(jnp.multiply),
    "MAXIMUM": _binary(jnp.maximum),
    "MINIMUM": _binary(jnp.minimum),
    "PAD": _pad,
    "RESHAPE": _reshape,
    "PRELU": _prelu,
    "RELU": lambda ins, o: jax.nn.relu(ins[0]),
    "RELU6": lambda ins, o: jnp.clip(ins[0], 0.0, 6.0),
}


# ----------------------------------------------------------------------------
# Flatbuffer reading.

def _tensor_data(model, raw: bytes, tensor) -> np.ndarray | None:
  buf = model.buffers[tensor.buffer]
  if buf.offset > 1:  # large models keep data after the flatbuffer
    data = raw[buf.offset:buf.offset + buf.size]
  elif buf.data is not None and len(buf.data):
    data = bytes(buf.data)
  else:
    return None
  if tensor.type not in _DTYPES:
    raise NotImplementedError(
        f"constant tensor {tensor.name!r} has TFLite type {tensor.type}; only "
        "float32/int32/int64 graphs are supported (quantised models are not)")
  shape = () if tensor.shape is None else tuple(int(d) for d in tensor.shape)
  return np.frombuffer(data, dtype=_DTYPES[tensor.type]).reshape(shape).copy()


def _options(op) -> dict[str, Any]:
  opts = op.builtinOptions
  return {} if opts is None else {k: v for k, v in vars(opts).items()}


def parse_tflite(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], Graph]:
  """Reads the first subgraph: float constants as params, plus the op list."""
  try:
    raw = open(path, "rb").read()
  except OSError as e:
    raise FileNotFoundError(f"cannot read TFLite model {path}: {e}") from e
  if raw[4:8] != b"TFL3":
    raise ValueError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
  model = schema.ModelT.InitFromPackedBuf(raw, 0)
  if len(model.subgraphs) != 1:
    raise NotImplementedError(
        f"{path} has {len(model.subgraphs)} subgraphs; only one is supported")
  g = model.subgraphs[0]

  params, param_keys, static_consts, shapes = {}, {}, {}, {}
  for i, t in enumerate(g.tensors):
    shapes[i] = () if t.shape is None else tuple(int(d) for d in t.shape)
    data = _tensor_data(model, raw, t)
    if data is None:
      continue
    if data.dtype == np.float32:
      key = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
      if not key or key in params:
        key = f"{key}#{i}"
      params[key] = data
      param_keys[i] = key
    else:
      static_consts[i] = data

  graph_ops = []
  for k, op in enumerate(g.operators):
    code = model.operatorCodes[op.opcodeIndex]
    kind = _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode),
                         "CUSTOM")
    if kind not in OPS:
      raise NotImplementedError(
          f"{path}: operator {k} is {kind}, which the JAX importer does not "
          f"support (supported: {sorted(OPS)})")
    graph_ops.append(Op(k, kind, tuple(int(i) for i in op.inputs),
                        tuple(int(i) for i in op.outputs), _options(op)))
  graph = Graph(tuple(graph_ops), tuple(int(i) for i in g.inputs),
                tuple(int(i) for i in g.outputs), param_keys, static_consts,
                shapes)
  return params, graph


def residual_dropout_sites(graph: Graph) -> set[int]:
  """The stem convolution and every convolution whose output feeds an ADD of two activations."""
  convs = [op for op in graph.ops if op.kind in _CONV_OPS]
  producer = {t: op for op in convs for t in op.outputs}
  sites = {convs[0].index} if convs else set()
  for op in graph.ops:
    if op.kind == "ADD" and not any(t in graph.param_keys or t in graph.static_consts for t in op.inputs):
      sites |= {producer[t].index for t in op.inputs if t in producer}
  return sites


def make_apply(graph: Graph, dropout_ops=None) -> Callable:
  """apply_graph(params, *inputs, dropout_rate=0.0, rng=None) -> tuple.

  dropout_ops: operator indices whose outputs get DFANet dropout; None means
  `residual_dropout_sites` (the module docstring's rule).
  """
  if dropout_ops is None:
    dropout_ops = residual_dropout_sites(graph)
  dropout_ops = frozenset(int(i) for i in dropout_ops)

  def apply_graph(params, *inputs, dropout_rate: float = 0.0, rng=None):
    if len(inputs) != len(graph.inputs):
      raise ValueError(f"graph takes {len(graph.inputs)} inputs, got "
                       f"{len(inputs)}")
    env = {i: jnp.asarray(params[key]) for i, key in graph.param_keys.items()}
    env.update(graph.static_consts)
    env.update(zip(graph.inputs, inputs))
    use_dropout = dropout_rate > 0.0 and rng is not None
    for op in graph.ops:
      y = OPS[op.kind]([env[i] if i >= 0 else None for i in op.inputs],
                       op.options)
      if use_dropout and op.index in dropout_ops:
        y = base.dropout(y, dropout_rate, jax.random.fold_in(rng, op.index))
      env[op.outputs[0]] = y
    return tuple(env[i] for i in graph.outputs)

  return apply_graph


def load_tflite(path: str | os.PathLike, dropout_ops=None):
  """Returns (params, apply_graph) for a float32 single-subgraph .tflite."""
  params, graph = parse_tflite(path)
  return params, make_apply(graph, dropout_ops)


def op_list(path: str | os.PathLike) -> list[str]:
  """The graph's operator kinds in execution order (for reports and checks)."""
  return [op.kind for op in parse_tflite(path)[1].ops]
