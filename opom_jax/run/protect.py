"""Protect one person's own photo folder: learn their mask, apply it to every photo.

Every photo is aligned (its 112x112 crop and transform are kept), one
universal mask is learned from the crops, and the mask is warped back onto
each original photo, changing only the face region. Photos without a usable
face are listed, not fatal. Output is PNG: JPEG compression would erase much
of an 8/255 perturbation.

The user's originals are never at risk: the output folder may not be the
photos folder or lie inside it, each output keeps its original's full name
(`a.jpg` -> `a.jpg.protected.png`, so `a.jpg` and `a.png` cannot collide),
and files named like outputs are never protected again. Every check a user
can fail runs before the slow work (alignment, model loading, learning).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile

import numpy as np
from PIL import Image

from opom_jax import attack
from opom_jax.data.splits import PHOTO_EXTENSIONS
from opom_jax.errors import UserError
from opom_jax.files import atomic_write
from opom_jax.run import config as config_lib
from opom_jax.run.config import ProtectConfig
from opom_jax.run.learn import learn_masks
from opom_jax.run.log import progress_log

PROTECTED_SUFFIX = ".protected.png"
MASK_FILE = "mask.npy"
REPORT_FILE = "report.json"
NOT_A_PHOTO = "not a photo file extension"
ALREADY_PROTECTED = f"a protected output (name ends in {PROTECTED_SUFFIX}), not an original"


@dataclasses.dataclass(frozen=True)
class ProtectResult:
  protected: list[str]   # output paths, one per protected photo
  skipped: list[dict]    # {"path", "reason"} of every file not protected
  mask_path: str


def output_name(photo_name: str) -> str:
  """The output file name of a photo: its whole name (extension included) + PROTECTED_SUFFIX."""
  return photo_name + PROTECTED_SUFFIX


def is_protected_output(photo_name: str) -> bool:
  return photo_name.lower().endswith(PROTECTED_SUFFIX)


def list_photos(photos_dir: pathlib.Path) -> tuple[list[pathlib.Path], list[dict]]:
  """(originals to protect, skipped files with reasons); hidden files and folders are ignored."""
  if not photos_dir.is_dir():
    raise UserError(f"--photos={photos_dir} is not a folder of photos")
  photos, skipped = [], []
  for path in sorted(p for p in photos_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
    if is_protected_output(path.name):
      skipped.append({"path": str(path), "reason": ALREADY_PROTECTED})
    elif path.suffix.lower() not in PHOTO_EXTENSIONS:
      skipped.append({"path": str(path), "reason": NOT_A_PHOTO})
    else:
      photos.append(path)
  if not photos:
    raise UserError(f"--photos={photos_dir} has no photo files to protect "
                    f"(extensions {', '.join(sorted(PHOTO_EXTENSIONS))}; "
                    f"*{PROTECTED_SUFFIX} outputs are not counted)")
  return photos, skipped


def prepare_output_dir(photos_dir: pathlib.Path, output_dir: pathlib.Path) -> None:
  """Creates the output folder and proves it writable; refuses one inside the photos folder."""
  photos_real, output_real = photos_dir.resolve(), output_dir.resolve()
  if output_real == photos_real or photos_real in output_real.parents:
    raise UserError(f"--output={output_dir} is inside --photos={photos_dir} "
                    f"(resolved: {output_real}); choose a folder outside the photos")
  if output_real.exists() and not output_real.is_dir():
    raise UserError(f"--output={output_dir} is a file, not a folder")
  try:
    output_real.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=output_real, prefix=".write_probe_"):
      pass
  except OSError as e:
    raise UserError(f"--output={output_dir} cannot be created or written: "
                    f"{e.strerror or e}") from None


def protect_folder(cfg: ProtectConfig, log=None) -> ProtectResult:
  """Writes `<name>.protected.png` per photo with a face, mask.npy and report.json.

  Every check a user can fail (settings, weights, photos, output folder) runs
  before any face is aligned or model loaded.
  """
  log = log or progress_log
  cfg = config_lib.validate(cfg)
  photos_dir = pathlib.Path(cfg.photos).expanduser()
  output_dir = pathlib.Path(cfg.output).expanduser()
  photo_paths, skipped = list_photos(photos_dir)
  prepare_output_dir(photos_dir, output_dir)

  from opom_jax.data import align  # pylint: disable=g-import-not-at-top  (dlib)
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top
  aligned = []
  for path in photo_paths:
    try:
      photo = align.read_rgb(path)
      aligned.append((photo, path, align.align_image(photo)))
    except align.AlignError as e:
      skipped.append({"path": str(path), "reason": e.reason})
  for s in skipped:
    log(f"skipped {s['path']}: {s['reason']}")
  if not aligned:
    raise UserError(f"no photo in --photos={photos_dir} has a usable face; nothing to protect")
  log(f"{len(aligned)} faces aligned; learning the mask from {min(cfg.max_train, len(aligned))} of them")
  train = np.stack([a.crop for _, _, a in aligned[:cfg.max_train]]).astype(np.float32)[None]
  surrogates = [zoo.load_surrogate(n, cfg.model_root) for n in cfg.surrogates]
  mask = learn_masks([s.apply for s in surrogates], tuple(s.params for s in surrogates), train,
                     np.ones(train.shape[:2], bool), cfg.attack, seed=cfg.seed, log=log)[0]
  mask_path = output_dir / MASK_FILE
  atomic_write(mask_path, lambda f: np.save(f, mask))
  originals = {}
  for photo, path, face in aligned:
    out = align.paste_back(photo, np.asarray(attack.apply_mask(face.crop, mask)), face.transform)
    target = output_dir / output_name(path.name)
    atomic_write(target, lambda f, out=out: Image.fromarray(out).save(f, format="PNG"))
    originals[str(target)] = str(path)
  written = list(originals)
  report = {"protected": written, "originals": originals, "skipped": skipped,
            "config": dataclasses.asdict(cfg)}
  atomic_write(output_dir / REPORT_FILE, lambda f: f.write(json.dumps(report, indent=1).encode()))
  log(f"{len(written)} protected photos in {output_dir} ({len(skipped)} skipped, see {REPORT_FILE})")
  return ProtectResult(written, skipped, str(mask_path))
