"""Protect one person's own photo folder: learn their mask (or load a saved
one), apply it to every photo.

Every photo is turned upright (EXIF orientation) and aligned (its 112x112
crops and transforms are kept), one universal mask is learned from the crops,
and the mask is warped back onto each original photo at its full resolution,
faded out at the crop's edge, changing only the face region. Photos without a
usable face (unreadable, empty, too small, no face) are listed in the summary,
never fatal. Output is PNG unless JPEG is asked for: JPEG compression erases
much of an 8/255 perturbation. Outputs carry no EXIF or other metadata.

The user's originals are never at risk: the output folder may not be the
photos folder or lie inside it, each output keeps its original's full name
(`a.jpg` -> `a.jpg.protected.png`, so `a.jpg` and `a.png` cannot collide),
and files named like outputs are never protected again. Every check a user
can fail runs before the slow work (alignment, model loading, learning).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import tempfile

import numpy as np

from opom_jax.data.splits import PHOTO_EXTENSIONS
from opom_jax.errors import UserError
from opom_jax.eval import contact_sheet
from opom_jax.files import atomic_write_text
from opom_jax.run import config as config_lib
from opom_jax.run import mask_file
from opom_jax.run import photo_io
from opom_jax.run.config import ProtectConfig
from opom_jax.run.learn import learn_person_mask
from opom_jax.run.log import progress_log

MASK_FILE = "mask.npz"
REPORT_FILE = "report.json"
SHEET_FILE = "contact_sheet.png"
NOT_A_PHOTO = "not a photo file extension"
ALREADY_PROTECTED = ("a protected output (name ends in "
                     f"{' or '.join(photo_io.SUFFIXES.values())}), not an original")
JPEG_WARNING = ("warning: --format=jpeg: JPEG compression (quality {quality}) weakens the mask; "
                "PNG keeps it intact")


@dataclasses.dataclass(frozen=True)
class ProtectResult:
  protected: list[str]   # output paths, one per protected photo
  skipped: list[dict]    # {"path", "reason"} of every file not protected
  mask_path: str
  faces: dict[str, int]  # output path -> number of faces protected in it


def list_photos(photos_dir: pathlib.Path) -> tuple[list[pathlib.Path], list[dict]]:
  """(originals to protect, skipped files with reasons); hidden files and folders are ignored."""
  if not photos_dir.is_dir():
    raise UserError(f"--photos={photos_dir} is not a folder of photos")
  photos, skipped = [], []
  for path in sorted(p for p in photos_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
    if photo_io.is_protected_output(path.name):
      skipped.append({"path": str(path), "reason": ALREADY_PROTECTED})
    elif path.suffix.lower() not in PHOTO_EXTENSIONS:
      skipped.append({"path": str(path), "reason": NOT_A_PHOTO})
    else:
      photos.append(path)
  if not photos:
    raise UserError(f"--photos={photos_dir} has no photo files to protect "
                    f"(extensions {', '.join(sorted(PHOTO_EXTENSIONS))}; "
                    f"*.protected.* outputs are not counted)")
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
  """Writes `<name>.protected.<png|jpg>` per photo with a face, mask.npz, report.json
  and contact_sheet.png into cfg.output, and logs a summary.

  Every check a user can fail (settings, weights, photos, output folder, saved
  mask) runs before any face is aligned or model loaded.
  """
  log = log or progress_log
  cfg = config_lib.validate(cfg)
  photos_dir = pathlib.Path(cfg.photos).expanduser()
  output_dir = pathlib.Path(cfg.output).expanduser()
  photo_paths, skipped = list_photos(photos_dir)
  saved = mask_file.from_options(cfg.mask, cfg.save_mask)
  prepare_output_dir(photos_dir, output_dir)
  if cfg.format == "jpeg":
    log(JPEG_WARNING.format(quality=cfg.quality))

  from opom_jax.data import align  # pylint: disable=g-import-not-at-top  (dlib)
  aligned = []   # (path, [AlignedFace]); photos are read again to paste, to bound memory
  for path in photo_paths:
    try:
      aligned.append((path, align.align_faces(photo_io.read_photo(path), choose=cfg.face)))
    except align.AlignError as e:
      skipped.append({"path": str(path), "reason": e.reason})
  if not aligned:
    _log_skipped(skipped, log)
    raise UserError(f"no photo in --photos={photos_dir} has a usable face; nothing to protect")

  if saved:
    mask, eps, mask_settings = saved.mask, saved.eps, saved.settings
    log(f"{len(aligned)} photos with faces; applying the saved mask {cfg.mask}")
  else:
    mask, eps, mask_settings = _learn(cfg, [faces[0].crop for _, faces in aligned], log)
  mask_path = mask_file.save_mask(output_dir / MASK_FILE, mask, eps, mask_settings)
  if cfg.save_mask:
    mask_file.save_mask(pathlib.Path(cfg.save_mask).expanduser(), mask, eps, mask_settings)

  originals, faces_in, thumbs = {}, {}, []
  for path, faces in aligned:
    try:
      photo = photo_io.read_photo(path)
    except align.AlignError as e:   # changed or removed since it was aligned
      skipped.append({"path": str(path), "reason": e.reason})
      continue
    out = mask_photo(photo, [f.transform for f in faces], mask, eps)
    target = output_dir / photo_io.output_name(path.name, cfg.format)
    photo_io.write_photo(target, out, cfg.format, cfg.quality)
    originals[str(target)] = str(path)
    faces_in[str(target)] = len(faces)
    if len(thumbs) < contact_sheet.MAX_PHOTOS:
      thumbs.append((contact_sheet.thumbnail(photo), contact_sheet.thumbnail(out), path.name))
  sheet = contact_sheet.contact_sheet(thumbs) if thumbs else None
  if sheet is not None:
    photo_io.write_photo(output_dir / SHEET_FILE, sheet)

  written = list(originals)
  summary = _summary(written, faces_in, skipped)
  report = {"protected": written, "originals": originals, "faces": faces_in, "skipped": skipped,
            "summary": summary, "mask": {"source": cfg.mask or "learned", "eps": eps,
                                         "settings": mask_settings},
            "contact_sheet": str(output_dir / SHEET_FILE) if sheet is not None else None,
            "config": dataclasses.asdict(cfg)}
  atomic_write_text(output_dir / REPORT_FILE, json.dumps(report, indent=1))
  _log_skipped(skipped, log)
  log(f"summary: {summary['photos_protected']} photos protected ({summary['faces_protected']} "
      f"faces) in {output_dir}; {summary['skipped']} skipped"
      + "".join(f"; {n} {reason}" for reason, n in summary["skipped_by_reason"].items())
      + f" (details in {REPORT_FILE})")
  return ProtectResult(written, skipped, str(mask_path), faces_in)


def mask_photo(photo: np.ndarray, transforms: list[np.ndarray], mask: np.ndarray,
               eps: float) -> np.ndarray:
  """The photo (uint8) with the mask pasted onto each face (2x3 photo -> crop transforms).

  Only the bounding box of the faces' footprints is warped and blended, so the
  cost is the faces' size, not the photo's.
  """
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top  (dlib)
  out = np.array(photo, copy=True)
  boxes = [b for b in (align.face_footprint(m, photo.shape[:2]) for m in transforms)
           if b[2] > b[0] and b[3] > b[1]]
  if not boxes:
    return out
  x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
  x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
  shift = np.array([x0, y0], np.float64)
  delta = sum(align.photo_delta(mask, _shifted(m, shift), (y1 - y0, x1 - x0)) for m in transforms)
  # Overlapping faces (--face=all) must not add up beyond the budget.
  region = out[y0:y1, x0:x1]
  out[y0:y1, x0:x1] = np.clip(np.rint(region + np.clip(delta, -eps, eps)), 0, 255).astype(np.uint8)
  return out


def _shifted(m: np.ndarray, origin: np.ndarray) -> np.ndarray:
  """The photo -> crop transform of a box whose top-left pixel is `origin` in the photo."""
  m = np.array(m, np.float64)
  m[:, 2] += m[:, :2] @ origin
  return m


def _learn(cfg: ProtectConfig, crops: list[np.ndarray], log) -> tuple[np.ndarray, float, dict]:
  """The person's mask learned from up to max_train face crops, its eps and its settings."""
  log(f"{len(crops)} photos with faces; learning the mask from {min(len(crops), cfg.max_train)} of them")
  crops = crops[:cfg.max_train]
  mask = learn_person_mask(crops, cfg.attack, cfg.surrogates, cfg.model_root, seed=cfg.seed, log=log)
  settings = {"attack": dataclasses.asdict(cfg.attack), "surrogates": list(cfg.surrogates),
              "seed": cfg.seed, "face": cfg.face, "photos": cfg.photos,
              "trained_on": len(crops)}
  return mask, float(cfg.attack.eps), settings


def _summary(written: list[str], faces_in: dict[str, int], skipped: list[dict]) -> dict:
  reasons = collections.Counter(s["reason"] for s in skipped)
  return {"photos_protected": len(written), "faces_protected": sum(faces_in.values()),
          "skipped": len(skipped), "skipped_by_reason": dict(sorted(reasons.items()))}


def _log_skipped(skipped: list[dict], log) -> None:
  for s in skipped:
    log(f"skipped {s['path']}: {s['reason']}")
