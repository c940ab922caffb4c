"""The universal, person-specific mask attack: pure, jit-compiled steps.

State is a plain pytree per identity; `make_attack` returns functions that are
vmapped over a batch of identities (B, N, H, W, C) with a validity mask
(B, N) for people with fewer photos, so one compiled program serves a whole
data set. Pixel units are 0..255 throughout.

Transfer techniques, each off at its default (AttackConfig): photo variations,
real-world EOT, input diversity and scale copies transform the input; DFANet
rates, ensemble subsets/weights and a feature loss on an intermediate layer shape the
surrogates' loss; variance tuning
and translation invariance shape the gradient before the update rule; a mask
resolution keeps the universal mask smooth.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from opom_jax.attack import ensemble
from opom_jax.attack import eot
from opom_jax.attack import feature_loss
from opom_jax.attack import losses
from opom_jax.attack import low_frequency
from opom_jax.attack import translation_invariance
from opom_jax.attack import update_rules
from opom_jax.attack import variance_tuning
from opom_jax.attack import variations
from opom_jax.attack.config import AttackConfig
from opom_jax.attack.transforms import input_diversity
from opom_jax.models import ops


# (apply, params) of one surrogate: apply(params, x, dropout_rate=, rng=) -> (N, d).
SurrogateFn = Callable[..., jax.Array]


def project_universal(x_adv, images, valid, eps, mask_resolution: int = 0):
  """The universal mask is the mean perturbation over the real photos, clipped to eps
  (with a mask_resolution, the nearest smooth mask within eps: attack.low_frequency)."""
  mean = update_rules.masked_photo_mean(x_adv - images, valid)
  if mask_resolution:
    delta = low_frequency.band_limit(mean, mask_resolution, eps)
  else:
    delta = jnp.clip(mean, -eps, eps)
  return delta, jnp.clip(images + delta, 0.0, 255.0)


def scaled_copies(x, copies: int):
  """Scale invariance: x and x * 2^-i (0..255 pixels, so darker), i < copies, along the batch."""
  if copies == 1:
    return x
  return jnp.concatenate([x * 2.0 ** -i for i in range(copies)])


def _draws(div_key, adv_key) -> dict:
  # eot's key is folded from div_key: a 5th split would change every existing run's draws.
  return {"div": div_key, "eot": jax.random.fold_in(div_key, 1),
          "vary": jax.random.fold_in(div_key, 2), "adv": adv_key}


def make_attack(applies: Sequence[SurrogateFn], cfg: AttackConfig):
  """Returns (init, step), both over a batch of identities; jit them at the call site.

  init(images, valid, key, params) -> state
  step(state, images, valid, params) -> (state, loss)
  `params` is a tuple with one params pytree per surrogate (an ensemble when
  there are several: the mean of their losses, or as cfg.ensemble_* say).
  """
  cfg.validate()
  applies = tuple(applies)
  cfg.check_surrogates(len(applies))
  loss_fn = losses.LOSSES.get(cfg.loss)
  rule = update_rules.RULES.get(cfg.rule)
  rates = cfg.surrogate_dropout_rates(len(applies))
  subset = cfg.ensemble_subset if cfg.ensemble_subset < len(applies) else 0
  equalise = cfg.ensemble_weighting == "equalise"

  def feature(i, params, x, key):
    return applies[i](params[i], x, dropout_rate=rates[i],
                      rng=jax.random.fold_in(key, i) if rates[i] > 0 else None)

  def loss_of(adv, clean, valid, step):
    return loss_fn(adv, clean, valid, step, lower=cfg.lower, upper=cfg.upper, nter=cfg.nter,
                   reduced_upper=cfg.reduced_upper)

  def init_one(images, valid, key, params):
    key, start_key = jax.random.split(key)
    noise = jax.random.uniform(start_key, images.shape, images.dtype, -cfg.eps, cfg.eps)
    x_adv = images + noise if cfg.random_start else images
    clean = tuple(feature(i, params, images, key) for i in range(len(applies)))
    state = {
        "x_adv": x_adv,
        "delta": jnp.zeros(images.shape[1:], images.dtype),
        "opt_state": rule(valid, cfg.step_size).init(x_adv),
        "clean": clean,
        "step": jnp.zeros((), jnp.int32),
        "key": key,
    }
    if equalise:  # each surrogate's loss where the first step starts
      state["loss_weights"] = ensemble.equalising_weights(jnp.stack([
          loss_of(feature(i, params, x_adv, key), c, valid, 0) for i, c in enumerate(clean)]))
    if cfg.vt_samples:
      state["variance"] = jnp.zeros_like(x_adv)
    return state

  def step_one(state, images, valid, params, chosen):
    """One identity's step; `chosen` (M,) bool, the same for the whole batch, or None (all)."""
    key, clean_key, adv_key, div_key = jax.random.split(state["key"], 4)

    def surrogate_loss(i, x_in, clean_in, adv_key):
      # DFANet: the clean features are recomputed through the dropout model.
      clean = feature(i, params, images, clean_key) if rates[i] > 0 else state["clean"][i]
      with ops.recording() as adv_layers:
        embedding = feature(i, params, x_in, adv_key)
      copies = jnp.split(embedding, cfg.si_copies)
      terms = [loss_of(a, clean, valid, state["step"]) for a in copies]
      loss = terms[0] if len(terms) == 1 else sum(terms) / len(terms)
      if not cfg.feature_weight:
        return loss
      # The clean photos through the same transforms and dropout draw: only the layer
      # differs by the perturbation (XLA drops the clean pass's layers above it).
      with ops.recording() as clean_layers:
        feature(i, params, clean_in, adv_key)
      k = feature_loss.layer_index(len(adv_layers), cfg.feature_depth)
      return loss + cfg.feature_weight * feature_loss.relative_distortion(
          adv_layers[k], clean_layers[k], jnp.tile(valid, cfg.si_copies))

    def transformed(x, draw):
      """The photos as the surrogates see them at this step."""
      x = variations.on_varied_photos(draw["vary"], images, x, cfg.variation_prob)
      # The photo is shared (re-compressed, resized) before a system aligns it.
      x = input_diversity(draw["div"], eot.real_world(draw["eot"], x, cfg.eot_prob),
                          cfg.diversity_prob)
      return scaled_copies(x, cfg.si_copies)

    def total_loss(x_adv, draw):
      x_in = transformed(x_adv, draw)
      clean_in = jax.lax.stop_gradient(transformed(images, draw)) if cfg.feature_weight else None
      terms = []
      for i in range(len(applies)):
        term = functools.partial(surrogate_loss, i, x_in, clean_in, draw["adv"])
        if subset:  # an unbatched predicate: a skipped surrogate does not run at all
          term = functools.partial(jax.lax.cond, chosen[i], term,
                                   lambda: jnp.zeros((), x_adv.dtype))
        terms.append(term() * state["loss_weights"][i] if equalise else term())
      return sum(terms) / (subset or len(terms))

    loss, grads = jax.value_and_grad(total_loss)(state["x_adv"], _draws(div_key, adv_key))
    new_state = {}
    if cfg.vt_samples:
      near = variance_tuning.neighbourhood_mean_gradient(
          lambda x, k: jax.grad(total_loss)(x, _draws(*jax.random.split(k))),
          state["x_adv"], jax.random.fold_in(div_key, 3), cfg.vt_samples, cfg.vt_beta * cfg.eps)
      grads, new_state["variance"] = grads + state["variance"], near - grads
    if cfg.ti_kernel:
      grads = translation_invariance.smooth(grads, cfg.ti_kernel, cfg.ti_sigma)
    tx = rule(valid, cfg.step_size)
    updates, opt_state = tx.update(grads, state["opt_state"])
    delta, x_adv = project_universal(optax.apply_updates(state["x_adv"], updates),
                                     images, valid, cfg.eps, cfg.mask_resolution)
    return dict(state, x_adv=x_adv, delta=delta, opt_state=opt_state,
                step=state["step"] + 1, key=key, **new_state), loss

  init = jax.vmap(init_one, in_axes=(0, 0, 0, None))
  batched_step = jax.vmap(step_one, in_axes=(0, 0, 0, None, None))

  def step(state, images, valid, params):
    # Every identity is at the same iteration: the first one's counter draws for all.
    chosen = ensemble.draw_subset(state["step"][0], len(applies), subset) if subset else None
    return batched_step(state, images, valid, params, chosen)

  return init, step


def identity_keys(seed: int, identity_ids) -> jax.Array:
  """One key per identity, independent of how identities are batched or sharded."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(identity_ids))


def apply_mask(images_uint8, delta):
  """Protected photo as a real system receives it: clip(x + delta) truncated to uint8."""
  x = jnp.asarray(images_uint8, jnp.float32) + delta
  return jnp.clip(x, 0.0, 255.0).astype(jnp.uint8)
