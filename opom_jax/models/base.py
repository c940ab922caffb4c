"""The one calling convention every face-recognition model in the zoo follows.

A surrogate is a pair (params, apply) where

    apply(params, x, *, dropout_rate=0.0, rng=None) -> (N, d) float32

takes the canonical batch ``x``: (N, 112, 112, 3) float32, RGB, pixel values
0..255, aligned to the ArcFace 5-point template; it does its own adaptation
(crop, warp, channel order, normalisation) inside and returns the raw,
*un-normalised* embedding. ``dropout_rate > 0`` with a PRNG key ``rng`` turns
on DFANet: dropout after the convolutions of the stem and of every residual
block, so every call sees a slightly different surrogate.

A black-box runtime is an object with ``embed(images) -> (N, d) float32``
taking the canonical uint8 batch and returning L2-normalised embeddings; it
is never differentiated.

`in_compute_dtype(apply, "bfloat16")` is the same surrogate computed in
bfloat16 (ComputeIn); its embedding, and so the loss and the update, stay
float32.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import ops

ApplyFn = Callable[..., jax.Array]
# One image of the canonical batch: ArcFace-aligned 112x112 RGB.
CANONICAL_SHAPE = (112, 112, 3)


@dataclasses.dataclass(frozen=True)
class Surrogate:
  name: str
  params: Any
  apply: ApplyFn
  emb_dim: int

  def embed(self, x, **kw) -> jax.Array:
    return l2_normalize(self.apply(self.params, x, **kw))


# What a surrogate forward may compute in (RunConfig.compute_dtype).
FLOAT32, BFLOAT16 = "float32", "bfloat16"
COMPUTE_DTYPES = (FLOAT32, BFLOAT16)


@dataclasses.dataclass(frozen=True)
class ComputeIn:
  """`apply` with its floating params and input cast to `dtype`, its embedding float32.

  Every ops.conv2d inside takes `dtype` operands and accumulates in float32
  (an importer that casts its input back to float32 still gets low-precision
  convolutions; flax layers follow their bfloat16 params). A frozen dataclass,
  so equal wrappers hash equal and share jitted programs (run.learn).
  """
  apply: ApplyFn
  dtype: str

  def __call__(self, params, x, **kw) -> jax.Array:
    dtype = jnp.dtype(self.dtype)
    params = jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)
    with ops.operands_in(dtype):
      return self.apply(params, jnp.asarray(x).astype(dtype), **kw).astype(jnp.float32)


def in_compute_dtype(apply: ApplyFn, dtype: str) -> ApplyFn:
  """`apply` computed in `dtype` (one of COMPUTE_DTYPES); float32 is `apply` itself."""
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute dtype {dtype!r}; choose from {list(COMPUTE_DTYPES)}")
  return apply if dtype == FLOAT32 else ComputeIn(apply, dtype)


class Runtime(Protocol):
  name: str

  def embed(self, images: np.ndarray) -> np.ndarray:
    ...


def check_canonical(x, model: str):
  """Raises ValueError naming `model` unless x is a (N, 112, 112, 3) batch."""
  if x.ndim != 4 or tuple(x.shape[1:]) != CANONICAL_SHAPE:
    raise ValueError(f"{model}: expected the canonical (N, 112, 112, 3) RGB "
                     f"0..255 batch, got shape {tuple(x.shape)}")


def l2_normalize(v, axis=-1, eps=1e-12):
  """Unit rows (jax); a zero vector stays zero."""
  return v / jnp.maximum(jnp.linalg.norm(v, axis=axis, keepdims=True), eps)


def l2_normalize_np(v, axis=-1, eps=1e-12) -> np.ndarray:
  """l2_normalize in numpy, for the black-box runtimes; float32 stays float32."""
  v = np.asarray(v, np.result_type(v, np.float32))
  return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), eps)


def _fmix32(h):
  """MurmurHash3's 32-bit finaliser: a cheap, well-mixing bijection."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def dropout(x, rate: float, rng):
  """Inverted dropout, active whenever rate > 0 (DFANet keeps it on at test time).

  The keep mask is a counter-based hash of the element index under two
  32-bit seeds drawn from `rng`, not `jax.random.bernoulli`: on CPU,
  threefry bits for every activation made DFANet forwards ~1.7x slower
  (IR-50), the hash is ~10x cheaper and fuses into the consumer. Keep
  probability is exact to 2^-32.
  """
  if rate <= 0.0 or rng is None:
    return x
  s1, s2 = jax.random.bits(rng, (2,), jnp.uint32)
  index = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)
  h = _fmix32(_fmix32(index * jnp.uint32(0x9E3779B9) + s1) ^ s2)
  keep = h >= jnp.uint32(min(int(round(rate * 2.0**32)), 2**32 - 1))
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class LayerDropout:
  """Hands out one DFANet dropout per layer, each with its own folded key."""

  def __init__(self, rate: float, rng):
    self.rate, self.rng, self.count = rate, rng, 0

  def __call__(self, x):
    if self.rate <= 0.0 or self.rng is None:
      return x
    self.count += 1
    return dropout(x, self.rate, jax.random.fold_in(self.rng, self.count - 1))
