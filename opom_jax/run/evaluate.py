"""The evaluate job: protection of a run's masks against its surrogates and targets."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time

import numpy as np

from opom_jax.eval import metrics
from opom_jax.eval.tables import markdown_table, write_results
from opom_jax.run.config import RunConfig
from opom_jax.run.faces import load_faces
from opom_jax.run.generate import mask_path
from opom_jax.run.log import Log, progress_log


def protect(images_uint8: np.ndarray, identity: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """uint8(clip(x + mask of the photo's person)), truncating like the reference."""
  x = images_uint8.astype(np.float32) + masks[identity]
  return np.clip(x, 0, 255).astype(np.uint8)


def _control_masks(cfg: RunConfig, num_people: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(cfg.seed)
  shape = (num_people, 112, 112, 3)
  return {"clean": np.zeros(shape, np.float32),
          f"random_{cfg.attack.eps:g}": rng.uniform(-cfg.attack.eps, cfg.attack.eps, shape).astype(np.float32)}


def features_dir(cfg: RunConfig) -> pathlib.Path:
  """Clean-photo features depend only on the data and the model: shared by every run."""
  digest = hashlib.sha1(json.dumps(dataclasses.asdict(cfg.data), sort_keys=True).encode()).hexdigest()[:10]
  return pathlib.Path(cfg.data.cache_dir) / "features" / digest


def _cached_features(directory, target_name: str, what: str, images, embed) -> np.ndarray:
  path = pathlib.Path(directory) / f"{target_name.replace(':', '_')}__{what}.npy"
  if path.exists():
    cached = np.load(path)
    if len(cached) == len(images):
      return cached
  feats = embed(images)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, feats)
  return feats


FIELDS = ["method", "target", "box", "protect@1", "protect@5", "protect@10",
          "person_mean@1", "train_protect@1", "psnr", "pairs"]


def evaluate(cfg: RunConfig, log: Log = None, faces: dict | None = None) -> list[dict]:
  """Protection of every method's masks against the surrogate(s) and the targets."""
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top
  log = log or progress_log
  faces = faces or load_faces(cfg, log)
  train, test, distractors = faces["train"], faces["test"], faces["distractor"]
  names = train["names"]
  masks = _control_masks(cfg, len(names))
  for method in cfg.methods:
    path = mask_path(cfg.workdir, method)
    if not path.exists():
      raise FileNotFoundError(f"{path} is missing: run experiments.generate with this "
                              f"--workdir and --methods first")
    masks[method] = np.load(path)["masks"]
  targets = [("white-box", f"jax:{s}") for s in cfg.surrogates if s in zoo.ZOO]
  targets += [("black-box", t) for t in cfg.targets]
  rows = []
  for box, target_name in targets:
    log(f"evaluate: {target_name} ({box}) on {len(distractors['images'])} distractors")
    target = zoo.load_target(target_name, cfg.model_root)
    embed = target.embed
    dis = _cached_features(features_dir(cfg), target_name, "distractors", distractors["images"], embed)
    clean_test = _cached_features(features_dir(cfg), target_name, "test_clean", test["images"], embed)
    for method, m in masks.items():
      t0 = time.time()
      prot_test = protect(test["images"], test["identity"], m)
      prot_train = protect(train["images"], train["identity"], m)
      res = metrics.protection(embed(prot_test), clean_test, test["identity"], dis)
      uni = metrics.protection(embed(prot_train), clean_test, test["identity"], dis,
                          probe_identity=train["identity"], exclude_same_index=False)
      row = {"method": method, "target": target_name, "box": box,
             "protect@1": res.pooled[1], "protect@5": res.pooled[5], "protect@10": res.pooled[10],
             "person_mean@1": res.person_mean(1), "train_protect@1": uni.pooled[1],
             "psnr": metrics.psnr(prot_test, test["images"]), "pairs": res.pairs}
      rows.append(row)
      log(f"  {method:>16s} vs {target_name}: protect@1 {row['protect@1']:.3f} "
          f"@5 {row['protect@5']:.3f} @10 {row['protect@10']:.3f} ({time.time() - t0:.0f}s)")
  write_results(cfg.workdir, rows, FIELDS)
  _write_pictures(cfg, rows, test, masks, log)
  return rows


def _write_pictures(cfg: RunConfig, rows, test, masks, log: Log):
  from opom_jax.eval import figures  # pylint: disable=g-import-not-at-top  (matplotlib)
  first = [int(np.flatnonzero(test["identity"] == p)[0]) for p in np.unique(test["identity"])[:6]]
  learned = {m: masks[m][test["identity"][first]] for m in cfg.methods}
  grid = figures.mask_grid(test["images"][first], learned, cfg.attack.eps,
                          pathlib.Path(cfg.workdir) / "masks_preview.png")
  chart = figures.protection_chart(rows, pathlib.Path(cfg.workdir) / "protection.png")
  log(f"pictures: {grid}, {chart}")


def table(rows: list[dict]) -> str:
  return markdown_table(rows, FIELDS)
