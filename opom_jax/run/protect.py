"""Protect one person's own photo folder: learn their mask, apply it to every photo.

Every photo is aligned (its 112x112 crop and transform are kept), one
universal mask is learned from the crops, and the mask is warped back onto
each original photo, changing only the face region. Photos without a usable
face are listed, not fatal. Output is PNG: JPEG compression would erase much
of an 8/255 perturbation.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
from PIL import Image

from opom_jax import attack
from opom_jax.run.learn import learn_masks, progress_log


@dataclasses.dataclass(frozen=True)
class ProtectResult:
  protected: list[str]
  skipped: list[dict]
  mask_path: str


def protect_folder(photos_dir, output_dir, *, surrogate_names=("foamliu_mbf",), model_root=None,
                   cfg: attack.AttackConfig = attack.AttackConfig(), max_train: int = 10,
                   seed: int = 0, log=None) -> ProtectResult:
  from opom_jax.data import align, faces  # pylint: disable=g-import-not-at-top  (dlib)
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top
  log = log or progress_log
  photos_dir, output_dir = pathlib.Path(photos_dir), pathlib.Path(output_dir)
  if not photos_dir.is_dir():
    raise FileNotFoundError(f"--photos={photos_dir} is not a folder of photos")
  paths = sorted(p for p in photos_dir.iterdir() if p.is_file() and not p.name.startswith("."))
  aligned, skipped = [], []
  for path in paths:
    if path.suffix.lower() not in faces.splits.PHOTO_EXTENSIONS:
      skipped.append({"path": str(path), "reason": "not a photo file extension"})
      continue
    try:
      photo = align.read_rgb(path)
      aligned.append((photo, path, align.align_image(photo)))
    except align.AlignError as e:
      skipped.append({"path": str(path), "reason": e.reason})
  for s in skipped:
    log(f"skipped {s['path']}: {s['reason']}")
  if not aligned:
    raise ValueError(f"no photo in {photos_dir} has a usable face; nothing to protect")
  log(f"{len(aligned)} faces aligned; learning the mask from {min(max_train, len(aligned))} of them")
  train = np.stack([a.crop for _, _, a in aligned[:max_train]]).astype(np.float32)[None]
  surrogates = [zoo.load_surrogate(n, model_root) for n in surrogate_names]
  mask = learn_masks([s.apply for s in surrogates], tuple(s.params for s in surrogates), train,
                     np.ones(train.shape[:2], bool), cfg, seed=seed, log=log)[0]
  output_dir.mkdir(parents=True, exist_ok=True)
  mask_path = output_dir / "mask.npy"
  np.save(mask_path, mask)
  written = []
  for photo, path, face in aligned:
    out = align.paste_back(photo, np.asarray(attack.apply_mask(face.crop, mask)), face.transform)
    target = output_dir / (path.stem + ".png")
    Image.fromarray(out).save(target)
    written.append(str(target))
  (output_dir / "report.json").write_text(json.dumps(
      {"protected": written, "skipped": skipped, "config": dataclasses.asdict(cfg),
       "surrogates": list(surrogate_names)}, indent=1))
  log(f"{len(written)} protected photos in {output_dir} ({len(skipped)} skipped, see report.json)")
  return ProtectResult(written, skipped, str(mask_path))
