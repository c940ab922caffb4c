"""Xiaoccer's MobileFaceNet (CASIA-WebFace, ArcFace loss, 128-d) as pure JAX functions.

Weights: ``xiaoccer_mobilefacenet_casia.ckpt``, a legacy torch checkpoint
``{'epoch', 'net_state_dict'}`` read by `torch_reader` (no torch needed).

Input adaptation: the canonical ArcFace 112x112 frame holds the SphereFace
96x112 frame the network was trained on (same template, x shifted by 8), so
columns 8..103 are cropped; then (x - 127.5) / 128 as in the authors' code.
BatchNorm runs in inference mode on the stored running statistics.

Embedding: the network's 128-d output, as ``MobileFacenet.forward`` returns
it. The authors' LFW script additionally concatenates the embedding of the
horizontally mirrored image (256-d) and subtracts a per-fold mean before
normalising; ``load_xiaoccer(..., flip_concat=True)`` gives the 256-d
image+mirror embedding (the fold mean is an evaluation detail left out).

params: a flat dict keyed by the torch names; conv kernels are HWIO,
``num_batches_tracked`` is dropped.

DFANet rule (dropout_rate > 0 and rng given): dropout on the output of every
convolution of the stem (conv1, dw_conv1) and of every bottleneck block
(expansion 1x1, depthwise 3x3, projection 1x1; all 15 blocks, residual or
not), directly after the convolution, before its BatchNorm. conv2 and the
GDConv / linear embedding layers are left alone. Layer i uses
``jax.random.fold_in(rng, i)``, i counted in forward order (the mirrored pass
of flip_concat uses ``fold_in(rng, 1)`` as its base key, the plain pass
``fold_in(rng, 0)``). 47 dropout layers make this network sensitive: on
aligned LFW faces the cosine between the dropout and the clean embedding was
0.79-0.91 at rate 0.02, 0.51-0.78 at 0.05 and 0.0-0.48 at 0.1.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import base
from opom_jax.models import ops
from opom_jax.models.importers import torch_reader

EMB_DIM = 128
# (expansion t, out channels c, repeats n, first stride s), as the authors' network defines them.
_BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
_BN_EPS = 1e-5
_CROP_X = slice(8, 104)  # SphereFace 96-wide frame inside the ArcFace 112 frame


def _conv(x, w, stride=1, padding=((1, 1), (1, 1)), depthwise=False):
  # Explicit symmetric padding: 'SAME' would pad (0, 1) for stride 2 on even sizes.
  if padding == "VALID":
    padding = ((0, 0), (0, 0))
  return ops.conv2d(x, w, (stride, stride), padding, groups=x.shape[-1] if depthwise else 1)


def _bn(x, p, name):
  scale = p[name + ".weight"] * jax.lax.rsqrt(p[name + ".running_var"] + _BN_EPS)
  return (x - p[name + ".running_mean"]) * scale + p[name + ".bias"]


def _prelu(x, p, name):
  """Per-channel PReLU (Flax's PReLU has a single slope)."""
  return jnp.where(x >= 0, x, p[name + ".weight"] * x)


def _conv_bn(x, p, name, drop, stride=1, padding=((1, 1), (1, 1)), depthwise=False,
             act=True):
  """The authors' ConvBlock: conv -> BN [-> PReLU]; keys <name>.{conv,bn,prelu}."""
  x = drop(_conv(x, p[name + ".conv.weight"], stride, padding, depthwise))
  x = _bn(x, p, name + ".bn")
  return _prelu(x, p, name + ".prelu") if act else x


def _bottleneck(x, p, name, stride, drop):
  c = name + ".conv."
  y = drop(_conv(x, p[c + "0.weight"], padding="VALID"))
  y = _prelu(_bn(y, p, c + "1"), p, c + "2")
  y = drop(_conv(y, p[c + "3.weight"], stride, depthwise=True))
  y = _prelu(_bn(y, p, c + "4"), p, c + "5")
  y = drop(_conv(y, p[c + "6.weight"], padding="VALID"))
  y = _bn(y, p, c + "7")
  return x + y if stride == 1 and x.shape == y.shape else y


def _network(p, x, drop):
  """(N,112,96,3) normalised input -> (N,128)."""
  x = _conv_bn(x, p, "conv1", drop, stride=2)
  x = _conv_bn(x, p, "dw_conv1", drop, depthwise=True)
  i = 0
  for _, _, n, s in _BOTTLENECKS:
    for r in range(n):
      x = _bottleneck(x, p, f"blocks.{i}", s if r == 0 else 1, drop)
      i += 1
  no_drop = lambda v: v
  x = _conv_bn(x, p, "conv2", no_drop, padding="VALID")
  x = _conv_bn(x, p, "linear7", no_drop, padding="VALID", depthwise=True, act=False)
  x = _conv_bn(x, p, "linear1", no_drop, padding="VALID", act=False)
  return x.reshape(x.shape[0], -1)


def preprocess(x):
  """Canonical (N,112,112,3) RGB 0..255 -> the network's (N,112,96,3) input."""
  x = jnp.asarray(x, jnp.float32)[:, :, _CROP_X, :]
  return (x - 127.5) / 128.0


def apply(params, x, *, dropout_rate: float = 0.0, rng=None, flip_concat: bool = False):
  """Canonical (N,112,112,3) RGB 0..255 -> raw (N,128) embedding ((N,256) with flip_concat)."""
  x = preprocess(x)
  if not flip_concat:
    return _network(params, x, base.LayerDropout(dropout_rate, rng))
  keys = (None, None) if rng is None else (jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1))
  return jnp.concatenate([
      _network(params, x, base.LayerDropout(dropout_rate, keys[0])),
      _network(params, x[:, :, ::-1, :], base.LayerDropout(dropout_rate, keys[1]))], -1)


def convert_state_dict(sd: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """torch state_dict (from `torch_reader.load_state_dict`) -> params for `apply`."""
  params = torch_reader.conv_params(sd)
  n_blocks = sum(n for _, _, n, _ in _BOTTLENECKS)
  needed = ["conv1.conv.weight", "dw_conv1.conv.weight", "conv2.conv.weight",
            "linear7.conv.weight", "linear1.bn.running_var",
            f"blocks.{n_blocks - 1}.conv.7.running_var"]
  missing = [k for k in needed if k not in params]
  if missing or f"blocks.{n_blocks}.conv.0.weight" in params:
    raise ValueError(
        f"not Xiaoccer's MobileFaceNet state_dict: missing {missing} or more than "
        f"{n_blocks} bottleneck blocks.")
  return params


def load_xiaoccer(path, *, flip_concat: bool = False) -> tuple[dict, base.ApplyFn]:
  """Reads ``xiaoccer_mobilefacenet_casia.ckpt`` (no torch needed) -> (params, apply).

  flip_concat=True returns the authors' LFW-evaluation embedding: 128-d of the
  image followed by 128-d of its mirror image (256-d).
  """
  params = convert_state_dict(torch_reader.load_state_dict(path))
  return params, functools.partial(apply, flip_concat=flip_concat) if flip_concat else apply


def load_xiaoccer_flip(path) -> tuple[dict, base.ApplyFn]:
  """The authors' LFW embedding: 128-d of the face and 128-d of its mirror image."""
  return load_xiaoccer(path, flip_concat=True)
