"""EdgeFace-XS (timm EdgeNeXt x_small backbone, 512-d head) as pure JAX functions.

Weights come from the official dynamically-quantised release
``edgeface_xs_q.pt`` (a torch zip state_dict): the qint8 Linear weights are
dequantised once, so this port is weight-only int8 with float activations
(the torch runtime also quantises activations per batch; the two agree to a
mean cosine of about 0.97).

params: a flat dict keyed by the torch names without the ``model.`` prefix;
conv kernels are HWIO, Linear kernels (in, out), ``xca.temperature`` (heads,).

DFANet rule (dropout_rate > 0 and rng given): dropout on the output of every
convolution of the stem and of every block, directly after the convolution
(before the LayerNorm that follows it): the 4x4 stem patch conv, each block's
k x k depthwise conv and each SDTA split conv (22 layers). The MLP Linears,
attention, downsampling layers and head are left alone. Layer i uses
``jax.random.fold_in(rng, i)``, i counted in forward order.
The reference's rate 0.1 nearly destroys this embedding: on aligned LFW
faces the cosine between the dropout and the clean embedding was 0.72-0.87
at rate 0.02, 0.51-0.66 at 0.05 and 0.14-0.44 at 0.1; pick the rate per
surrogate.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import base
from opom_jax.models import ops
from opom_jax.models.importers import torch_reader

EMB_DIM = 512
_DIMS = (32, 64, 100, 192)
_DEPTHS = (3, 3, 9, 3)
_KERNELS = (3, 5, 7, 9)
_SCALES = (2, 2, 3, 4)        # SDTA split chunks per stage
_SDTA = (False, True, True, True)  # last block of the stage is an SDTA block
_POS_EMB = (False, True, False, False)
_HEADS = 4
_LN_EPS = 1e-6
_POS_HIDDEN = 32


def _conv(x, w, b, stride=1, padding="SAME", groups=1):
  if padding == "SAME":  # stride-1, odd kernels only here: symmetric
    padding = tuple((k // 2, k // 2) for k in w.shape[:2])
  elif padding == "VALID":
    padding = ((0, 0), (0, 0))
  return ops.conv2d(x, w, (stride, stride), padding, groups=groups) + b


def _depthwise(x, p, name):
  return _conv(x, p[name + ".weight"], p[name + ".bias"], groups=x.shape[-1])


def _layer_norm(x, p, name):
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + _LN_EPS) * p[name + ".weight"] + p[name + ".bias"]


def _dense(x, p, name):
  return x @ p[name + ".weight"] + p[name + ".bias"]


def _mlp_branch(x, p, name):
  """gamma * fc2(GELU(fc1(LN(x)))): the inverted bottleneck of both block kinds."""
  x = _layer_norm(x, p, name + ".norm")
  x = _dense(x, p, name + ".mlp.fc1")
  x = jax.nn.gelu(x, approximate=False)  # timm uses the exact erf GELU
  x = _dense(x, p, name + ".mlp.fc2")
  return p[name + ".gamma"] * x


def _conv_block(x, p, name, drop):
  y = drop(_depthwise(x, p, name + ".conv_dw"))
  return x + _mlp_branch(y, p, name)


def _fourier_features(h: int, w: int) -> np.ndarray:
  """The input-independent (h, w, 64) sin/cos map of timm's PositionalEncodingFourier."""
  f32 = np.float32
  y = np.cumsum(np.ones((h, w), f32), 0, dtype=f32)
  x = np.cumsum(np.ones((h, w), f32), 1, dtype=f32)
  y = y / (y[-1:, :] + f32(1e-6)) * f32(2 * math.pi)
  x = x / (x[:, -1:] + f32(1e-6)) * f32(2 * math.pi)
  i = np.arange(_POS_HIDDEN, dtype=f32)
  dim_t = f32(10000) ** (2 * np.floor(i / 2) / _POS_HIDDEN).astype(f32)

  def encode(e):
    e = e[..., None] / dim_t
    return np.stack([np.sin(e[..., 0::2]), np.cos(e[..., 1::2])], -1).reshape(h, w, -1)

  return np.concatenate([encode(y), encode(x)], -1).astype(f32)


