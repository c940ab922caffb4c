"""A person's mask saved with the settings that made it, and checked when loaded.

The file is an .npz holding `mask` (112, 112, 3) float32 pixel units, `eps`
(the L-inf budget it was learned under) and `settings` (JSON text). A loaded
mask must be within its own eps: a file edited or mixed up with another array
could otherwise repaint a face.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import zipfile

import numpy as np

from opom_jax.attack.config import MAX_EPS
from opom_jax.data.align import CROP_SIZE
from opom_jax.errors import UserError
from opom_jax.files import atomic_write

SHAPE = (CROP_SIZE, CROP_SIZE, 3)
# float32 storage of a mask clipped to eps in float32 may exceed eps by an ulp.
TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class SavedMask:
  mask: np.ndarray   # (112, 112, 3) float32
  eps: float
  settings: dict


def save_mask(path: str | os.PathLike, mask: np.ndarray, eps: float, settings: dict):
  """Writes the mask, its eps and its settings (JSON-able) atomically."""
  mask = np.asarray(mask, np.float32)
  if mask.shape != SHAPE:
    raise ValueError(f"save_mask: expected a {SHAPE} mask, got {mask.shape}")
  return atomic_write(path, lambda f: np.savez(
      f, mask=mask, eps=np.float64(eps), settings=np.array(json.dumps(settings, sort_keys=True))))


def load_mask(path: str | os.PathLike, flag: str = "--mask") -> SavedMask:
  """The saved mask at `path`; UserError naming `flag` and the file if it is not a valid one."""

  def refuse(problem: str):
    return UserError(f"{flag}={path} {problem}")

  not_a_mask = "is not a saved mask (.npz with mask, eps, settings)"
  try:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
      raise refuse(not_a_mask)
    with data:
      missing = sorted({"mask", "eps", "settings"} - set(data.files))
      if missing:
        raise refuse(f"is not a saved mask: it lacks {', '.join(missing)}")
      mask, eps, settings = data["mask"], data["eps"], data["settings"]
  except UserError:
    raise
  except FileNotFoundError:
    raise refuse("does not exist") from None
  except (ValueError, EOFError, zipfile.BadZipFile):
    # numpy's own message would suggest loading the file with pickle: never for a user's file.
    raise refuse(not_a_mask) from None
  except OSError as e:
    raise refuse(f"cannot be read: {e.strerror or e}") from None
  if mask.shape != SHAPE:
    raise refuse(f"holds a mask of shape {mask.shape}; expected {SHAPE}")
  if (eps.shape != () or not np.issubdtype(eps.dtype, np.number) or not np.isfinite(eps)
      or not 0 < eps <= MAX_EPS):
    raise refuse(f"holds eps={eps}; expected one number in (0, {MAX_EPS:g}]")
  if not np.issubdtype(mask.dtype, np.floating) or not np.isfinite(mask).all():
    raise refuse("holds a mask with non-finite (or non-float) values")
  largest = float(np.abs(mask).max())
  if largest > float(eps) + TOLERANCE:
    raise refuse(f"holds a mask reaching {largest:g}, beyond its own eps={float(eps):g}")
  try:
    settings = json.loads(str(settings))
  except ValueError:
    raise refuse("holds settings that are not JSON") from None
  return SavedMask(mask.astype(np.float32), float(eps), settings)


def from_options(mask: str, save_mask: str) -> SavedMask | None:
  """The saved mask `--mask` names (None: one is to be learned), after checking that
  `--save_mask` can be written; UserError naming the flag otherwise."""
  if mask and save_mask:
    raise UserError(f"--save_mask={save_mask} keeps a learned mask; "
                    f"--mask={mask} is already a saved one")
  if save_mask and pathlib.Path(save_mask).expanduser().is_dir():
    raise UserError(f"--save_mask={save_mask} is a folder; name the .npz file to write")
  return load_mask(pathlib.Path(mask).expanduser()) if mask else None
