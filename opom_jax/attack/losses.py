"""Feature-space losses of OPOM and its baselines, looked up by name.

Every loss is *maximised* by the attack. Signature:

    loss(adv, clean, valid, step, *, lower, upper, nter, reduced_upper) -> scalar

``adv`` and ``clean`` are raw (N, d) embeddings of the protected and clean
photos of one identity (padded to N), ``valid`` marks the real photos, ``step``
is the attack iteration (traced). As in the reference, features are
L2-normalised inside the loss and the clean features carry no gradient.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from opom_jax.attack import subspace
from opom_jax.models.base import l2_normalize
from opom_jax.registry import Registry

LossFn = Callable[..., jax.Array]


def _prepare(adv, clean, valid):
  y = l2_normalize(adv)
  c = jax.lax.stop_gradient(l2_normalize(clean))
  m = valid.astype(y.dtype)
  return y, c, m, jnp.maximum(m.sum(), 1.0)


def _mean_sq_dist(y, targets, m, n):
  # torch.nn.MSELoss averages over every element: the same scale as the reference.
  per_sample = jnp.sum((y - targets) ** 2, axis=-1) / y.shape[-1]
  return jnp.sum(per_sample * m) / n


def fi_uap(adv, clean, valid, step, **_):
  """FI-UAP: push each protected feature away from its own clean feature."""
  y, c, m, n = _prepare(adv, clean, valid)
  return _mean_sq_dist(y, c, m, n)


def fi_uap_plus(adv, clean, valid, step, **_):
  """FI-UAP+: minimise the mean cosine between every protected and every clean feature."""
  y, c, m, n = _prepare(adv, clean, valid)
  pair = m[:, None] * m[None, :]
  return -jnp.sum((y @ c.T) * pair) / (n * n)


def class_center(adv, clean, valid, step, **_):
  """OPOM-CC: distance to the mean of the clean features (not renormalised)."""
  y, c, m, n = _prepare(adv, clean, valid)
  return _mean_sq_dist(y, (m / n) @ c, m, n)


def _hull_loss(kind, adv, clean, valid, lower, upper):
  y, c, m, n = _prepare(adv, clean, valid)
  proj = subspace.project(kind, c, valid, jax.lax.stop_gradient(y),
                          lower=lower, upper=upper)
  # Envelope theorem: the gradient of the distance to the set equals the
  # gradient of ||y - C^T w*||^2 with the optimal weights w* held fixed.
  w = jax.lax.stop_gradient(proj.weights)
  return _mean_sq_dist(y, w @ c, m, n)


def affine_hull(adv, clean, valid, step, **_):
  """OPOM-AH: distance to the affine hull of the clean features."""
  return _hull_loss("affine_hull", adv, clean, valid, 0.0, 1.0)


def convex_hull(adv, clean, valid, step, *, lower=0.0, upper=1.0, nter=5, **_):
  """OPOM-CH: distance to the (reduced) convex hull, after `nter` class-centre steps.

  The reference warms up with the class-centre weights w = 1/N for the first
  `nter` iterations to push the features out of the hull first.
  """
  hull = _hull_loss("convex_hull", adv, clean, valid, lower, upper)
  center = class_center(adv, clean, valid, step)
  return jnp.where(step < nter, center, hull)


def reduced_convex_hull(adv, clean, valid, step, *, lower=0.0, nter=5, reduced_upper=0.5, **_):
  """OPOM-CH on the reduced hull: no photo may carry more than `reduced_upper` of the weight.

  A method of its own (beside convex_hull at upper=1) so one run compares both.
  """
  return convex_hull(adv, clean, valid, step, lower=lower, upper=reduced_upper, nter=nter)


LOSSES: Registry[LossFn] = Registry("loss", {
    "fi_uap": fi_uap,
    "fi_uap_plus": fi_uap_plus,
    "class_center": class_center,
    "affine_hull": affine_hull,
    "convex_hull": convex_hull,
    "reduced_convex_hull": reduced_convex_hull,
})