def _xca(t, p, name):
  """Cross-covariance attention: a (C/heads)^2 map per head, over channels."""
  n, tokens, c = t.shape
  qkv = _dense(t, p, name + ".qkv").reshape(n, tokens, 3, _HEADS, c // _HEADS)
  q, k, v = jnp.transpose(qkv, (2, 0, 3, 4, 1))  # each (n, heads, c/heads, tokens)

  def normalise(a):
    # = a / max(||a||, 1e-12) as F.normalize, with a gradient that stays
    # finite at 0 (stage 3's qkv weights are all zero).
    return a * jax.lax.rsqrt(jnp.maximum(jnp.sum(a * a, -1, keepdims=True), 1e-24))

  attn = jnp.einsum("nhdt,nhet->nhde", normalise(q), normalise(k))
  attn = jax.nn.softmax(attn * p[name + ".temperature"][:, None, None], -1)
  out = jnp.einsum("nhde,nhet->nthd", attn, v).reshape(n, tokens, c)
  return _dense(out, p, name + ".proj")


def _sdta_block(x, p, name, scales, pos_emb, drop):
  c = x.shape[-1]
  width = -(-c // scales)
  chunks = [x[..., i * width:(i + 1) * width] for i in range(scales)]
  outs, sp = [], None
  for i in range(scales - 1):
    sp = chunks[i] if i == 0 else sp + chunks[i]
    sp = drop(_depthwise(sp, p, f"{name}.convs.{i}"))
    outs.append(sp)
  y = jnp.concatenate(outs + [chunks[-1]], -1)
  n, h, w, _ = y.shape
  if pos_emb:
    proj = name + ".pos_embd.token_projection"
    y = y + (jnp.asarray(_fourier_features(h, w)) @ p[proj + ".weight"][0, 0] + p[proj + ".bias"])
  t = y.reshape(n, h * w, c)
  t = t + p[name + ".gamma_xca"] * _xca(_layer_norm(t, p, name + ".norm_xca"), p, name + ".xca")
  # The residual is the block input: the post-XCA tensor only feeds the MLP.
  return x + _mlp_branch(t.reshape(n, h, w, c), p, name)


def apply(params, x, *, dropout_rate: float = 0.0, rng=None):
  """Canonical (N,112,112,3) RGB 0..255 -> raw (N,512) EdgeFace embedding."""
  p = params
  drop = base.LayerDropout(dropout_rate, rng)
  x = (jnp.asarray(x, jnp.float32) / 255.0 - 0.5) / 0.5
  x = drop(_conv(x, p["stem.0.weight"], p["stem.0.bias"], stride=4, padding="VALID"))
  x = _layer_norm(x, p, "stem.1")
  for s in range(len(_DIMS)):
    stage = f"stages.{s}"
    if s > 0:
      # 7x7 -> 3x3 at stage 3: a VALID 2x2 stride-2 conv drops the last row/column.
      x = _layer_norm(x, p, stage + ".downsample.0")
      x = _conv(x, p[stage + ".downsample.1.weight"], p[stage + ".downsample.1.bias"],
                stride=2, padding="VALID")
    for b in range(_DEPTHS[s]):
      name = f"{stage}.blocks.{b}"
      if _SDTA[s] and b == _DEPTHS[s] - 1:
        x = _sdta_block(x, p, name, _SCALES[s], _POS_EMB[s], drop)
      else:
        x = _conv_block(x, p, name, drop)
  x = _layer_norm(jnp.mean(x, (1, 2)), p, "head.norm")
  return _dense(x, p, "head.fc")


def convert_state_dict(sd: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """torch state_dict (from `torch_reader.load_state_dict`) -> params for `apply`."""
  params = {}
  for key, value in sd.items():
    name = key[len("model."):] if key.startswith("model.") else key
    if value.ndim == 4:
      value = torch_reader.conv_kernel(value)
    elif value.ndim == 2:
      value = torch_reader.dense_kernel(value)
    elif name.endswith(".temperature"):
      value = value.reshape(-1)
    params[name] = jnp.asarray(value, jnp.float32)
  missing = sorted(set(_expected_keys()) - set(params))
  if missing:
    raise ValueError(f"EdgeFace-XS state_dict lacks {len(missing)} keys, e.g. {missing[:5]}.")
  return params


def _expected_keys():
  yield from ("stem.0.weight", "stem.0.bias", "stem.1.weight", "head.fc.weight")
  for s, depth in enumerate(_DEPTHS):
    if s > 0:
      yield f"stages.{s}.downsample.1.weight"
    for b in range(depth):
      yield f"stages.{s}.blocks.{b}.mlp.fc2.weight"


def load_edgeface(path) -> tuple[dict, base.ApplyFn]:
  """Reads ``edgeface_xs_q.pt`` (no torch needed) -> (params, apply)."""
  return convert_state_dict(torch_reader.load_state_dict(path)), apply
