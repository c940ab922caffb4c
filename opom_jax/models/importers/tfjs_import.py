"""Imports a TensorFlow.js graph model into a pure, differentiable JAX function.

A TF.js graph model is a ``model.json`` holding ``modelTopology.node`` (a
TensorFlow GraphDef as JSON: name, op, inputs, attrs) and a ``weightsManifest``
naming the binary shards and, in order, every constant's name, shape, dtype
and optional quantisation. Neither TensorFlow nor TF.js is needed here:

    params, apply_graph = load_tfjs(path, outputs=("global_pooling/Mean",))
    y = apply_graph(params, x)        # x: the graph input (NHWC), y: that output

Weights: the shards are concatenated in manifest order and each constant takes
the next ``prod(shape) * itemsize`` bytes of its *stored* dtype. float16
quantisation (``"quantization": {"dtype": "float16"}``) stores IEEE halves,
decoded to float32 exactly as TF.js does; 8/16-bit affine quantisation
(``uint8``/``uint16`` with ``scale`` and ``min``) decodes to ``min + scale * q``.

``params`` holds every float constant the requested outputs depend on, keyed
by node name, in TensorFlow's own layouts (Conv2D kernels HWIO, depthwise
kernels (kh, kw, C, multiplier)); integer constants (reduction axes) are
structure and stay static. Everything is NHWC as in TensorFlow, so any batch
size works (the graphs here declare the batch as -1).

DFANet: with ``dropout_rate > 0`` and a key ``rng``, ``base.dropout`` with key
``fold_in(rng, node_index)`` is applied to the output of each convolution in
``Graph.dropout_nodes`` (right after the convolution, before its folded
BatchNorm). The default sites are the importers' shared rule: the stem
convolution and every convolution whose output feeds a residual ``Add`` (two
non-constant operands) through per-channel ``Mul`` / ``Add`` of constants. A
graph with no residual blocks (MobileNet v1) gets its sites from the caller
(`parse_tfjs(..., dropout_at=...)`).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import base
from opom_jax.models import ops

_PRECISION = jax.lax.Precision.HIGHEST
_CONVS = ("Conv2D", "DepthwiseConv2dNative")
_RAW_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


@dataclasses.dataclass(frozen=True)
class Node:
  index: int                 # position in modelTopology.node (names dropout keys)
  name: str
  op: str
  inputs: tuple[str, ...]    # producer node names (output index 0; control inputs dropped)
  attrs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Graph:
  nodes: tuple[Node, ...]     # the ops to run, in file (topological) order
  input_name: str
  output_names: tuple[str, ...]
  static: dict[str, np.ndarray]   # integer constants, resolved at trace time
  dropout_nodes: frozenset[int]   # indices of the convs DFANet drops after


# ---------------------------------------------------------------- weights

def decode_weights(manifest: list[dict], base_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """weightsManifest + the shard files under base_dir -> {name: float32/int32 array}."""
  out = {}
  for group in manifest:
    data = b"".join((base_dir / p).read_bytes() for p in group["paths"])
    offset = 0
    for spec in group["weights"]:
      shape = tuple(int(s) for s in spec["shape"])
      count = int(np.prod(shape, dtype=np.int64))
      quant = spec.get("quantization")
      stored = _QUANT_DTYPES.get(quant["dtype"]) if quant else _RAW_DTYPES.get(spec["dtype"])
      if stored is None:
        what = quant["dtype"] if quant else spec["dtype"]
        raise NotImplementedError(f"weight {spec['name']}: dtype {what!r} is not supported")
      size = count * np.dtype(stored).itemsize
      if offset + size > len(data):
        raise ValueError(f"weight {spec['name']}: shards {group['paths']} end at byte "
                         f"{len(data)}, need {offset + size}")
      raw = np.frombuffer(data, stored, count, offset).reshape(shape)
      offset += size
      if quant and quant["dtype"] != "float16":
        raw = np.float32(quant["min"]) + np.float32(quant["scale"]) * raw.astype(np.float32)
      out[spec["name"]] = raw.astype(_RAW_DTYPES[spec["dtype"]])
    if offset != len(data):
      raise ValueError(f"shards {group['paths']}: {len(data) - offset} bytes left after "
                       "the last weight of the manifest")
  return out


# ------------------------------------------------------------------ attrs

def _attr(raw: dict) -> Any:
  """One GraphDef attr value (JSON protobuf) -> a Python value."""
  if "list" in raw:
    lst = raw["list"]
    if "i" in lst:
      return [int(v) for v in lst["i"]]
    if "s" in lst:
      return [base64.b64decode(v).decode() for v in lst["s"]]
    if "f" in lst:
      return [float(v) for v in lst["f"]]
    return []
  if "s" in raw:
    return base64.b64decode(raw["s"]).decode()
  if "i" in raw:
    return int(raw["i"])
  if "f" in raw:
    return float(raw["f"])
  if "b" in raw:
    return bool(raw["b"])
  return raw   # types, shapes, tensors: not needed by the ops


def _producer(name: str) -> str:
  node, _, port = name.partition(":")
  if port not in ("", "0"):
    raise NotImplementedError(f"input {name!r}: only output 0 of a node is supported")
  return node


# -------------------------------------------------------------------- ops

def _same_padding(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
  """TensorFlow 'SAME': the extra pixel of an odd total goes after (bottom/right)."""
  span = (k - 1) * dilation + 1
  total = max((-(-size // stride) - 1) * stride + span - size, 0)
  return total // 2, total - total // 2


def _padding(node: Node, x, kh: int, kw: int):
  strides, dil = node.attrs.get("strides", [1, 1, 1, 1]), node.attrs.get("dilations", [1, 1, 1, 1])
  if node.attrs.get("data_format", "NHWC") != "NHWC":
    raise NotImplementedError(f"{node.name}: data_format {node.attrs['data_format']!r}")
  mode = node.attrs.get("padding", "VALID")
  if mode == "SAME":
    pad = (_same_padding(x.shape[1], kh, strides[1], dil[1]),
           _same_padding(x.shape[2], kw, strides[2], dil[2]))
  elif mode == "VALID":
    pad = ((0, 0), (0, 0))
  elif mode == "EXPLICIT":
    p = node.attrs["explicit_paddings"]
    pad = ((p[2], p[3]), (p[4], p[5]))
  else:
    raise NotImplementedError(f"{node.name}: padding {mode!r}")
  return (strides[1], strides[2]), pad, (dil[1], dil[2])


def _conv2d(node, x, w):
  strides, pad, dil = _padding(node, x, w.shape[0], w.shape[1])
  return ops.conv2d(x, w, strides, pad, dil)


def _depthwise(node, x, w):
  kh, kw, c, mult = w.shape
  strides, pad, dil = _padding(node, x, kh, kw)
  # TF's output channel c*mult + m is input channel c, multiplier m: HWIO with I=1.
  return ops.conv2d(x, jnp.reshape(w, (kh, kw, 1, c * mult)), strides, pad, dil, groups=c)


def _mean(node, x, axes):
  return jnp.mean(x, axis=tuple(int(a) for a in np.ravel(axes)),
                  keepdims=node.attrs.get("keep_dims", False))


def _matmul(node, a, b):
  a = a.T if node.attrs.get("transpose_a") else a
  b = b.T if node.attrs.get("transpose_b") else b
  return jnp.matmul(a, b, precision=_PRECISION)


def _fused_matmul(node, a, b, *args):
  y = _matmul(node, a, b)
  fused = node.attrs.get("fused_ops", [])
  if fused[:1] == ["BiasAdd"]:
    y, fused = y + args[0], fused[1:]
  for f in fused:
    if f not in _ACTIVATIONS:
      raise NotImplementedError(f"{node.name}: fused op {f!r}")
    y = _ACTIVATIONS[f](y)
  return y


_ACTIVATIONS = {"Relu": jax.nn.relu, "Relu6": jax.nn.relu6, "Sigmoid": jax.nn.sigmoid,
                "Elu": jax.nn.elu, "Tanh": jnp.tanh}
OPS: dict[str, Callable] = {
    "Conv2D": _conv2d, "DepthwiseConv2dNative": _depthwise,
    "Add": lambda n, a, b: a + b, "AddV2": lambda n, a, b: a + b,
    "BiasAdd": lambda n, a, b: a + b, "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b, "RealDiv": lambda n, a, b: a / b,
    "Minimum": lambda n, a, b: jnp.minimum(a, b), "Maximum": lambda n, a, b: jnp.maximum(a, b),
    "Identity": lambda n, x: x, "Mean": _mean, "MatMul": _matmul, "_FusedMatMul": _fused_matmul,
    "Softmax": lambda n, x: jax.nn.softmax(x, axis=-1),
    **{k: (lambda f: lambda n, x: f(x))(f) for k, f in _ACTIVATIONS.items()},
}


# ---------------------------------------------------------------- loading

def _prune(nodes: list[Node], outputs: Iterable[str]) -> list[Node]:
  needed, kept = set(outputs), []
  for n in reversed(nodes):
    if n.name in needed:
      kept.append(n)
      needed.update(n.inputs)
  return kept[::-1]


def residual_convs(nodes: Iterable[Node], input_name: str, consts) -> frozenset[int]:
  """The stem conv and every conv reaching a residual Add through per-channel affine ops."""
  nodes = list(nodes)
  by_name = {n.name: n for n in nodes}
  chosen = {n.index for n in nodes if n.op in _CONVS and n.inputs[0] == input_name}

  def conv_behind(name):
    n = by_name.get(name)
    while n is not None and n.op in ("Mul", "Add", "AddV2", "BiasAdd"):
      live = [i for i in n.inputs if i not in consts]
      if len(live) != 1:
        return None
      n = by_name.get(live[0])
    return n if n is not None and n.op in _CONVS else None

  for n in nodes:
    if n.op in ("Add", "AddV2") and not any(i in consts for i in n.inputs):
      chosen.update(c.index for c in map(conv_behind, n.inputs) if c is not None)
  return frozenset(chosen)


def parse_tfjs(path: str | os.PathLike, outputs: Iterable[str],
               dropout_at: Callable[[Node], bool] | None = None):
  """-> (params, Graph) computing `outputs` (node names). Raises naming the file.

  dropout_at: a predicate choosing the convolutions DFANet drops after; None
  uses `residual_convs`.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"TF.js model {path} not found")
  spec = json.loads(path.read_text())
  if spec.get("format") not in (None, "graph-model") or "node" not in spec.get("modelTopology", {}):
    raise ValueError(f"{path}: not a TF.js graph model (format {spec.get('format')!r})")
  try:
    consts = decode_weights(spec.get("weightsManifest", []), path.parent)
    nodes, placeholders = [], []
    for k, raw in enumerate(spec["modelTopology"]["node"]):
      inputs = tuple(_producer(i) for i in raw.get("input", []) if not i.startswith("^"))
      node = Node(k, raw["name"], raw["op"], inputs,
                  {a: _attr(v) for a, v in raw.get("attr", {}).items()})
      if node.op == "Placeholder":
        placeholders.append(node.name)
      elif node.op == "Const":
        if node.name not in consts:
          raise ValueError(f"constant {node.name} is not in the weights manifest")
      else:
        nodes.append(node)
    outputs = tuple(outputs)
    missing = [o for o in outputs if o not in {n.name for n in nodes}]
    if missing:
      raise ValueError(f"no op node named {missing}")
    nodes = _prune(nodes, outputs)
    unknown = sorted({n.op for n in nodes} - set(OPS))
    if unknown:
      raise NotImplementedError(f"unsupported TF.js ops {unknown}")
    needed = {i for n in nodes for i in n.inputs}
    live_inputs = sorted(needed & set(placeholders))
    if len(live_inputs) != 1:
      raise NotImplementedError(f"expected one graph input, the outputs need {live_inputs}")
  except (NotImplementedError, ValueError) as e:
    raise type(e)(f"{path}: {e}") from None

  params, static = {}, {}
  for name in needed & set(consts):
    v = consts[name]
    if np.issubdtype(v.dtype, np.floating):
      params[name] = jnp.asarray(v, jnp.float32)
    else:
      static[name] = v
  if dropout_at is None:
    sites = residual_convs(nodes, live_inputs[0], consts)
  else:
    sites = frozenset(n.index for n in nodes if n.op in _CONVS and dropout_at(n))
  return params, Graph(tuple(nodes), live_inputs[0], outputs, static, sites)


def make_apply(graph: Graph) -> Callable:
  """apply_graph(params, x, *, dropout_rate=0.0, rng=None) -> output (or tuple)."""

  def apply_graph(params, x, *, dropout_rate: float = 0.0, rng=None):
    use_dropout = dropout_rate > 0.0 and rng is not None
    env: dict[str, Any] = {graph.input_name: jnp.asarray(x, jnp.float32)}

    def fetch(name):
      if name in env:
        return env[name]
      return params[name] if name in params else graph.static[name]

    for node in graph.nodes:
      y = OPS[node.op](node, *map(fetch, node.inputs))
      if use_dropout and node.index in graph.dropout_nodes:
        y = base.dropout(y, dropout_rate, jax.random.fold_in(rng, node.index))
      env[node.name] = y
    ys = tuple(env[o] for o in graph.output_names)
    return ys[0] if len(ys) == 1 else ys

  return apply_graph


def load_tfjs(path: str | os.PathLike, outputs: Iterable[str],
              dropout_at: Callable[[Node], bool] | None = None):
  """-> (params, apply_graph) for the raw graph (its own input, NHWC)."""
  params, graph = parse_tfjs(path, outputs, dropout_at)
  return params, make_apply(graph)
