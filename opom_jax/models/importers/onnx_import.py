"""Imports an ONNX face-recognition graph into a pure, differentiable JAX function.

The file is read with the ``onnx`` package only (no onnxruntime here):

    params, apply_graph = load_onnx(path)
    y = apply_graph(params, x)        # x: the graph input (NCHW here), y: its output

Loading does three things once, in numpy:

* constant folding: ``Constant`` nodes and nodes whose inputs are all constants
  (e.g. the quantiser's ``Reshape(bias, [1, -1, 1, 1])``) are evaluated;
* dequantisation (``dequantize=True``, the default): the dynamic-quantisation
  pattern ``DynamicQuantizeLinear(x) -> ConvInteger / MatMulInteger -> Cast ->
  Mul(x_scale * w_scale)`` computes ``x_scale * w_scale * sum (x_q - x_zp)(w_q -
  w_zp)``, i.e. a float conv of the dequantised activation with the weights
  ``W = (w_q - w_zp) * w_scale``. It is rewritten into exactly that float op, so
  activations stay float (no per-batch activation rounding) and the function is
  differentiable. A following ``Add`` of a constant becomes the op's bias. With
  ``dequantize=False`` the quantised ops run literally (as onnxruntime does,
  one activation scale per batch), which is useful only to check the import;
* layout: convolution weights are stored HWIO and activations flow NHWC inside
  (XLA:CPU's fast layout); every op that depends on the layout sees NCHW
  (the op table and the layout rules are in ``onnx_ops``).

``params`` holds every float tensor the graph reads (converted weights, biases,
PReLU slopes, BN statistics, clip bounds), keyed by ONNX tensor name, so it is a
plain pytree. Integer constants (shapes, quantised weights in literal mode) are
structure and stay static inside ``apply_graph``.

Batching: these exports fix the batch at 1 in places (foamliu's final
``Reshape(x, [1, -1])``). A ``Reshape`` of an activation whose target starts with
1 or 0 keeps the leading (batch) dimension, so any N works.

DFANet rule: with ``dropout_rate > 0`` and a key ``rng``, ``base.dropout`` with
key ``fold_in(rng, node_index)`` (the conv's position in the ONNX file) is applied
to the output (after its bias, i.e. the folded BatchNorm; before the activation)
of the stem convolution (the one reading the graph input) and of every
convolution whose output feeds a residual ``Add`` (the projection conv closing
each MobileFaceNet bottleneck, and the block output that is the skip path).
That is 16 convs in each of the two MobileFaceNets. Dropping after *every* conv
was tried and rejected: at p = 0.1 it compounds over ~50 layers and leaves the
embedding nearly unrelated to the clean one (cosine ~0.05 on LFW faces), while
this rule gives ~0.2-0.5 (foamliu) and ~0.65-0.75 (w600k). ``dropout_rate = 0``
(or ``rng=None``) is exactly the deterministic graph.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import helper, numpy_helper

from opom_jax.models import base
from opom_jax.models.importers import onnx_ops

_FLOAT_CONVS = ("Conv", "FusedConv")


@dataclasses.dataclass(frozen=True)
class Node:
  index: int                 # position in the ONNX file (names dropout keys)
  op: str                    # ONNX op_type, or FusedConv / FusedMatMul
  inputs: tuple[str, ...]    # "" marks an omitted optional input
  outputs: tuple[str, ...]
  attrs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Graph:
  nodes: tuple[Node, ...]
  input_name: str
  output_names: tuple[str, ...]
  static: dict[str, np.ndarray]   # integer constants, resolved at trace time
  dropout_nodes: frozenset[int]   # indices of the convs DFANet drops after



# -------------------------------------------------------------------- loading

def _attrs(node) -> dict[str, Any]:
  out = {}
  for a in node.attribute:
    v = helper.get_attribute_value(a)
    out[a.name] = numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v
  return out


def _fold_constants(nodes, consts):
  """Evaluates Constant nodes and nodes whose inputs are all constants (numpy)."""
  kept = []
  for n in nodes:
    if n.op == "Constant":
      if "value" not in n.attrs:
        raise NotImplementedError(f"Constant node {n.index}: only 'value' is supported")
      consts[n.outputs[0]] = np.asarray(n.attrs["value"])
    elif n.inputs and all(i == "" or i in consts for i in n.inputs) and n.op in onnx_ops.OPS:
      args = [None if i == "" else consts[i] for i in n.inputs]
      fn = onnx_ops.reshape if n.op == "Reshape" else onnx_ops.OPS[n.op]
      for name, v in zip(n.outputs, fn(n, *args)):
        consts[name] = np.asarray(v)
    else:
      kept.append(n)
  return kept


def _scalar_or_per_channel(v, channels: int, what: str):
  v = np.asarray(v)
  if v.size == 1:
    return v.reshape(())
  if v.size == channels:
    return v.reshape(channels)
  raise NotImplementedError(f"{what} of shape {v.shape}: expected a scalar or one per "
                            f"output channel ({channels})")


def _dequantize_patterns(nodes, consts):
  """Rewrites DQL -> {Conv,MatMul}Integer -> Cast -> Mul(scale) (+ Add bias) to float."""
  producer = {o: n for n in nodes for o in n.outputs}
  consumers: dict[str, list[Node]] = {}
  for n in nodes:
    for i in n.inputs:
      consumers.setdefault(i, []).append(n)

  def only_consumer(name, op):
    c = consumers.get(name, [])
    return c[0] if len(c) == 1 and c[0].op == op else None

  replace: dict[int, Node] = {}   # index of the pattern's last node -> fused node
  drop: set[int] = set()
  for n in nodes:
    if n.op not in ("ConvInteger", "MatMulInteger"):
      continue
    where = f"{n.op} node {n.index} ({n.outputs[0]})"
    xq, wq = n.inputs[0], n.inputs[1]
    x_zp = n.inputs[2] if len(n.inputs) > 2 else ""
    w_zp = n.inputs[3] if len(n.inputs) > 3 else ""
    dql = producer.get(xq)
    if dql is None or dql.op != "DynamicQuantizeLinear" or dql.outputs[0] != xq:
      raise NotImplementedError(f"{where}: input is not DynamicQuantizeLinear output")
    if x_zp != dql.outputs[2] or wq not in consts or (w_zp and w_zp not in consts):
      raise NotImplementedError(f"{where}: zero points / weights not in the expected form")
    cast = only_consumer(n.outputs[0], "Cast")
    mul = cast and only_consumer(cast.outputs[0], "Mul")
    if cast is None or mul is None or cast.attrs.get("to") != 1:
      raise NotImplementedError(f"{where}: not followed by Cast(float) -> Mul")
    scale_name = mul.inputs[1] if mul.inputs[0] == cast.outputs[0] else mul.inputs[0]
    smul = producer.get(scale_name)
    if smul is None or smul.op != "Mul" or dql.outputs[1] not in smul.inputs:
      raise NotImplementedError(f"{where}: output scale is not x_scale * w_scale")
    w_scale_name = smul.inputs[1] if smul.inputs[0] == dql.outputs[1] else smul.inputs[0]
    if w_scale_name not in consts:
      raise NotImplementedError(f"{where}: weight scale {w_scale_name} is not constant")

    w = consts[wq].astype(np.float32)
    out_ch = w.shape[0] if n.op == "ConvInteger" else w.shape[1]
    zp = _scalar_or_per_channel(consts[w_zp] if w_zp else 0, out_ch, f"{where} w_zero_point")
    sc = _scalar_or_per_channel(consts[w_scale_name], out_ch, f"{where} w_scale")
    if n.op == "ConvInteger":
      bshape = (-1, 1, 1, 1)   # per output channel, OIHW
    else:
      bshape = (1, -1)         # per output column, (K, N)
    w_float = ((w - np.reshape(zp, bshape if zp.ndim else ())) *
               np.reshape(sc, bshape if sc.ndim else ())).astype(np.float32)
    wname = f"{wq}/dequantized"
    consts[wname] = w_float
    inputs = [dql.inputs[0], wname]
    last, out = mul, mul.outputs[0]

    # A constant bias Add right after becomes the fused op's bias.
    add = only_consumer(out, "Add")
    if add is not None:
      other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
      if other in consts and consts[other].size == out_ch:
        bname = f"{other}/bias"
        consts[bname] = consts[other].reshape(out_ch).astype(np.float32)
        inputs.append(bname)
        last, out = add, add.outputs[0]

    fused_op = "FusedConv" if n.op == "ConvInteger" else "FusedMatMul"
    replace[last.index] = Node(n.index, fused_op, tuple(inputs), (out,), n.attrs)
    drop.update({n.index, cast.index, mul.index, last.index})
  rewritten = [replace.get(n.index, n) for n in nodes if n.index not in drop
               or n.index in replace]
  return rewritten


def _prune(nodes, outputs):
  """Drops nodes that no graph output depends on (e.g. orphaned quantisers)."""
  needed, kept = set(outputs), []
  for n in reversed(nodes):
    if any(o in needed for o in n.outputs):
      kept.append(n)
      needed.update(i for i in n.inputs if i)
  return kept[::-1], needed


def _dfanet_convs(nodes, input_name, consts) -> frozenset[int]:
  """The stem conv (reads the graph input) and every conv feeding a residual Add."""
  producer = {o: n for n in nodes for o in n.outputs}
  chosen = {n.index for n in nodes if n.op in _FLOAT_CONVS and n.inputs[0] == input_name}
  for n in nodes:
    if n.op == "Add" and not any(i in consts for i in n.inputs):
      chosen.update(producer[i].index for i in n.inputs
                    if i in producer and producer[i].op in _FLOAT_CONVS)
  return frozenset(chosen)


def parse_onnx(path: str | os.PathLike, dequantize: bool = True):
  """-> (params, Graph). Raises naming the file on anything unsupported."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"ONNX model {path} not found")
  model = onnx.load(path)
  g = model.graph
  consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
  inputs = [i.name for i in g.input if i.name not in consts]
  if len(inputs) != 1:
    raise NotImplementedError(f"{path}: expected one graph input, found {inputs}")
  nodes = [Node(k, n.op_type, tuple(n.input), tuple(n.output), _attrs(n))
           for k, n in enumerate(g.node)]
  try:
    nodes = _fold_constants(nodes, consts)
    if dequantize:
      nodes = _dequantize_patterns(nodes, consts)
    outputs = tuple(o.name for o in g.output)
    nodes, needed = _prune(nodes, outputs)
    unknown = sorted({n.op for n in nodes} - set(onnx_ops.OPS))
    if unknown:
      raise NotImplementedError(f"unsupported ONNX ops {unknown}")
  except NotImplementedError as e:
    raise NotImplementedError(f"{path}: {e}") from None

  # Conv weights are stored HWIO for the NHWC convolution.
  conv_weights = {n.inputs[1] for n in nodes if n.op in ("Conv", "FusedConv", "ConvInteger")}
  params, static = {}, {}
  for name in needed:
    if name not in consts:
      continue
    v = consts[name]
    if name in conv_weights:
      v = np.transpose(v, (2, 3, 1, 0))
    if np.issubdtype(v.dtype, np.floating):
      params[name] = jnp.asarray(v, jnp.float32)
    elif not dequantize and v.dtype in (np.uint8, np.int8):
      static[name] = v.astype(np.float32)   # literal integer ops run on exact floats
    else:
      static[name] = v
  dropout_nodes = _dfanet_convs(nodes, inputs[0], consts)
  return params, Graph(tuple(nodes), inputs[0], outputs, static, dropout_nodes)


