"""bubbliiiing's MobileFaceNet (CASIA-WebFace, ArcFace loss, 128-d) as pure JAX functions.

Weights: ``bubbliiiing_arcface_mobilefacenet_casia.pth``, a legacy (pre-1.6)
torch pickle of a state_dict whose keys start with ``arcface.`` (the backbone
inside the authors' ``Arcface`` wrapper), read by `torch_reader`: no torch,
no plain unpickler.

Architecture (the authors' ``nets/mobilefacenet.py``): conv1 (3x3 s2, 64) ->
conv2_dw (3x3 depthwise) -> conv_23 (block 64->64, expand 128, s2) -> conv_3
(4 residual blocks, expand 128) -> conv_34 (64->128, expand 256, s2) -> conv_4
(6 residual, expand 256) -> conv_45 (128->128, expand 512, s2) -> conv_5
(2 residual, expand 256) -> sep (1x1, 512) BN PReLU -> GDC_dw (7x7 depthwise)
BN -> features (1x1, 128) BN. A block is 1x1 expand BN PReLU, 3x3 depthwise
BN PReLU, 1x1 project BN (no activation); BatchNorm eps 1e-5, running stats.
The embedding is the last BN's output flattened (the wrapper L2-normalises it).

Input: RGB, (x / 255 - 0.5) / 0.5 on the 112x112 ArcFace crop, as the
authors' predict code does.

params: a flat dict keyed by the torch names without the ``arcface.`` prefix;
conv kernels HWIO; ``num_batches_tracked`` dropped.

DFANet (dropout_rate > 0 and rng given): dropout after the convolution (before
its BN) of the stem (conv1, conv2_dw) and of the projection closing every
bottleneck block (the residual ones and the three strided ones): 2 + 15 sites,
layer i keyed ``fold_in(rng, i)`` in forward order.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import base
from opom_jax.models import ops
from opom_jax.models.importers import torch_reader

EMB_DIM = 128
_PREFIX = "arcface."
_BN_EPS = 1e-5
# (name, strided entry block, residual stage, residual blocks) in forward order.
_STAGES = (("conv_23", "conv_3", 4), ("conv_34", "conv_4", 6), ("conv_45", "conv_5", 2))
_PAD1 = ((1, 1), (1, 1))
_VALID = ((0, 0), (0, 0))


def _conv(x, w, stride=1, padding=_VALID, depthwise=False):
  return ops.conv2d(x, w, (stride, stride), padding, groups=x.shape[-1] if depthwise else 1)


def _bn(x, p, name):
  scale = p[name + ".weight"] * jax.lax.rsqrt(p[name + ".running_var"] + _BN_EPS)
  return (x - p[name + ".running_mean"]) * scale + p[name + ".bias"]


def _prelu(x, slope):
  return jnp.where(x >= 0, x, slope * x)


def _conv_block(x, p, name, stride=1, padding=_VALID, depthwise=False, drop=None):
  """The authors' Conv_block: conv -> BN -> PReLU; keys <name>.{conv,bn,prelu}."""
  y = _conv(x, p[name + ".conv.weight"], stride, padding, depthwise)
  y = drop(y) if drop is not None else y
  return _prelu(_bn(y, p, name + ".bn"), p[name + ".prelu.weight"])


def _block(x, p, name, stride, residual, drop):
  """Residual_Block: 1x1 expand, 3x3 depthwise, 1x1 project (Linear_block: conv -> BN)."""
  y = _conv_block(x, p, name + ".conv")
  y = _conv_block(y, p, name + ".conv_dw", stride, _PAD1, depthwise=True)
  y = _bn(drop(_conv(y, p[name + ".project.conv.weight"])), p, name + ".project.bn")
  return x + y if residual else y


def _network(p, x, drop):
  """(N,112,112,3) normalised input -> (N,128)."""
  x = _conv_block(x, p, "conv1", 2, _PAD1, drop=drop)
  x = _conv_block(x, p, "conv2_dw", 1, _PAD1, depthwise=True, drop=drop)
  for entry, stage, blocks in _STAGES:
    x = _block(x, p, entry, 2, False, drop)
    for i in range(blocks):
      x = _block(x, p, f"{stage}.model.{i}", 1, True, drop)
  x = _prelu(_bn(_conv(x, p["sep.weight"]), p, "sep_bn"), p["prelu.weight"])
  x = _bn(_conv(x, p["GDC_dw.weight"], depthwise=True), p, "GDC_bn")
  x = _bn(_conv(x, p["features.weight"]), p, "last_bn")
  return x.reshape(x.shape[0], -1)


def preprocess(x):
  """Canonical (N,112,112,3) RGB 0..255 -> (x / 255 - 0.5) / 0.5."""
  return (jnp.asarray(x, jnp.float32) / 255.0 - 0.5) / 0.5


def apply(params, x, *, dropout_rate: float = 0.0, rng=None):
  """Canonical (N,112,112,3) RGB 0..255 -> raw (N,128) embedding."""
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 4 or x.shape[1:] != (112, 112, 3):
    raise ValueError(f"bubbliiiing_mbf: expected (N, 112, 112, 3) RGB 0..255, got {x.shape}")
  return _network(params, preprocess(x), base.LayerDropout(dropout_rate, rng))


def convert_state_dict(sd: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """torch state_dict (from `torch_reader.load_state_dict`) -> params for `apply`."""
  if not sd or not all(k.startswith(_PREFIX) for k in sd):
    raise ValueError(f"not bubbliiiing's Arcface state_dict: expected every key to start "
                     f"with {_PREFIX!r}, got e.g. {sorted(sd)[:3]}")
  params = torch_reader.conv_params(sd, _PREFIX)
  needed = ["conv1.conv.weight", "conv2_dw.conv.weight", "sep.weight", "GDC_dw.weight",
            "features.weight", "last_bn.running_var"]
  needed += [f"{stage}.model.{n - 1}.project.bn.running_var" for _, stage, n in _STAGES]
  extra = [f"{stage}.model.{n}.conv.conv.weight" for _, stage, n in _STAGES]
  missing = [k for k in needed if k not in params]
  surplus = [k for k in extra if k in params]
  if missing or surplus:
    raise ValueError(f"not bubbliiiing's MobileFaceNet: missing {missing}, unexpected {surplus}")
  return params


def load_bubbliiiing(path) -> tuple[dict, base.ApplyFn]:
  """Reads ``bubbliiiing_arcface_mobilefacenet_casia.pth`` (no torch needed) -> (params, apply)."""
  return convert_state_dict(torch_reader.load_state_dict(path)), apply
