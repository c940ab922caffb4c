"""Layer primitives shared by the importers and the networks.

Depthwise convolutions have two kernel paths (DEPTHWISE_PATHS), equal in value:

- `shifted`: a sum of kh*kw shifted, strided slices times per-channel weights.
  XLA's CPU backend runs grouped convolutions 10-50x slower than this
  elementwise form, forward and especially backward (measured on
  10x56x56x128, 3x3: forward 222 ms vs 19 ms, input gradient of a stride-2
  conv 1222 ms vs 23 ms), and MobileFaceNets are mostly depthwise convolutions.
- `grouped`: XLA's grouped convolution (feature_group_count = channels), for
  which GPUs and TPUs have vendor kernels.

The environment variable OPOM_DEPTHWISE picks one: `shifted`, `grouped`,
`measure` (time both once per backend and shape: kernel_choice.fastest), or
`auto`, the default: shifted on CPU without measuring (the factor above; runs
stay bit-identical to earlier ones), measured on other backends (grouped if
the measurement fails). The choice is made while a program is traced, so a
jitted program keeps the path it was traced with.

Inside `operands_in(jnp.bfloat16)` convolutions take bfloat16 operands and
accumulate and return float32 (base.ComputeIn: a bfloat16 surrogate forward).
Inside `recording()` convolution outputs are collected (an attack's feature loss).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os

import jax
import jax.numpy as jnp

from opom_jax.errors import UserError
from opom_jax.models import kernel_choice
from opom_jax.registry import Registry

# Full fp32 so that GPUs (TF32 by default) agree with the fp32 references.
PRECISION = jax.lax.Precision.HIGHEST


def _shifted_sum(xp, w_hw_c, strides, dilation, out_hw):
  kh, kw, _ = w_hw_c.shape
  (sh, sw), (dh, dw), (out_h, out_w) = strides, dilation, out_hw
  out = None
  for i in range(kh):
    for j in range(kw):
      patch = jax.lax.slice(
          xp, (0, i * dh, j * dw, 0),
          (xp.shape[0], i * dh + sh * (out_h - 1) + 1, j * dw + sw * (out_w - 1) + 1, xp.shape[3]),
          (1, sh, sw, 1))
      term = patch * w_hw_c[i, j].astype(xp.dtype)
      out = term if out is None else out + term
  return out


def _out_size(size, k, stride, dil):
  return (size - (dil * (k - 1) + 1)) // stride + 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv2d(x, w_hw_c, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)):
  """NHWC depthwise convolution (one output per channel); w is (kh, kw, C)."""
  (pt, pb), (pl, pr) = padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  kh, kw, _ = w_hw_c.shape
  out_hw = (_out_size(xp.shape[1], kh, strides[0], dilation[0]),
            _out_size(xp.shape[2], kw, strides[1], dilation[1]))
  return _shifted_sum(xp, w_hw_c, strides, dilation, out_hw)


def _dw_fwd(x, w, strides, padding, dilation):
  return depthwise_conv2d(x, w, strides, padding, dilation), (x, w)


def _dw_bwd(strides, padding, dilation, res, g):
  """Both gradients as shifted sums too (autodiff of the slices pads every term)."""
  x, w = res
  kh, kw, _ = w.shape
  (pt, pb), (pl, pr) = padding
  (sh, sw), (dh, dw) = strides, dilation
  n, h, wd, c = x.shape
  xp_h, xp_w = h + pt + pb, wd + pl + pr
  # Input gradient: correlate the stride-dilated output gradient with the flipped kernel.
  gd = jax.lax.pad(g, jnp.zeros((), g.dtype),
                   ((0, 0, 0), (dh * (kh - 1), xp_h - ((g.shape[1] - 1) * sh + 1), sh - 1),
                    (dw * (kw - 1), xp_w - ((g.shape[2] - 1) * sw + 1), sw - 1), (0, 0, 0)))
  gxp = _shifted_sum(gd, w[::-1, ::-1], (1, 1), dilation, (xp_h, xp_w))
  gx = gxp[:, pt:pt + h, pl:pl + wd, :]
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  out_h, out_w = g.shape[1:3]
  gw = jnp.stack([jnp.stack([
      jnp.sum(jax.lax.slice(xp, (0, i * dh, j * dw, 0),
                            (n, i * dh + sh * (out_h - 1) + 1, j * dw + sw * (out_w - 1) + 1, c),
                            (1, sh, sw, 1)) * g, axis=(0, 1, 2))
      for j in range(kw)]) for i in range(kh)])
  return gx, gw.astype(w.dtype)


depthwise_conv2d.defvjp(_dw_fwd, _dw_bwd)


def _xla_conv(x, w_hwio, strides, padding, dilation, groups, accumulate):
  return jax.lax.conv_general_dilated(
      x, w_hwio.astype(x.dtype), window_strides=tuple(strides), padding=tuple(padding),
      rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, precision=PRECISION, preferred_element_type=accumulate)


def _shifted_path(x, w_hwio, strides, padding, dilation, accumulate):
  if accumulate is not None:  # products of bfloat16 values are exact in float32
    x, w_hwio = x.astype(accumulate), w_hwio.astype(accumulate)
  return depthwise_conv2d(x, w_hwio[:, :, 0, :], strides, padding, dilation)


def _grouped_path(x, w_hwio, strides, padding, dilation, accumulate):
  return _xla_conv(x, w_hwio, strides, padding, dilation, x.shape[-1], accumulate)


# Each: fn(x, w_hwio (kh, kw, 1, C), strides, padding, dilation, accumulate dtype or None).
DEPTHWISE_PATHS = Registry("depthwise convolution path",
                           {"shifted": _shifted_path, "grouped": _grouped_path})
DEPTHWISE_ENV = "OPOM_DEPTHWISE"
AUTO, MEASURE = "auto", "measure"
# `auto` without measuring: CPU (see above); a backend not named here is measured.
STATIC_DEPTHWISE = {"cpu": "shifted"}
# Where measuring fails: the vendor kernel.
FALLBACK_DEPTHWISE = "grouped"


def depthwise_mode() -> str:
  """OPOM_DEPTHWISE: a path name, `measure` or `auto` (unset); UserError otherwise."""
  mode = os.environ.get(DEPTHWISE_ENV, "") or AUTO
  modes = [AUTO, MEASURE, *DEPTHWISE_PATHS.names()]
  if mode not in modes:
    raise UserError(f"{DEPTHWISE_ENV}={mode} is not a depthwise convolution path; "
                    f"choose from {modes}")
  return mode


def _input_gradient_program(path, strides, padding, dilation, accumulate):
  """What the attack asks of a convolution: its value and its input gradient."""
  def run(x, w):
    y, vjp = jax.vjp(lambda x: path(x, w, strides, padding, dilation, accumulate), x)
    return jnp.sum(y), vjp(jnp.ones_like(y))[0]
  return run


def depthwise_path(x, w_hwio, strides, padding, dilation, accumulate=None) -> str:
  """The name of the path a depthwise convolution of these shapes takes here (module doc)."""
  mode, backend = depthwise_mode(), jax.default_backend()
  if mode in DEPTHWISE_PATHS:
    return mode
  if mode == AUTO and backend in STATIC_DEPTHWISE:
    return STATIC_DEPTHWISE[backend]
  key = ("depthwise", backend, tuple(x.shape), str(x.dtype), tuple(w_hwio.shape),
         str(w_hwio.dtype), strides, padding, dilation, str(accumulate))
  programs = {name: _input_gradient_program(DEPTHWISE_PATHS[name], strides, padding, dilation,
                                            accumulate) for name in DEPTHWISE_PATHS}
  specs = [jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(w_hwio.shape, w_hwio.dtype)]
  return kernel_choice.fastest(key, programs, specs, FALLBACK_DEPTHWISE)


_OPERANDS = contextvars.ContextVar("opom_conv_operands", default=None)


@contextlib.contextmanager
def operands_in(dtype):
  """Convolutions traced inside take `dtype` operands and accumulate and return float32."""
  token = _OPERANDS.set(jnp.dtype(dtype))
  try:
    yield
  finally:
    _OPERANDS.reset(token)


_RECORDED = contextvars.ContextVar("opom_recorded_activations", default=None)


@contextlib.contextmanager
def recording():
  """Yields the list of activations that `record` sees while a forward is traced inside.

  Every convolution's output is recorded (and flax networks record their blocks'
  outputs), in forward order: an attack's feature loss reads an intermediate
  layer of any zoo network this way, without each network exposing its layers.
  """
  recorded = []
  token = _RECORDED.set(recorded)
  try:
    yield recorded
  finally:
    _RECORDED.reset(token)


def record(x):
  """x, added to the activations being recorded (if any)."""
  recorded = _RECORDED.get()
  if recorded is not None:
    recorded.append(x)
  return x


def conv2d(x, w_hwio, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
  """NHWC x HWIO convolution; pointwise ones are matmuls, depthwise ones take depthwise_path."""
  return record(_conv2d(x, w_hwio, strides, padding, dilation, groups))


def _conv2d(x, w_hwio, strides, padding, dilation, groups):
  operands = _OPERANDS.get()
  accumulate = None if operands is None else jnp.float32
  if operands is not None:
    x, w_hwio = x.astype(operands), w_hwio.astype(operands)
  channels = x.shape[-1]
  if (w_hwio.shape[:2] == (1, 1) and groups == 1 and tuple(strides) == (1, 1)
      and all(p == (0, 0) for p in map(tuple, padding))):
    # Pointwise: a matmul over channels (its gradient is ~5x faster than the conv's on CPU).
    return jnp.einsum("nhwc,cd->nhwd", x, w_hwio[0, 0].astype(x.dtype), precision=PRECISION,
                      preferred_element_type=accumulate)
  if groups > 1 and groups == channels and w_hwio.shape[2] == 1 and w_hwio.shape[3] == channels:
    args = (tuple(strides), tuple(map(tuple, padding)), tuple(dilation), accumulate)
    return DEPTHWISE_PATHS[depthwise_path(x, w_hwio, *args)](x, w_hwio, *args)
  return _xla_conv(x, w_hwio, strides, padding, dilation, groups, accumulate)
