"""How much protection survives the real world: full photos, re-detection, re-compression.

Masks are learned on aligned crops, but a system receives the whole protected
photo, finds the face again, aligns it its own way, and often sees a
re-compressed or resized copy. This evaluation, on in-the-wild photos
(CelebA subset: <identity>/<photo>.jpg of varied sizes):

  1. per person, the first `n_train` photos where our detector finds a face
     train the mask (learn_masks on the aligned crops); the rest are tests;
  2. each mask is pasted into the FULL test photos (feathered, through the
     inverse alignment), then each real-world transformation is applied;
  3. each recogniser pipeline (eval.pipelines) re-detects, re-aligns and
     embeds the photo; protection@1 uses the reference's ordered-pair protocol
     against clean full test photos plus distractor people's photos;
  4. beside it, the same targets shown the mask added to the aligned crop
     directly (level "crop"): the gap is what re-detection and re-alignment cost.

Every row also carries the clean error (the same pipeline and transformation
on unprotected photos: what protection a zero mask would score), the share of
protected faces the detector found, and the PSNR of the protected photos.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from opom_jax import attack, paths
from opom_jax.attack.config import AttackConfig
from opom_jax.data import align
from opom_jax.errors import UserError
from opom_jax.eval import metrics, pipelines, real_world
from opom_jax.models import zoo
from opom_jax.run import photo_io
from opom_jax.run.learn import learn_masks
from opom_jax.run.protect import mask_photo
from opom_jax.settings import Choice, Range, check, setting

COLUMNS = ("method", "level", "transform", "target", "detected", "clean_error@1",
           "protection@1", "psnr")


@dataclasses.dataclass(frozen=True)
class EndToEndConfig:
  data_root: str | None = None
  dataset: str = "celeba-subset"
  model_root: str | None = None
  people: int = setting(10, Range(1, 10_000))
  n_train: int = setting(10, Range(1, 1_000))
  min_test: int = setting(2, Range(2, 1_000))
  distractor_people: int = setting(40, Range(0, 10_000))
  distractors_per_person: int = setting(3, Range(1, 1_000))
  surrogate: str = setting("foamliu_mbf", Choice(zoo.surrogate_names, "surrogate"))
  targets: tuple[str, ...] = setting(
      ("dlib_resnet", "w600k_mbf", "jax:foamliu_mbf"),
      Choice(zoo.names, "target", key=lambda n: n.removeprefix("jax:")))
  transforms: tuple[str, ...] = setting(tuple(real_world.TRANSFORMS),
                                        Choice(real_world.TRANSFORMS.names, "transformation"))
  # One mask per person and value: 0 is the plain attack, > 0 adds expectation
  # over JPEG and resizing (AttackConfig.eot_prob).
  eot_probs: tuple[float, ...] = (0.0, 0.5)
  attack: AttackConfig = AttackConfig(rule="base", eps=8.0, iters=16)
  seed: int = 0

  def validate(self) -> "EndToEndConfig":
    check(self)
    for p in self.eot_probs:
      dataclasses.replace(self.attack, eot_prob=p).validate()
    return self


@dataclasses.dataclass
class Person:
  name: str
  train_crops: np.ndarray        # (n_train, 112, 112, 3) uint8
  test_photos: list[np.ndarray]  # full photos, uint8
  test_faces: list[align.AlignedFace]


def _detected_faces(folder, limit: int | None = None):
  """(photo, AlignedFace) of a person's photos where our detector finds a face, in name order."""
  out = []
  for path in sorted(folder.iterdir()):
    try:
      photo = photo_io.read_photo(path)
      out.append((photo, align.align_image(photo)))
    except align.AlignError:
      continue
    if limit and len(out) == limit:
      break
  return out


def load_people(cfg: EndToEndConfig) -> tuple[list[Person], list[np.ndarray]]:
  """The first `people` identities with n_train + min_test detected photos, and the
  distractors: the first photos of the following identities."""
  root = paths.data_root(cfg.data_root) / cfg.dataset
  if not root.is_dir():
    raise UserError(f"--dataset: no folder {root}")
  folders = sorted(p for p in root.iterdir() if p.is_dir())
  people, distractors, used = [], [], 0
  for folder in folders:
    used += 1
    faces = _detected_faces(folder)
    if len(faces) < cfg.n_train + cfg.min_test:
      continue
    train, test = faces[:cfg.n_train], faces[cfg.n_train:]
    people.append(Person(folder.name, np.stack([f.crop for _, f in train]),
                         [p for p, _ in test], [f for _, f in test]))
    if len(people) == cfg.people:
      break
  if len(people) < cfg.people:
    raise UserError(f"--dataset: only {len(people)} people in {root} have "
                    f"{cfg.n_train + cfg.min_test} photos with a detectable face")
  for folder in folders[used:used + cfg.distractor_people]:
    distractors += _detected_faces(folder, cfg.distractors_per_person)
  return people, distractors


