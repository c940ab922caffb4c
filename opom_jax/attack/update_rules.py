"""Update rules of the universal-mask attack as optax gradient transformations.

The attack ascends the loss, so the "updates" these chains emit are *added*
to the per-photo adversarial images by `optax.apply_updates`. Gradients have
shape (N, H, W, C) for one identity; `valid` (N,) marks the real photos.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from opom_jax.registry import Registry


def masked_photo_mean(x, valid):
  """Mean of x (N, ...) over the real photos (valid (N,)) -> (...)."""
  m = valid.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.sum(x * m, axis=0) / jnp.maximum(m.sum(), 1.0)


def photo_mean(valid) -> optax.GradientTransformation:
  """Replaces each photo's gradient by the mean gradient over the real photos."""
  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: jnp.broadcast_to(
        masked_photo_mean(g, valid), g.shape), updates), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def normalize_by_mean_abs(axis=(0, 1, 3)) -> optax.GradientTransformation:
  """Divides the gradient by its mean absolute value.

  The reference reduces dims (0, 1, 2) of its NCHW gradient, leaving one
  normaliser per image *column*; in our NHWC layout that is axes (0, 1, 3).
  """
  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: g / jnp.maximum(
        jnp.mean(jnp.abs(g), axis=axis, keepdims=True), 1e-12), updates), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def sign() -> optax.GradientTransformation:
  return optax.stateless(lambda updates, params=None: jax.tree.map(jnp.sign, updates))


def base_rule(valid, step_size: float) -> optax.GradientTransformation:
  """The reference's FIM: step * sign(mean gradient over the photos)."""
  return optax.chain(photo_mean(valid), sign(), optax.scale(step_size))


def transfer_rule(valid, step_size: float) -> optax.GradientTransformation:
  """The reference's DFANet_MFIM: momentum of mean-abs-normalised gradients, decay 1.

  Each photo keeps its own accumulated gradient and takes a signed step; the
  universal projection afterwards averages the perturbations.
  """
  del valid
  return optax.chain(normalize_by_mean_abs(), optax.trace(decay=1.0),
                     sign(), optax.scale(step_size))


RULES: Registry[Callable[..., optax.GradientTransformation]] = Registry("update rule", {
    "base": base_rule,
    "transfer": transfer_rule,
})
