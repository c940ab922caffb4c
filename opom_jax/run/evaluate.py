"""The evaluate job: protection of a run's masks against its surrogates and targets."""
from __future__ import annotations

import pathlib
import time
from typing import Any, Sequence

import numpy as np

from opom_jax import fingerprint
from opom_jax.errors import UserError
from opom_jax.eval import metrics, paired, quality, thresholds
from opom_jax.eval.tables import markdown_table, write_results
from opom_jax.run import artefacts
from opom_jax.run import distributed
from opom_jax.run import methods as methods_lib
from opom_jax.run.config import RunConfig
from opom_jax.run.faces import load_faces
from opom_jax.run.generate import mask_path
from opom_jax.run.log import Log, progress_log


def protect(images_uint8: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """uint8(clip(x + the photo's mask)), truncating like the reference."""
  x = images_uint8.astype(np.float32) + masks
  return np.clip(x, 0, 255).astype(np.uint8)


def masks_of(photos: np.ndarray, masks: np.ndarray, per_photo: bool, identity) -> np.ndarray:
  """The masks test photos `photos` (indices) receive: their own, or their person's."""
  return masks[photos] if per_photo else masks[identity[photos]]


def _control_masks(cfg: RunConfig, num_people: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(cfg.seed)
  shape = (num_people, 112, 112, 3)
  return {"clean": np.zeros(shape, np.float32),
          f"random_{cfg.attack.eps:g}": rng.uniform(-cfg.attack.eps, cfg.attack.eps, shape).astype(np.float32)}


def features_dir(cfg: RunConfig) -> pathlib.Path:
  """Clean-photo features depend only on the photos and the model (both in each file's
  key), so every run shares them: e.g. LFW's one-photo distractors of every data set."""
  return pathlib.Path(cfg.data.cache_dir) / "features"


def _cached_features(directory, target_name: str, what: str, images, embed, *,
                     model_root: str = "", log: Log = None) -> np.ndarray:
  """embed(images) as float32, cached under a name keyed by the target and the images themselves."""
  log = log or progress_log
  key = fingerprint.digest({"target": target_name, "model_root": model_root,
                          "images": fingerprint.array_digest(images)})
  path = pathlib.Path(directory) / f"{target_name.replace(':', '_')}__{what}__{key}.npy"
  if path.exists():
    try:
      return artefacts.load_array(path, (len(images), None))
    except artefacts.DamagedError as e:
      log(f"evaluate: cached features {path} are damaged ({e}); recomputing")
  feats = np.asarray(embed(images), np.float32)
  artefacts.save_array(path, feats)
  return feats


def _remake(cfg: RunConfig, method: str) -> str:
  return (f"make them with `python -m experiments.generate` and the same flags "
          f"(--workdir={cfg.workdir} --methods={method})")


def _read_stored(cfg: RunConfig, method: str) -> artefacts.StoredMasks:
  path = mask_path(cfg.workdir, method)
  if not path.exists():
    raise UserError(f"{path} is missing: {_remake(cfg, method)}")
  try:
    return artefacts.read_masks(path)
  except artefacts.DamagedError as e:
    raise UserError(f"{path} is damaged ({e}): {_remake(cfg, method)} --overwrite") from None


def check_masks(cfg: RunConfig) -> None:
  """Missing or unreadable masks fail here, before the (slow) faces are read."""
  for method in cfg.methods:
    _read_stored(cfg, method)


def _load_masks(cfg: RunConfig, method: str, faces: dict) -> np.ndarray:
  """The method's masks, checked against this run; UserError naming the file otherwise."""
  path = mask_path(cfg.workdir, method)
  stored = _read_stored(cfg, method)
  settings = methods_lib.mask_settings(cfg, method, faces)
  change = ("settings that were not recorded" if stored.settings is None
            else artefacts.settings_change(stored.settings, settings))
  if change:
    raise UserError(f"{path} was made with {change}: evaluate with the flags that made it, "
                    f"or {_remake(cfg, method)} --overwrite")
  problem = artefacts.masks_problem(stored, methods_lib.mask_keys(method, faces),
                                    faces["train"]["images"].shape[1:], cfg.attack.eps)
  if problem:
    raise UserError(f"{path} is damaged ({problem}): {_remake(cfg, method)} --overwrite")
  return stored.masks


FIELDS = ["method", "target", "box", "protect@1", "protect@1_lo", "protect@1_hi",
          "protect@5", "protect@10", "person_mean@1", "train_protect@1",
          "verif_reject", "verif_reject_lo", "verif_reject_hi", "psnr", "ssim", "pairs"]


def verification_threshold(cfg: RunConfig, target_name: str, embed, max_images: int | None,
                           log: Log) -> thresholds.Threshold:
  """The target's cosine threshold at FAR 1e-3 on the LFW pairs of the data root (cached)."""
  root = pathlib.Path(cfg.data.data_root)
  pairs_path, lfw_dir = root / "lfw-protocol" / "pairs.txt", root / "lfw-deepfunneled"
  for needed in (pairs_path, lfw_dir):
    if not needed.exists():
      raise UserError(f"{needed} is missing: the verification threshold needs the LFW pairs "
                      f"file and photos under --data_root={cfg.data.data_root}")
  t = thresholds.lfw_threshold(target_name, embed, pairs_path=pairs_path, lfw_dir=lfw_dir,
                               cache_dir=cfg.data.cache_dir, model_root=cfg.model_root,
                               max_images=max_images, log=log)
  log(f"evaluate: {target_name} verifies cosine > {t.value:.4f} at FAR {t.far:g}, set on "
      f"{t.impostor_pairs} impostor pairs of {t.images} LFW images")
  return t


def _row(method, target_name, box, test, prot_test, res, uni, rejection) -> dict:
  lo, hi = res.ci(1)
  row = {"method": method, "target": target_name, "box": box,
         "protect@1": res.pooled[1], "protect@1_lo": lo, "protect@1_hi": hi,
         "protect@5": res.pooled[5], "protect@10": res.pooled[10],
         "person_mean@1": res.person_mean(1),
         "psnr": metrics.psnr(prot_test, test["images"]),
         "ssim": quality.ssim(prot_test, test["images"]), "pairs": res.pairs}
  if uni is not None:
    row["train_protect@1"] = uni.pooled[1]
  if rejection is not None:
    row["verif_reject"] = rejection.rate
    row["verif_reject_lo"], row["verif_reject_hi"] = rejection.ci()
  return row


def evaluate(cfg: RunConfig, log: Log = None, faces: dict | None = None, *,
             targets: Sequence[tuple[str, Any]] | None = None, verification: bool | None = None,
             verification_max_images: int | None = None) -> list[dict]:
  """Protection of every method's masks against the surrogate(s) and the targets.

  `targets`, (box, runtime) pairs with runtime.name and runtime.embed, replaces
  the zoo targets named by cfg (white-box JAX surrogates, then cfg.targets).
  `verification`: also the share of (protected, clean) same-person pairs each
  target rejects at FAR 1e-3; its threshold is set once per target on LFW
  (all of the pairs file's images, or the first verification_max_images).
  Both default to the config's `verification` and `verification_images`.
  A per-photo method (pgd_per_image) has no train_protect@1: its
  perturbations belong to test photos, so no training photo is protected by
  them; the cell is left empty.
  """
  log = log or progress_log
  if verification is None:
    verification = cfg.verification
  if verification_max_images is None and cfg.verification_images > 0:
    verification_max_images = cfg.verification_images
  faces = faces or load_faces(cfg, log)
  train, test, distractors = faces["train"], faces["test"], faces["distractor"]
  names = list(train["names"])
  masks = _control_masks(cfg, len(names))
  for method in cfg.methods:
    masks[method] = _load_masks(cfg, method, faces)
  per_photo = {m for m in cfg.methods if methods_lib.METHODS.get(m).per_photo}
  for method in sorted(per_photo):
    log(f"evaluate: {method} perturbs each test photo on its own: no train_protect@1 (left empty)")
  test_photos = np.arange(len(test["images"]))
  tested = [names[i] for i in np.unique(test["identity"])]  # metrics' people, in their order
  rows, per_person, person_counts = [], {}, []
  for box, target_name, load in _targets(cfg, targets):
    log(f"evaluate: {target_name} ({box}) on {len(distractors['images'])} distractors")
    embed = distributed.split_rows(load().embed)  # each process embeds a share of the photos
    threshold = (verification_threshold(cfg, target_name, embed, verification_max_images, log)
                 if verification else None)
    # Every embedding is cached by its photos' digest, protected ones too: a killed
    # evaluation restarted redoes no target it had finished.
    features = lambda what, images: _cached_features(
        features_dir(cfg), target_name, what, images, embed, model_root=cfg.model_root, log=log)
    dis, clean_test = features("distractors", distractors["images"]), features("test_clean", test["images"])
    for method, m in masks.items():
      t0 = time.time()
      prot_test = protect(test["images"],
                          masks_of(test_photos, m, method in per_photo, test["identity"]))
      probe = features(f"{method}_test", prot_test)
      res = metrics.protection(probe, clean_test, test["identity"], dis)
      uni = None if method in per_photo else metrics.protection(
          features(f"{method}_train", protect(train["images"], m[train["identity"]])),
          clean_test, test["identity"],
          dis, probe_identity=train["identity"], exclude_same_index=False)
      rejection = (None if threshold is None else
                   metrics.verification_rejection(probe, clean_test, test["identity"],
                                                  threshold.value))
      row = _row(method, target_name, box, test, prot_test, res, uni, rejection)
      rows.append(row)
      per_person[(method, target_name)] = res.per_person[1]
      person_counts += paired.per_person_rows(method, target_name, box, tested, res, uni)
      log(f"  {method:>16s} vs {target_name}: protect@1 {row['protect@1']:.3f} "
          f"[{row['protect@1_lo']:.3f}, {row['protect@1_hi']:.3f}] @5 {row['protect@5']:.3f} "
          f"@10 {row['protect@10']:.3f}"
          + (f" verif_reject {row['verif_reject']:.3f}" if rejection is not None else "")
          + f" ({time.time() - t0:.0f}s)")
  paired.write_per_person(cfg.workdir, person_counts)  # before results.csv: a sweep's marker
  write_results(cfg.workdir, rows, FIELDS)              # names results.csv, the last written
  _write_pictures(cfg, rows, per_person, test, masks, per_photo, log)
  return rows


def _write_pictures(cfg: RunConfig, rows, per_person, test, masks, per_photo, log: Log):
  from opom_jax.eval import figures  # pylint: disable=g-import-not-at-top  (matplotlib)
  workdir = pathlib.Path(cfg.workdir)
  first = np.array([np.flatnonzero(test["identity"] == p)[0]
                    for p in np.unique(test["identity"])[:6]], int)
  learned = {m: masks_of(first, masks[m], m in per_photo, test["identity"]) for m in cfg.methods}
  grid = figures.mask_grid(test["images"][first], learned, cfg.attack.eps,
                           workdir / "masks_preview.png")
  chart = figures.protection_chart(rows, workdir / "protection.png")
  spread = figures.per_person_protection(per_person, workdir / "protection_per_person.png")
  log(f"pictures: {grid}, {chart}, {spread}")


def _targets(cfg: RunConfig, given):
  """(box, name, load) per target; zoo targets are loaded only when their turn comes."""
  if given is not None:
    return [(box, t.name, lambda t=t: t) for box, t in given]
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top
  from opom_jax.run.config import resolved_targets  # pylint: disable=g-import-not-at-top
  return [(box, name, lambda name=name: zoo.load_target(name, cfg.model_root))
          for box, name in resolved_targets(cfg)]


def table(rows: list[dict]) -> str:
  return markdown_table(rows, FIELDS)
