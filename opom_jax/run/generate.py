"""The generate job: learn every method's masks (one per person, or one per test photo)."""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Sequence

import numpy as np

from opom_jax.errors import UserError
from opom_jax.models.base import Surrogate, in_compute_dtype
from opom_jax.run import artefacts
from opom_jax.run import config as config_lib
from opom_jax.run import distributed
from opom_jax.run import methods as methods_lib
from opom_jax.run.config import RunConfig
from opom_jax.run.faces import load_faces, stack_by_identity
from opom_jax.run.learn import learn_masks
from opom_jax.run.log import Log, progress_log


def mask_path(workdir, method: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "masks" / f"{method}.npz"


def _stored_masks(cfg: RunConfig, method: str, faces: dict, overwrite: bool, log: Log):
  """The method's stored masks if they are intact and made with these settings, else None.

  Refuses (UserError) masks made with other settings unless `overwrite`: the
  work directory's config.json describes its masks, so they must agree.
  """
  path = mask_path(cfg.workdir, method)
  if not path.exists():
    return None
  settings = methods_lib.mask_settings(cfg, method, faces)
  try:
    stored = artefacts.read_masks(path)
  except artefacts.DamagedError as e:
    log(f"[{method}] {path} is damaged ({e}); recomputing")
    return None
  if stored.settings is None:
    change = "settings that were not recorded"
  else:
    change = artefacts.settings_change(stored.settings, settings)
  if change:
    if overwrite:
      log(f"[{method}] {path} was made with {change}; replacing it (--overwrite)")
      return None
    raise UserError(f"{path} was made with {change}; rerun with --overwrite to replace it "
                    "or use another --workdir")
  problem = artefacts.masks_problem(stored, methods_lib.mask_keys(method, faces),
                                    faces["train"]["images"].shape[1:], cfg.attack.eps)
  if problem:
    log(f"[{method}] {path} is damaged ({problem}); recomputing")
    return None
  log(f"[{method}] masks already in {path}")
  return stored.masks


def generate(cfg: RunConfig, log: Log = None, faces: dict | None = None, *,
             overwrite: bool = False,
             surrogates: Sequence[Surrogate] | None = None) -> dict[str, np.ndarray]:
  """Learns the masks of every method in cfg.methods; resumable.

  A universal method learns one mask per person from the training photos; a
  per-photo one (methods.METHODS) one perturbation per test photo, batched
  `people_per_batch` x (most training photos of anyone) photos at a time so
  its batches cost what a universal batch does.

  `faces` (from load_faces) saves re-reading the aligned crops when the caller
  has them; `surrogates` (one per name in cfg.surrogates) replaces loading
  them from the zoo. Stored masks made with other settings are refused unless
  `overwrite` (or cfg.overwrite); config.json is written only once they pass.
  """
  log = log or progress_log
  overwrite = overwrite or getattr(cfg, "overwrite", False)
  faces = faces or load_faces(cfg, log)
  names = list(faces["train"]["names"])
  images, valid = stack_by_identity(faces["train"], len(names))
  out = {m: _stored_masks(cfg, m, faces, overwrite, log) for m in cfg.methods}
  config_lib.write(cfg)
  todo = [m for m in cfg.methods if out[m] is None]
  if not todo:
    return out
  if surrogates is None:
    from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top
    surrogates = [zoo.load_surrogate(s, cfg.model_root) for s in cfg.surrogates]
  log(f"generate: {len(names)} people, up to {images.shape[1]} training photos each, "
      f"surrogates {list(cfg.surrogates)}, rule {cfg.attack.rule}, {cfg.attack.iters} iterations")
  for method in todo:
    path = mask_path(cfg.workdir, method)
    settings = methods_lib.mask_settings(cfg, method, faces)
    keys = methods_lib.mask_keys(method, faces)
    kind = methods_lib.METHODS.get(method)
    if kind.per_photo:
      x, v = _each_photo_alone(faces["test"])
      unit, batch = "test photos", cfg.people_per_batch * images.shape[1]
      log(f"[{method}] one perturbation for each of {len(keys)} test photos, "
          f"{min(batch, len(keys))} at a time")
    else:
      x, v, unit, batch = images, valid, "people", cfg.people_per_batch
    t0 = time.time()
    masks, learned = learn_masks(
        [in_compute_dtype(s.apply, cfg.compute_dtype) for s in surrogates],
        tuple(s.params for s in surrogates), x, v,
        dataclasses.replace(cfg.attack, loss=kind.loss), seed=cfg.seed,
        people_per_batch=batch, devices=cfg.devices,
        workdir=pathlib.Path(cfg.workdir) / "progress" / method,
        checkpoint_every=cfg.checkpoint_every, settings=settings, label=method, unit=unit,
        log=log, return_learned=True)
    seconds = time.time() - t0
    # Batches a restarted run reused took no time here: the stored cost is per mask learned.
    per_mask = seconds / learned if learned else None
    artefacts.save_masks(path, masks, keys, settings,  # by process 0 alone
                         None if per_mask is None else per_mask * len(keys))
    distributed.barrier(f"{path} written")  # the other processes may read it next
    reused = f", {len(keys) - learned} reused" if learned < len(keys) else ""
    each = f" ({per_mask:.2f}s each learned)" if per_mask is not None else ""
    log(f"[{method}] {len(keys)} masks{reused} in {seconds:.1f}s{each} -> {path}")
    out[method] = masks
  return out


def _each_photo_alone(split: dict) -> tuple[np.ndarray, np.ndarray]:
  """(T, 1, 112, 112, 3) float32 photos and (T, 1) validity: every photo an identity of its own."""
  images = split["images"].astype(np.float32)[:, None]
  return images, np.ones(images.shape[:2], bool)
