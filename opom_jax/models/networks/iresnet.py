"""IResNet-18 / IResNet-50 face-recognition backbones (512-d), NHWC.

Same layout as the IResNet of insightface's arcface_torch:

  stem   conv3x3(64) -> BN -> PReLU
  stages IBasicBlock x layers[i], widths 64/128/256/512, first block stride 2
         BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN  (+ shortcut)
  head   BN -> flatten -> fc 512 -> BN1d ("features")

It is a frozen surrogate, so every BatchNorm uses its running statistics.
Parameter names follow the torch module names (conv1, layer3_5/bn2, ...), so
``benchmarks/torch_reference.py`` and a future weight importer can map them
one to one. One deliberate difference: we flatten NHWC, i.e. in (h, w, c)
order, where torch flattens (c, h, w); the fc kernel rows are permuted
accordingly when copying weights across.

Variables are the usual flax dict {"params": ..., "batch_stats": ...}.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from opom_jax.models import base, ops

LAYERS = {18: (2, 2, 2, 2), 50: (3, 4, 14, 3)}
WIDTHS = (64, 128, 256, 512)
EMB_DIM = 512

# torch's BatchNorm eps; momentum is irrelevant since statistics are frozen.
_BatchNorm = functools.partial(
    nn.BatchNorm, use_running_average=True, epsilon=1e-5, momentum=0.9)


def _conv3x3(features, strides=1, name=None):
  # Explicit symmetric padding: "SAME" pads (0, 1) for stride 2 on even inputs,
  # torch pads (1, 1); the two give different outputs.
  return nn.Conv(features, (3, 3), strides=strides, padding=((1, 1), (1, 1)),
                 use_bias=False, name=name)


class PReLU(nn.Module):
  """Per-channel PReLU, initialised at 0.25 like torch.nn.PReLU(channels)."""

  @nn.compact
  def __call__(self, x):
    slope = self.param("negative_slope", nn.initializers.constant(0.25),
                       (x.shape[-1],))
    return jnp.where(x >= 0, x, slope * x)


def _dfanet_dropout(module: nn.Module, x, rate: float):
  if rate > 0.0 and module.has_rng("dropout"):
    return base.dropout(x, rate, module.make_rng("dropout"))
  return x


class IBasicBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, dropout_rate: float = 0.0):
    y = _BatchNorm(name="bn1")(x)
    y = _conv3x3(self.features, name="conv1")(y)
    y = _dfanet_dropout(self, y, dropout_rate)
    y = _BatchNorm(name="bn2")(y)
    y = PReLU(name="prelu")(y)
    y = _conv3x3(self.features, self.strides, name="conv2")(y)
    y = _dfanet_dropout(self, y, dropout_rate)
    y = _BatchNorm(name="bn3")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False,
                  name="downsample_conv")(x)
      x = _BatchNorm(name="downsample_bn")(x)
    return y + x


class IResNet(nn.Module):
  layers: Sequence[int]
  num_features: int = EMB_DIM

  @nn.compact
  def __call__(self, x, dropout_rate: float = 0.0):
    x = _conv3x3(WIDTHS[0], name="conv1")(x)
    x = _dfanet_dropout(self, x, dropout_rate)
    x = _BatchNorm(name="bn1")(x)
    x = PReLU(name="prelu")(x)
    for stage, (width, blocks) in enumerate(zip(WIDTHS, self.layers)):
      for i in range(blocks):
        # flax convolutions bypass ops.conv2d: the blocks' outputs are what is recorded
        x = ops.record(IBasicBlock(width, strides=2 if i == 0 else 1,
                                   name=f"layer{stage + 1}_{i}")(x, dropout_rate))
    x = _BatchNorm(name="bn2")(x)
    # insightface's head dropout defaults to p=0: nothing to do here.
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.num_features, name="fc")(x)
    return _BatchNorm(name="features")(x)


def _check_depth(depth: int):
  if depth not in LAYERS:
    raise ValueError(
        f"iresnet: depth must be one of {sorted(LAYERS)}, "
        f"got {depth!r}.")


def iresnet(depth: int) -> IResNet:
  _check_depth(depth)
  return IResNet(layers=LAYERS[depth])


# Non-kernel leaves start where flax/torch start them.
_CONSTANT_INIT = {"scale": 1.0, "bias": 0.0, "negative_slope": 0.25,
                  "mean": 0.0, "var": 1.0}


@functools.partial(jax.jit, static_argnums=0)
def init_iresnet(depth: int, rng) -> dict:
  """Random-init variables {"params", "batch_stats"} for IResNet-`depth`.

  Kernels are lecun-normal (std 1/sqrt(fan_in)), drawn as one flat sample:
  flax's own init compiles one truncated-normal sampler per leaf, which
  takes ~30 s of XLA CPU compile for r18 on 2 busy cores; this ~2 s.
  """
  model = iresnet(depth)
  shapes = jax.eval_shape(model.init, rng,
                          jax.ShapeDtypeStruct((1,) + base.CANONICAL_SHAPE, jnp.float32))
  paths_and_shapes, tree = jax.tree_util.tree_flatten_with_path(shapes)
  kernel_sizes = [s.size for p, s in paths_and_shapes if p[-1].key == "kernel"]
  noise = jax.random.normal(rng, (sum(kernel_sizes),), jnp.float32)
  leaves, offset = [], 0
  for path, shape in paths_and_shapes:
    name = path[-1].key
    if name == "kernel":
      fan_in = math.prod(shape.shape[:-1])
      chunk = jax.lax.dynamic_slice_in_dim(noise, offset, shape.size)
      leaves.append(chunk.reshape(shape.shape) / math.sqrt(fan_in))
      offset += shape.size
    elif name in _CONSTANT_INIT:
      leaves.append(jnp.full(shape.shape, _CONSTANT_INIT[name], shape.dtype))
    else:
      raise ValueError(f"init_iresnet: no initialiser for leaf {path}.")
  return jax.tree.unflatten(tree, leaves)


def iresnet_apply(depth: int):
  """apply(variables, x, *, dropout_rate=0.0, rng=None) -> (N, 512) raw embedding.

  x is the canonical (N, 112, 112, 3) RGB batch in 0..255 (see base.py).
  dropout_rate > 0 with rng turns on DFANet dropout; dropout_rate must be a
  Python float (it selects the graph), rng may be traced.
  """
  model = iresnet(depth)

  def apply(variables, x, *, dropout_rate: float = 0.0, rng=None):
    base.check_canonical(x, f"iresnet{depth} apply")
    x = (jnp.asarray(x, jnp.float32) - 127.5) / 127.5
    rngs = {"dropout": rng} if dropout_rate > 0.0 and rng is not None else {}
    return model.apply(variables, x, dropout_rate, rngs=rngs)

  return apply


def param_count(variables) -> int:
  """Number of learnable parameters (the "params" collection, as torch counts)."""
  return sum(p.size for p in jax.tree.leaves(variables["params"]))


def save_iresnet(variables, path: str | os.PathLike, *, overwrite: bool = False):
  """Writes an orbax checkpoint directory at `path` (made absolute)."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.fspath(path))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, variables, force=overwrite)
    ckptr.wait_until_finished()


def load_iresnet(depth: int, path: str | os.PathLike):
  """Restores a checkpoint written by save_iresnet -> (variables, apply)."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"load_iresnet: no orbax checkpoint directory at {path}.")
  target = jax.eval_shape(functools.partial(init_iresnet, depth),
                          jax.random.key(0))
  with ocp.StandardCheckpointer() as ckptr:
    variables = ckptr.restore(path, target)
  return variables, iresnet_apply(depth)
