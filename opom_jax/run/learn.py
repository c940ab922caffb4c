"""Learning one mask per identity for a whole data set: batching, devices, resume.

Identities are processed in batches of a fixed size (padded), so one compiled
program serves every batch; each finished batch is written to disk at once and
a batch in progress is checkpointed every K iterations, so a killed run
restarted with the same arguments loses at most K iterations.
"""
from __future__ import annotations

import pathlib
import time
from typing import Callable, Sequence

import jax
import numpy as np

from opom_jax import attack
from opom_jax.run import sharding
from opom_jax.run.checkpoint import AttackCheckpointer
from opom_jax.run.log import progress_log



def learn_masks(applies: Sequence[Callable], params: tuple, images: np.ndarray,
                valid: np.ndarray, cfg: attack.AttackConfig, *, seed: int = 0,
                people_per_batch: int = 10, devices: int = 0,
                workdir: str | pathlib.Path | None = None, checkpoint_every: int = 0,
                log: Callable[[str], None] | None = None) -> np.ndarray:
  """Masks (P, H, W, C) float32 for images (P, N, H, W, C) float 0..255, valid (P, N).

  With `workdir`, finished batches are stored as `batch_<b>.npy` and in-progress
  batches checkpointed under `ckpt_<b>/`; both are reused on restart.
  """
  log = log or progress_log
  images = np.asarray(images, np.float32)
  valid = np.asarray(valid, bool)
  num_people = len(images)
  mesh = sharding.make_mesh(devices)
  batch = sharding.padded_batch(min(people_per_batch, num_people), mesh)
  init, step = attack.make_attack(applies, cfg)
  init, step = jax.jit(init), jax.jit(step, donate_argnums=0)
  params = sharding.replicate(params, mesh)
  workdir = pathlib.Path(workdir) if workdir else None
  if workdir:
    workdir.mkdir(parents=True, exist_ok=True)

  masks = []
  num_batches = -(-num_people // batch)
  start_time = time.time()
  for b in range(num_batches):
    lo, hi = b * batch, min((b + 1) * batch, num_people)
    done_file = workdir / f"batch_{b:05d}.npy" if workdir else None
    if done_file and done_file.exists():
      masks.append(np.load(done_file))
      log(f"[{cfg.loss}] batch {b + 1}/{num_batches}: reused {done_file.name}")
      continue
    ids = np.arange(lo, lo + batch)  # padded people get keys too; their masks are dropped
    x = sharding.shard_people(sharding.pad_people(images[lo:hi], batch), mesh)
    v = sharding.shard_people(sharding.pad_people(valid[lo:hi], batch), mesh)
    keys = sharding.shard_people(attack.identity_keys(seed, ids), mesh)
    state = init(x, v, keys, params)
    ckpt = AttackCheckpointer(workdir / f"ckpt_{b:05d}") if workdir and checkpoint_every else None
    if ckpt and ckpt.latest_step() is not None:
      state = ckpt.restore(state)
      log(f"[{cfg.loss}] batch {b + 1}/{num_batches}: resumed at iteration {int(ckpt.latest_step())}")
    first = int(state["step"][0])
    for it in range(first, cfg.iters):
      state, loss = step(state, x, v, params)
      if ckpt and (it + 1) % checkpoint_every == 0 and it + 1 < cfg.iters:
        ckpt.save(it + 1, state)
      if (it + 1) % max(1, cfg.iters // 4) == 0 or it + 1 == cfg.iters:
        mean_loss = float(np.mean(np.asarray(loss)[: hi - lo]))
        log(f"[{cfg.loss}] people {lo}-{hi - 1} of {num_people}, iteration {it + 1}/{cfg.iters}, "
            f"loss {mean_loss:.5f}, {time.time() - start_time:.0f}s")
    result = np.asarray(state["delta"])[: hi - lo]
    if done_file:
      np.save(done_file, result)
    if ckpt:
      ckpt.close()
    masks.append(result)
  return np.concatenate(masks).astype(np.float32)
