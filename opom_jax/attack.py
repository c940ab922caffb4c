"""The universal, person-specific mask attack: pure, jit-compiled steps.

State is a plain pytree per identity; `make_attack` returns functions that are
vmapped over a batch of identities (B, N, H, W, C) with a validity mask
(B, N) for people with fewer photos, so one compiled program serves a whole
data set. Pixel units are 0..255 throughout.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from opom_jax import losses, update_rules
from opom_jax.diversity import input_diversity


@dataclasses.dataclass(frozen=True)
class AttackConfig:
  loss: str = "convex_hull"
  rule: str = "base"
  eps: float = 8.0
  step_size: float = 1.0
  iters: int = 16
  nter: int = 5
  lower: float = 0.0
  upper: float = 1.0
  dropout_rate: float = 0.0       # DFANet; the reference's transfer setting uses 0.1
  diversity_prob: float = 0.0     # input diversity: random resize-and-pad
  random_start: bool = True

  def validate(self):
    losses.get_loss(self.loss)
    update_rules.get_rule(self.rule)
    checks = {
        "eps": self.eps > 0, "step_size": self.step_size > 0,
        "iters": self.iters > 0, "nter": self.nter >= 0,
        "dropout_rate": 0.0 <= self.dropout_rate < 1.0,
        "diversity_prob": 0.0 <= self.diversity_prob <= 1.0,
        "lower": self.lower <= self.upper, "upper": 0.0 < self.upper <= 1.0,
    }
    for name, ok in checks.items():
      if not ok:
        raise ValueError(f"invalid attack setting {name}={getattr(self, name)!r}")
    return self


# (apply, params) of one surrogate: apply(params, x, dropout_rate=, rng=) -> (N, d).
SurrogateFn = Callable[..., jax.Array]


def _masked_photo_mean(x, valid):
  m = valid.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.sum(x * m, axis=0) / jnp.maximum(m.sum(), 1.0)


def project_universal(x_adv, images, valid, eps):
  """The universal mask is the mean perturbation over the real photos, clipped to eps."""
  delta = jnp.clip(_masked_photo_mean(x_adv - images, valid), -eps, eps)
  return delta, jnp.clip(images + delta, 0.0, 255.0)


def make_attack(applies: Sequence[SurrogateFn], cfg: AttackConfig):
  """Returns (init, step), both vmapped over identities; jit them at the call site.

  init(images, valid, key, params) -> state
  step(state, images, valid, params) -> (state, loss)
  `params` is a tuple with one params pytree per surrogate (an ensemble when
  there are several: the mean of their losses).
  """
  cfg.validate()
  loss_fn = losses.get_loss(cfg.loss)
  rule = update_rules.get_rule(cfg.rule)
  applies = tuple(applies)

  def features(params, x, key):
    return tuple(
        apply(p, x, dropout_rate=cfg.dropout_rate,
              rng=jax.random.fold_in(key, i) if cfg.dropout_rate > 0 else None)
        for i, (apply, p) in enumerate(zip(applies, params)))

  def init_one(images, valid, key, params):
    key, start_key = jax.random.split(key)
    noise = jax.random.uniform(start_key, images.shape, images.dtype, -cfg.eps, cfg.eps)
    x_adv = images + noise if cfg.random_start else images
    return {
        "x_adv": x_adv,
        "delta": jnp.zeros(images.shape[1:], images.dtype),
        "opt_state": rule(valid, cfg.step_size).init(x_adv),
        "clean": features(params, images, key),
        "step": jnp.zeros((), jnp.int32),
        "key": key,
    }

  def step_one(state, images, valid, params):
    key, clean_key, adv_key, div_key = jax.random.split(state["key"], 4)
    # DFANet: the clean features are recomputed through the dropout model.
    clean = features(params, images, clean_key) if cfg.dropout_rate > 0 else state["clean"]

    def total_loss(x_adv):
      x_in = input_diversity(div_key, x_adv, cfg.diversity_prob)
      adv = features(params, x_in, adv_key)
      terms = [loss_fn(a, c, valid, state["step"], lower=cfg.lower,
                       upper=cfg.upper, nter=cfg.nter) for a, c in zip(adv, clean)]
      return sum(terms) / len(terms)

    loss, grads = jax.value_and_grad(total_loss)(state["x_adv"])
    tx = rule(valid, cfg.step_size)
    updates, opt_state = tx.update(grads, state["opt_state"])
    delta, x_adv = project_universal(optax.apply_updates(state["x_adv"], updates),
                                     images, valid, cfg.eps)
    new_state = dict(state, x_adv=x_adv, delta=delta, opt_state=opt_state,
                     step=state["step"] + 1, key=key)
    if cfg.dropout_rate <= 0:
      new_state["clean"] = state["clean"]
    return new_state, loss

  init = jax.vmap(init_one, in_axes=(0, 0, 0, None))
  step = jax.vmap(step_one, in_axes=(0, 0, 0, None))
  return init, step


def identity_keys(seed: int, identity_ids) -> jax.Array:
  """One key per identity, independent of how identities are batched or sharded."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(identity_ids))


def apply_mask(images_uint8, delta):
  """Protected photo as a real system receives it: clip(x + delta) truncated to uint8."""
  x = jnp.asarray(images_uint8, jnp.float32) + delta
  return jnp.clip(x, 0.0, 255.0).astype(jnp.uint8)