def make_apply(graph: Graph) -> Callable:
  """apply_graph(params, x, *, dropout_rate=0.0, rng=None) -> output (or tuple)."""

  def apply_graph(params, x, *, dropout_rate: float = 0.0, rng=None):
    use_dropout = dropout_rate > 0.0 and rng is not None
    if use_dropout and not graph.dropout_nodes:
      raise ValueError("DFANet dropout needs float convolutions; this graph has none "
                       "(quantised ops run literally? load with dequantize=True)")
    env: dict[str, Any] = {graph.input_name: jnp.asarray(x, jnp.float32)}
    nhwc: set[str] = set()

    def fetch(name):
      if name == "":
        return None
      if name in env:
        return env[name]
      if name in params:
        return params[name]
      return graph.static[name]

    for node in graph.nodes:
      args = [fetch(i) for i in node.inputs]
      if node.op in onnx_ops.LAYOUT_OPS:
        if node.inputs[0] not in nhwc:
          args[0] = onnx_ops.to_nhwc(args[0])
        outs, out_nhwc = onnx_ops.OPS[node.op](node, *args), True
      elif node.op in onnx_ops.ELEMENTWISE and any(i in nhwc for i in node.inputs):
        args = [a if a is None or i in nhwc else onnx_ops.broadcast_nhwc(jnp.asarray(a))
                for i, a in zip(node.inputs, args)]
        outs, out_nhwc = onnx_ops.OPS[node.op](node, *args), True
      else:
        args = [onnx_ops.to_nchw(a) if i in nhwc else a for i, a in zip(node.inputs, args)]
        outs, out_nhwc = onnx_ops.OPS[node.op](node, *args), False
      if use_dropout and node.index in graph.dropout_nodes:
        outs = (base.dropout(outs[0], dropout_rate, jax.random.fold_in(rng, node.index)),)
      for name, v in zip(node.outputs, outs):
        env[name] = v
        if out_nhwc and v.ndim == 4:
          nhwc.add(name)

    ys = tuple(onnx_ops.to_nchw(env[o]) if o in nhwc else env[o] for o in graph.output_names)
    return ys[0] if len(ys) == 1 else ys

  return apply_graph


def load_onnx(path: str | os.PathLike, dequantize: bool = True):
  """-> (params, apply_graph) for the raw graph (its own input layout, NCHW here)."""
  params, graph = parse_onnx(path, dequantize=dequantize)
  return params, make_apply(graph)


def op_list(path: str | os.PathLike, dequantize: bool = True) -> list[str]:
  """The op types apply_graph executes (after folding and rewriting)."""
  return sorted({n.op for n in parse_onnx(path, dequantize)[1].nodes})
