"""The ONNX ops the importer runs, as jax functions, and the layout they see.

Activations flow NHWC (XLA:CPU's fast layout) while ONNX speaks NCHW, so the
op table is split by what layout an op sees: elementwise ops are layout-blind
(their operands are made to agree), convolutions take and give NHWC, every
other op sees NCHW. `onnx_import.make_apply` inserts the transposes. Each op
is fn(node, *inputs) -> tuple of outputs; `node.attrs` holds its attributes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import ops

# ONNX TensorProto element types the graphs use.
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64,
                10: np.float16, 11: np.float64}


# ---------------------------------------------------------------- layout helpers
# Activations flow NHWC; `nhwc` (a set of value names) says which 4-D values are
# stored transposed. Constants and non-4-D values are always in ONNX (NCHW) order.

def to_nchw(x):
  return jnp.transpose(x, (0, 3, 1, 2))


def to_nhwc(x):
  return jnp.transpose(x, (0, 2, 3, 1))


def broadcast_nhwc(x):
  """An NCHW-semantics operand (any rank <= 4) made to broadcast against NHWC."""
  if x.ndim == 0:
    return x
  x = jnp.reshape(x, (1,) * (4 - x.ndim) + tuple(x.shape))
  return to_nhwc(x)


# ------------------------------------------------------------------------- ops

def _conv_nhwc(x, w_hwio, b, attrs):
  """ONNX Conv semantics on NHWC input and HWIO weights."""
  if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
    raise NotImplementedError(f"Conv auto_pad={attrs['auto_pad']!r} is not supported")
  pads = attrs.get("pads", [0, 0, 0, 0])
  y = ops.conv2d(
      x, w_hwio.astype(x.dtype), strides=tuple(attrs.get("strides", (1, 1))),
      padding=((pads[0], pads[2]), (pads[1], pads[3])),
      dilation=tuple(attrs.get("dilations", (1, 1))), groups=attrs.get("group", 1))
  if b is not None:
    y = y + b
  return y


def _conv(node, x, w, b=None):
  return (_conv_nhwc(x, w, b, node.attrs),)


def _conv_integer(node, xq, wq, x_zp=None, w_zp=None):
  # Literal mode: exact integer operands, float32 accumulation.
  x = xq - (0.0 if x_zp is None else x_zp)
  w = wq - (0.0 if w_zp is None else w_zp)
  return (_conv_nhwc(x, w, None, node.attrs),)


def _matmul_integer(node, xq, wq, x_zp=None, w_zp=None):
  x = xq - (0.0 if x_zp is None else x_zp)
  w = wq - (0.0 if w_zp is None else w_zp)
  return (jnp.matmul(x, w, precision=ops.PRECISION),)


def _fused_matmul(node, x, w, b=None):
  y = jnp.matmul(x, w, precision=ops.PRECISION)
  return (y if b is None else y + b,)


def _dynamic_quantize_linear(node, x):
  # ONNX spec: the range is widened to include 0, uint8, round half to even.
  lo = jnp.minimum(jnp.min(x), 0.0)
  hi = jnp.maximum(jnp.max(x), 0.0)
  scale = (hi - lo) / 255.0
  zp = jnp.clip(jnp.round(-lo / scale), 0, 255)
  xq = jnp.clip(jnp.round(x / scale) + zp, 0, 255)
  return xq, scale, zp


def _clip(node, x, lo=None, hi=None):
  lo = node.attrs.get("min") if lo is None else lo
  hi = node.attrs.get("max") if hi is None else hi
  if lo is not None:
    x = jnp.maximum(x, lo)
  if hi is not None:
    x = jnp.minimum(x, hi)
  return (x,)


def _prelu(node, x, slope):
  return (jnp.where(x >= 0, x, x * slope),)


def _batch_norm(node, x, scale, bias, mean, var):
  eps = node.attrs.get("epsilon", 1e-5)
  shape = (1, -1) + (1,) * (x.ndim - 2)     # channel axis 1 (NCHW)
  inv = scale / jnp.sqrt(var + eps)
  return ((x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape),)


def _flatten(node, x):
  axis = node.attrs.get("axis", 1)
  lead = int(np.prod(x.shape[:axis]))
  return (jnp.reshape(x, (lead, -1)),)


def _gemm(node, a, b, c=None):
  a = a.T if node.attrs.get("transA", 0) else a
  b = b.T if node.attrs.get("transB", 0) else b
  y = node.attrs.get("alpha", 1.0) * jnp.matmul(a, b, precision=ops.PRECISION)
  if c is not None:
    y = y + node.attrs.get("beta", 1.0) * c
  return (y,)


def _cast(node, x):
  to = node.attrs["to"]
  if to not in _ONNX_DTYPES:
    raise NotImplementedError(f"Cast to ONNX type {to} is not supported")
  dtype = _ONNX_DTYPES[to]
  # Literal-mode integer tensors are carried as exact floats; keep them float.
  return (x if np.issubdtype(dtype, np.integer) and x.dtype == jnp.float32
          else x.astype(dtype),)


def _unary(fn):
  return lambda node, x: (fn(x),)


def _binary(fn):
  return lambda node, a, b: (fn(a, b),)


def reshape(node, x, shape):
  shape = [int(s) for s in np.asarray(shape)]
  allow_zero = node.attrs.get("allowzero", 0)
  if not allow_zero:
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
  return (jnp.reshape(x, shape),)


def _batch_reshape(node, x, shape):
  """Reshape of an activation: a leading 1 (export-time batch) keeps the batch."""
  shape = np.array(shape, np.int64)
  if shape.size and shape[0] in (0, 1) and x.ndim >= 1:
    shape[0] = x.shape[0]
  return reshape(node, x, shape)


ELEMENTWISE = {
    "Add": _binary(jnp.add), "Sub": _binary(jnp.subtract),
    "Mul": _binary(jnp.multiply), "Div": _binary(jnp.divide),
    "Relu": _unary(jax.nn.relu), "Sigmoid": _unary(jax.nn.sigmoid),
    "Identity": _unary(lambda x: x), "Clip": _clip, "PRelu": _prelu,
    "Cast": _cast, "DynamicQuantizeLinear": _dynamic_quantize_linear,
}
LAYOUT_OPS = {  # NHWC in, NHWC out
    "Conv": _conv, "FusedConv": _conv, "ConvInteger": _conv_integer,
}
NCHW_OPS = {
    "Reshape": _batch_reshape, "Flatten": _flatten,
    "BatchNormalization": _batch_norm, "Gemm": _gemm,
    "MatMul": _binary(lambda a, b: jnp.matmul(a, b, precision=ops.PRECISION)),
    "MatMulInteger": _matmul_integer, "FusedMatMul": _fused_matmul,
}
OPS = {**ELEMENTWISE, **LAYOUT_OPS, **NCHW_OPS}
