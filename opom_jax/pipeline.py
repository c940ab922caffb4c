"""The two jobs the launchers run: learn masks for a data set, and evaluate them."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import pathlib
import time
from typing import Callable

import numpy as np

from opom_jax import config as config_lib
from opom_jax import evaluate as ev
from opom_jax.config import RunConfig
from opom_jax.masks import learn_masks, progress_log

Log = Callable[[str], None]


def load_faces(cfg: RunConfig, log: Log = None) -> dict:
  from opom_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top  (dlib, tfds)
  log = log or progress_log
  d = cfg.data
  root = pathlib.Path(d.data_root) / d.dataset
  log(f"faces: aligning or reading the cached crops of {root} in {d.cache_dir}")
  t0 = time.time()
  faces = tfds_builder.load_split(
      root, d.cache_dir, n_train=d.n_train, min_photos=d.min_photos,
      max_people=None if d.people else d.max_people, people=list(d.people) or None,
      include_distractors=True,
      max_distractors=None if d.max_distractors < 0 else d.max_distractors)
  counts = {role: len(v["images"]) for role, v in faces.items()}
  log(f"faces: {counts} in {time.time() - t0:.0f}s")
  if not counts.get("train"):
    raise ValueError(f"no eligible people in {root} (need >= {d.min_photos} photos each)")
  return faces


def stack_by_identity(split: dict, num_people: int):
  """(P, N, 112, 112, 3) float32 images and (P, N) validity, N = most photos of anyone."""
  ident = split["identity"]
  n = max(1, max((int(np.sum(ident == p)) for p in range(num_people)), default=1))
  images = np.zeros((num_people, n) + split["images"].shape[1:], np.float32)
  valid = np.zeros((num_people, n), bool)
  for p in range(num_people):
    rows = np.flatnonzero(ident == p)
    images[p, :len(rows)] = split["images"][rows]
    valid[p, :len(rows)] = True
  return images, valid


def mask_path(workdir, method: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "masks" / f"{method}.npz"


def generate(cfg: RunConfig, log: Log = None, faces: dict | None = None) -> dict[str, np.ndarray]:
  """Learns one mask per person for every method in cfg.methods; resumable.

  `faces` (from load_faces) saves re-reading the aligned crops when the caller has them.
  """
  from opom_jax.models import registry  # pylint: disable=g-import-not-at-top
  log = log or progress_log
  config_lib.write(cfg)
  faces = faces or load_faces(cfg, log)
  names = faces["train"]["names"]
  images, valid = stack_by_identity(faces["train"], len(names))
  surrogates = [registry.load_surrogate(s, cfg.model_root) for s in cfg.surrogates]
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
  from opom_jax.models import registry  # pylint: disable=g-import-not-at-top
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
  targets = [("white-box", f"jax:{s}") for s in cfg.surrogates if s in registry.ZOO]
  targets += [("black-box", t) for t in cfg.targets]
  rows = []
  for box, target_name in targets:
    log(f"evaluate: {target_name} ({box}) on {len(distractors['images'])} distractors")
    target = registry.load_target(target_name, cfg.model_root)
    embed = target.embed
    dis = _cached_features(features_dir(cfg), target_name, "distractors", distractors["images"], embed)
    clean_test = _cached_features(features_dir(cfg), target_name, "test_clean", test["images"], embed)
    for method, m in masks.items():
      t0 = time.time()
      prot_test = protect(test["images"], test["identity"], m)
      prot_train = protect(train["images"], train["identity"], m)
      res = ev.protection(embed(prot_test), clean_test, test["identity"], dis)
      uni = ev.protection(embed(prot_train), clean_test, test["identity"], dis,
                          probe_identity=train["identity"], exclude_same_index=False)
      row = {"method": method, "target": target_name, "box": box,
             "protect@1": res.pooled[1], "protect@5": res.pooled[5], "protect@10": res.pooled[10],
             "person_mean@1": res.person_mean(1), "train_protect@1": uni.pooled[1],
             "psnr": ev.psnr(prot_test, test["images"]), "pairs": res.pairs}
      rows.append(row)
      log(f"  {method:>16s} vs {target_name}: protect@1 {row['protect@1']:.3f} "
          f"@5 {row['protect@5']:.3f} @10 {row['protect@10']:.3f} ({time.time() - t0:.0f}s)")
  write_results(cfg.workdir, rows)
  _write_pictures(cfg, rows, test, masks, log)
  return rows


def _write_pictures(cfg: RunConfig, rows, test, masks, log: Log):
  from opom_jax import report  # pylint: disable=g-import-not-at-top  (matplotlib)
  first = [int(np.flatnonzero(test["identity"] == p)[0]) for p in np.unique(test["identity"])[:6]]
  learned = {m: masks[m][test["identity"][first]] for m in cfg.methods}
  grid = report.mask_grid(test["images"][first], learned, cfg.attack.eps,
                          pathlib.Path(cfg.workdir) / "masks_preview.png")
  chart = report.protection_chart(rows, pathlib.Path(cfg.workdir) / "protection.png")
  log(f"pictures: {grid}, {chart}")


def write_results(workdir, rows: list[dict]) -> str:
  workdir = pathlib.Path(workdir)
  with open(workdir / "results.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=FIELDS)
    w.writeheader()
    for r in rows:
      w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
  table = markdown_table(rows)
  (workdir / "results.md").write_text(table + "\n")
  (workdir / "results.json").write_text(json.dumps(rows, indent=1))
  return table


def markdown_table(rows: list[dict]) -> str:
  lines = ["| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
  for r in rows:
    cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in FIELDS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
