"""Learning one mask per identity for a whole data set: batching, devices, resume.

Identities are processed in batches of a fixed size (padded), so one compiled
program serves every batch; each finished batch is written to disk at once and
a batch in progress is checkpointed every K iterations, so a killed run
restarted with the same arguments loses at most K iterations.

Progress lives in `<workdir>/<digest>/`, the digest of everything the batches
depend on (attack settings, seed, batch size, the input photos, the surrogate
weights and the caller's `settings`), so a run with other settings never
resumes another's batches; reused batches and checkpoints are checked first.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Callable, Sequence

import jax
import numpy as np

from opom_jax import attack
from opom_jax import fingerprint
from opom_jax.run import artefacts
from opom_jax.run import distributed
from opom_jax.run import sharding
from opom_jax.run.checkpoint import AttackCheckpointer
from opom_jax.run.log import progress_log


def progress_dir(workdir, settings: dict) -> pathlib.Path:
  return pathlib.Path(workdir) / fingerprint.digest(settings)


def _jit_attack(applies: tuple, cfg: attack.AttackConfig):
  init, step = attack.make_attack(applies, cfg)
  return jax.jit(init), jax.jit(step, donate_argnums=0)


_cached_jit_attack = functools.lru_cache(maxsize=8)(_jit_attack)


def _compiled_attack(applies: tuple, cfg: attack.AttackConfig):
  """jit-wrapped (init, step); calls in one process with the same surrogates and
  settings share them, so their programs compile once."""
  try:
    hash((applies, cfg))
  except TypeError:  # an unhashable apply (a callable object): nothing to share
    return _jit_attack(applies, cfg)
  return _cached_jit_attack(applies, cfg)


def _state_problem(state, step: int, cfg: attack.AttackConfig) -> str | None:
  """Why a restored attack state cannot be resumed; None if it can."""
  if step >= cfg.iters:
    return f"it is at iteration {step}, past the {cfg.iters} of this run"
  if not np.all(np.asarray(state["step"]) == step):
    return f"its step counter is not {step}"
  for leaf in jax.tree.leaves(state):
    floating = (not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                and jax.dtypes.issubdtype(leaf.dtype, np.floating))
    if floating and not np.all(np.isfinite(np.asarray(leaf))):
      return "it holds values that are not finite"
  delta = np.asarray(state["delta"])
  return artefacts.array_problem(delta, delta.shape, cfg.eps)


def learn_masks(applies: Sequence[Callable], params: tuple, images: np.ndarray,
                valid: np.ndarray, cfg: attack.AttackConfig, *, seed: int = 0,
                people_per_batch: int = 10, devices: int = 0,
                workdir: str | pathlib.Path | None = None, checkpoint_every: int = 0,
                settings: dict | None = None, label: str = "", unit: str = "people",
                log: Callable[[str], None] | None = None, return_learned: bool = False):
  """Masks (P, H, W, C) float32 for images (P, N, H, W, C) float 0..255, valid (P, N).

  With `workdir`, finished batches are stored as `<digest>/batch_<b>.npy` and
  in-progress batches checkpointed under `<digest>/ckpt_<b>/`; both are reused
  on restart with the same inputs. `settings` (JSON-able) adds what the inputs
  do not show (e.g. surrogate names) to the digest. `label` (default the loss)
  and `unit` (what the first axis of `images` holds) name the progress lines.
  With `return_learned`, returns (masks, how many of them this call learned
  rather than reused from finished batches): the count a cost per person needs.
  """
  log = log or progress_log
  label = label or cfg.loss
  images = np.asarray(images, np.float32)
  valid = np.asarray(valid, bool)
  num_people = len(images)
  mesh = sharding.make_mesh(devices)
  batch = sharding.padded_batch(min(people_per_batch, num_people), mesh)
  init, step = _compiled_attack(tuple(applies), cfg)
  if workdir:
    key = {"attack": dataclasses.asdict(cfg), "seed": seed, "batch": batch,
           "inputs": fingerprint.array_digest(images, valid),
           "weights": fingerprint.array_digest(*jax.tree.leaves(params)), **(settings or {})}
    workdir = progress_dir(workdir, key)
    distributed.check_shared(workdir)
    artefacts.write_json(workdir / "settings.json", key)
  params = sharding.replicate(params, mesh)

  masks, learned = [], 0
  num_batches = -(-num_people // batch)
  start_time = time.time()
  for b in range(num_batches):
    lo, hi = b * batch, min((b + 1) * batch, num_people)
    done_file = workdir / f"batch_{b:05d}.npy" if workdir else None
    if done_file and done_file.exists():
      try:
        masks.append(artefacts.load_array(done_file, (hi - lo,) + images.shape[2:], cfg.eps))
        log(f"[{label}] batch {b + 1}/{num_batches}: reused {done_file}")
        continue
      except artefacts.DamagedError as e:
        log(f"[{label}] {done_file} is damaged ({e}); recomputing")
    ids = np.arange(lo, lo + batch)  # padded people get keys too; their masks are dropped
    x = sharding.shard_people(sharding.pad_people(images[lo:hi], batch), mesh)
    v = sharding.shard_people(sharding.pad_people(valid[lo:hi], batch), mesh)
    keys = sharding.shard_people(attack.identity_keys(seed, ids), mesh)
    state = init(x, v, keys, params)
    ckpt = AttackCheckpointer(workdir / f"ckpt_{b:05d}") if workdir and checkpoint_every else None
    if ckpt and ckpt.all_steps():
      restored, at = ckpt.restore_latest(state, lambda s, i: _state_problem(s, i, cfg), log)
      if restored is None:
        log(f"[{label}] batch {b + 1}/{num_batches}: no intact checkpoint in {ckpt.directory}; "
            "starting the batch from scratch")
      else:
        state = restored
        log(f"[{label}] batch {b + 1}/{num_batches}: resumed at iteration {at}")
    first = int(sharding.gather(state["step"])[0])
    for it in range(first, cfg.iters):
      state, loss = step(state, x, v, params)
      if ckpt and (it + 1) % checkpoint_every == 0 and it + 1 < cfg.iters:
        ckpt.save(it + 1, state)
      if (it + 1) % max(1, cfg.iters // 4) == 0 or it + 1 == cfg.iters:
        mean_loss = float(np.mean(sharding.gather(loss)[: hi - lo]))
        log(f"[{label}] {unit} {lo}-{hi - 1} of {num_people}, iteration {it + 1}/{cfg.iters}, "
            f"loss {mean_loss:.5f}, {time.time() - start_time:.0f}s")
    result = sharding.gather(state["delta"])[: hi - lo].astype(np.float32)
    if done_file:
      artefacts.save_array(done_file, result)
    if ckpt:
      ckpt.close()
    masks.append(result)
    learned += hi - lo
  masks = np.concatenate(masks).astype(np.float32)
  return (masks, learned) if return_learned else masks


def learn_person_mask(crops, cfg: attack.AttackConfig, surrogate_names, model_root, *,
                      seed: int = 0, log: Callable[[str], None] | None = None) -> np.ndarray:
  """One person's (112, 112, 3) float32 mask from their aligned face crops (uint8 or float)."""
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top
  train = np.stack(crops).astype(np.float32)[None]
  surrogates = [zoo.load_surrogate(n, model_root or None) for n in surrogate_names]
  mask = learn_masks([s.apply for s in surrogates], tuple(s.params for s in surrogates), train,
                     np.ones(train.shape[:2], bool), cfg, seed=seed, log=log)[0]
  return np.asarray(mask, np.float32)
