"""The universal, person-specific mask attack: pure, jit-compiled steps.

State is a plain pytree per identity; `make_attack` returns functions that are
vmapped over a batch of identities (B, N, H, W, C) with a validity mask
(B, N) for people with fewer photos, so one compiled program serves a whole
data set. Pixel units are 0..255 throughout.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from opom_jax.attack import eot
from opom_jax.attack import losses
from opom_jax.attack import update_rules
from opom_jax.attack.config import AttackConfig
from opom_jax.attack.transforms import input_diversity


# (apply, params) of one surrogate: apply(params, x, dropout_rate=, rng=) -> (N, d).
SurrogateFn = Callable[..., jax.Array]


def project_universal(x_adv, images, valid, eps):
  """The universal mask is the mean perturbation over the real photos, clipped to eps."""
  delta = jnp.clip(update_rules.masked_photo_mean(x_adv - images, valid), -eps, eps)
  return delta, jnp.clip(images + delta, 0.0, 255.0)


def make_attack(applies: Sequence[SurrogateFn], cfg: AttackConfig):
  """Returns (init, step), both vmapped over identities; jit them at the call site.

  init(images, valid, key, params) -> state
  step(state, images, valid, params) -> (state, loss)
  `params` is a tuple with one params pytree per surrogate (an ensemble when
  there are several: the mean of their losses).
  """
  cfg.validate()
  loss_fn = losses.LOSSES.get(cfg.loss)
  rule = update_rules.RULES.get(cfg.rule)
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
    eot_key = jax.random.fold_in(div_key, 1)  # a 5th split would change every existing run's draws
    # DFANet: the clean features are recomputed through the dropout model.
    clean = features(params, images, clean_key) if cfg.dropout_rate > 0 else state["clean"]

    def total_loss(x_adv):
      # The photo is shared (re-compressed, resized) before a system aligns it.
      x_in = input_diversity(div_key, eot.real_world(eot_key, x_adv, cfg.eot_prob),
                             cfg.diversity_prob)
      adv = features(params, x_in, adv_key)
      terms = [loss_fn(a, c, valid, state["step"], lower=cfg.lower,
                       upper=cfg.upper, nter=cfg.nter, reduced_upper=cfg.reduced_upper)
               for a, c in zip(adv, clean)]
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
