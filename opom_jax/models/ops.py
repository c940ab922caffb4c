"""Layer primitives shared by the importers and the networks.

Depthwise convolutions are written as a sum of kh*kw shifted, strided slices
times per-channel weights. XLA's CPU backend runs grouped convolutions
(feature_group_count = channels) 10-50x slower than this elementwise form,
forward and especially backward (measured on 10x56x56x128, 3x3: forward
222 ms vs 19 ms, input gradient of a stride-2 conv 1222 ms vs 23 ms), and
MobileFaceNets are mostly depthwise convolutions. Results are identical.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

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


def conv2d(x, w_hwio, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
  """NHWC x HWIO convolution; depthwise ones take the fast elementwise path."""
  channels = x.shape[-1]
  if (w_hwio.shape[:2] == (1, 1) and groups == 1 and tuple(strides) == (1, 1)
      and all(p == (0, 0) for p in map(tuple, padding))):
    # Pointwise: a matmul over channels (its gradient is ~5x faster than the conv's on CPU).
    return jnp.einsum("nhwc,cd->nhwd", x, w_hwio[0, 0].astype(x.dtype), precision=PRECISION)
  if groups > 1 and groups == channels and w_hwio.shape[2] == 1 and w_hwio.shape[3] == channels:
    return depthwise_conv2d(x, w_hwio[:, :, 0, :], tuple(strides),
                            tuple(map(tuple, padding)), tuple(dilation))
  return jax.lax.conv_general_dilated(
      x, w_hwio.astype(x.dtype), window_strides=tuple(strides), padding=tuple(padding),
      rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, precision=PRECISION)