def learn(cfg: EndToEndConfig, people: list[Person], eot_prob: float, log=None) -> np.ndarray:
  """(P, 112, 112, 3) masks from each person's aligned training crops."""
  surrogate = zoo.load_surrogate(cfg.surrogate, cfg.model_root)
  images = np.stack([p.train_crops for p in people]).astype(np.float32)
  valid = np.ones(images.shape[:2], bool)
  attack_cfg = dataclasses.replace(cfg.attack, eot_prob=eot_prob)
  return learn_masks([surrogate.apply], (surrogate.params,), images, valid, attack_cfg,
                     seed=cfg.seed, people_per_batch=len(people), log=log)


def _protection_at_1(probe, gallery, identity, distractors) -> float:
  return metrics.protection(probe, gallery, identity, distractors, ks=(1,)).pooled[1]


def _mean_psnr(protected, clean) -> float:
  return float(np.mean([metrics.psnr(a[None], b[None]) for a, b in zip(protected, clean)]))


def method_name(eot_prob: float) -> str:
  return "base" if eot_prob == 0 else f"base+eot{eot_prob:g}"


def evaluate(cfg: EndToEndConfig, people: list[Person], distractors, masks: dict[str, np.ndarray],
             log: Callable[[str], None] = print) -> list[dict]:
  """Table rows (COLUMNS) for masks {method: (P, 112, 112, 3)}; see the module docstring."""
  identity = np.concatenate([[i] * len(p.test_photos) for i, p in enumerate(people)])
  photos = [ph for p in people for ph in p.test_photos]
  faces = [f for p in people for f in p.test_faces]
  places = [pipelines.FacePlace(f.landmarks, f.box) for f in faces]
  recognise = pipelines.PhotoRecognisers(cfg.targets, cfg.model_root)
  gallery, _ = recognise.embed(photos, places)
  distractor_feats, _ = recognise.embed(
      [ph for ph, _ in distractors],
      [pipelines.FacePlace(f.landmarks, f.box) for _, f in distractors])
  log(f"{len(people)} people, {len(photos)} test photos, {len(distractors)} distractors")
  protected = {m: [mask_photo(ph, [f.transform], masks[m][i], cfg.attack.eps)
                   for ph, f, i in zip(photos, faces, identity)] for m in masks}
  rows = []
  for t in cfg.transforms:
    transform = real_world.TRANSFORMS.get(t)
    moved = [transform(ph) for ph in photos]
    moved_places = [pl.moved(m) for pl, (_, m) in zip(places, moved)]
    clean_feats, _ = recognise.embed([ph for ph, _ in moved], moved_places)
    for method, shots in protected.items():
      feats, detected = recognise.embed([transform(ph)[0] for ph in shots], moved_places)
      for target in cfg.targets:
        rows.append({
            "method": method, "level": "photo", "transform": t, "target": target,
            "detected": float(detected.mean()),
            "clean_error@1": _protection_at_1(clean_feats[target], gallery[target], identity,
                                              distractor_feats[target]),
            "protection@1": _protection_at_1(feats[target], gallery[target], identity,
                                             distractor_feats[target]),
            "psnr": _mean_psnr(shots, photos)})
      log(f"{method} {t}: " + ", ".join(f"{r['target']} {r['protection@1']:.2f}"
                                        for r in rows[-len(cfg.targets):]))
  rows += _crop_rows(cfg, faces, identity, distractors, masks)
  return rows


def _crop_rows(cfg, faces, identity, distractors, masks) -> list[dict]:
  """The targets shown the mask added to the aligned test crop itself."""
  recognise = pipelines.CropRecognisers(cfg.targets, cfg.model_root)
  crops = np.stack([f.crop for f in faces])
  gallery = recognise.embed(crops)
  distractor_feats = recognise.embed(np.stack([f.crop for _, f in distractors]))
  rows = []
  for method, mask in masks.items():
    shots = np.asarray(attack.apply_mask(crops, mask[identity]))
    feats = recognise.embed(shots)
    for target in cfg.targets:
      rows.append({
          "method": method, "level": "crop", "transform": "none", "target": target,
          "clean_error@1": _protection_at_1(gallery[target], gallery[target], identity,
                                            distractor_feats[target]),
          "protection@1": _protection_at_1(feats[target], gallery[target], identity,
                                           distractor_feats[target]),
          "psnr": metrics.psnr(shots, crops)})
  return rows


def run(cfg: EndToEndConfig, log: Callable[[str], None] = print):
  """Loads the people, learns one mask per EOT setting; returns (rows, people, masks)."""
  cfg.validate()
  people, distractors = load_people(cfg)
  masks = {method_name(p): learn(cfg, people, p, log) for p in cfg.eot_probs}
  return evaluate(cfg, people, distractors, masks, log), people, masks
