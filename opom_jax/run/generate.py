"""The generate job: learn one mask per person for every method of a run."""
from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np

from opom_jax.run import config as config_lib
from opom_jax.run.config import RunConfig
from opom_jax.run.faces import load_faces, stack_by_identity
from opom_jax.run.learn import learn_masks
from opom_jax.run.log import Log, progress_log


def mask_path(workdir, method: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "masks" / f"{method}.npz"


def generate(cfg: RunConfig, log: Log = None, faces: dict | None = None) -> dict[str, np.ndarray]:
  """Learns one mask per person for every method in cfg.methods; resumable.

  `faces` (from load_faces) saves re-reading the aligned crops when the caller has them.
  """
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top
  log = log or progress_log
  config_lib.write(cfg)
  faces = faces or load_faces(cfg, log)
  names = faces["train"]["names"]
  images, valid = stack_by_identity(faces["train"], len(names))
  surrogates = [zoo.load_surrogate(s, cfg.model_root) for s in cfg.surrogates]
  log(f"generate: {len(names)} people, up to {images.shape[1]} training photos each, "
      f"surrogates {list(cfg.surrogates)}, rule {cfg.attack.rule}, {cfg.attack.iters} iterations")
  out = {}
  for method in cfg.methods:
    path = mask_path(cfg.workdir, method)
    if path.exists():
      out[method] = np.load(path)["masks"]
      log(f"[{method}] masks already in {path}")
      continue
    t0 = time.time()
    masks = learn_masks(
        [s.apply for s in surrogates], tuple(s.params for s in surrogates), images, valid,
        dataclasses.replace(cfg.attack, loss=method), seed=cfg.seed,
        people_per_batch=cfg.people_per_batch, devices=cfg.devices,
        workdir=pathlib.Path(cfg.workdir) / "progress" / method,
        checkpoint_every=cfg.checkpoint_every, log=log)
    seconds = time.time() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, masks=masks, names=np.array(names), seconds=seconds)
    log(f"[{method}] {len(names)} masks in {seconds:.1f}s ({seconds / len(names):.2f}s per person) -> {path}")
    out[method] = masks
  return out
