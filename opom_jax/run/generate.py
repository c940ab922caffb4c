"""The generate job: learn one mask per person for every method of a run."""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Sequence

import numpy as np

from opom_jax.errors import UserError
from opom_jax.models.base import Surrogate
from opom_jax.run import artefacts
from opom_jax.run import config as config_lib
from opom_jax.run.config import RunConfig
from opom_jax.run.faces import load_faces, stack_by_identity
from opom_jax.run.learn import learn_masks
from opom_jax.run.log import Log, progress_log


def mask_path(workdir, method: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "masks" / f"{method}.npz"


def _stored_masks(cfg: RunConfig, method: str, names, image_shape, overwrite: bool, log: Log):
  """The method's stored masks if they are intact and made with these settings, else None.

  Refuses (UserError) masks made with other settings unless `overwrite`: the
  work directory's config.json describes its masks, so they must agree.
  """
  path = mask_path(cfg.workdir, method)
  if not path.exists():
    return None
  settings = artefacts.mask_settings(cfg, method, names)
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
  problem = artefacts.masks_problem(stored, names, image_shape, cfg.attack.eps)
  if problem:
    log(f"[{method}] {path} is damaged ({problem}); recomputing")
    return None
  log(f"[{method}] masks already in {path}")
  return stored.masks


def generate(cfg: RunConfig, log: Log = None, faces: dict | None = None, *,
             overwrite: bool = False,
             surrogates: Sequence[Surrogate] | None = None) -> dict[str, np.ndarray]:
  """Learns one mask per person for every method in cfg.methods; resumable.

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
  out = {m: _stored_masks(cfg, m, names, images.shape[2:], overwrite, log) for m in cfg.methods}
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
    settings = artefacts.mask_settings(cfg, method, names)
    t0 = time.time()
    masks = learn_masks(
        [s.apply for s in surrogates], tuple(s.params for s in surrogates), images, valid,
        dataclasses.replace(cfg.attack, loss=method), seed=cfg.seed,
        people_per_batch=cfg.people_per_batch, devices=cfg.devices,
        workdir=pathlib.Path(cfg.workdir) / "progress" / method,
        checkpoint_every=cfg.checkpoint_every, settings=settings, log=log)
    seconds = time.time() - t0
    artefacts.save_masks(path, masks, names, settings, seconds)
    log(f"[{method}] {len(names)} masks in {seconds:.1f}s ({seconds / len(names):.2f}s per person) -> {path}")
    out[method] = masks
  return out
