"""Stored results that a run reuses, tied to the settings that made them.

Every artefact a later run may pick up again (masks, finished batches,
checkpoints, cached features) is either stored with the settings it depends on
(masks: refused when they differ, since the work directory's config.json must
describe them) or stored under a path named by a digest of those settings
(caches: other settings simply land elsewhere). Each is checked before reuse
(readable, shape, float32, finite, within its bound), and written through a
temporary file renamed into place, so a run killed mid-write never leaves a
half file that looks complete.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from opom_jax.files import atomic_write
from opom_jax.fingerprint import digest

# Masks are clipped to eps in float32; allow that rounding and no more.
BOUND_SLACK = 1e-4


class DamagedError(Exception):
  """A stored file that cannot be trusted; str() is the reason."""


def plain(value):
  """JSON-compatible form (tuples -> lists), so stored and current settings compare equal."""
  return json.loads(json.dumps(value, sort_keys=True))


def mask_settings(cfg, method: str, names) -> dict:
  """What a run's masks depend on.

  Not people_per_batch, devices or checkpoint_every: every identity has its own
  key (attack.identity_keys) and its own program, so masks do not depend on
  how people are batched. cache_dir only says where the crops are kept.
  """
  data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "cache_dir"}
  return plain({
      "attack": dataclasses.asdict(dataclasses.replace(cfg.attack, loss=method)),
      "surrogates": list(cfg.surrogates),
      "seed": cfg.seed,
      "compute_dtype": cfg.compute_dtype,
      "data": data,
      "people": list(names),
  })


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _short(value) -> str:
  if isinstance(value, list) and len(value) > 4:
    return f"{value[:3]}... ({len(value)} items)"
  return repr(value) if isinstance(value, (str, list)) else str(value)


def _section_defaults() -> dict:
  """Every attack.* and data.* setting (and compute_dtype) at its default, as mask_settings
  spells them."""
  from opom_jax.attack.config import AttackConfig  # pylint: disable=g-import-not-at-top
  from opom_jax.run.config import DataConfig, RunConfig  # pylint: disable=g-import-not-at-top
  return _flatten(plain({"attack": dataclasses.asdict(AttackConfig()),
                          "data": dataclasses.asdict(DataConfig()),
                          "compute_dtype": RunConfig.compute_dtype}))


def settings_change(stored: dict, current: dict) -> str | None:
  """One phrase naming the first differing setting (and how many more), or None.

  A setting that stored settings lack was added to the code after they were made;
  at its default it keeps the earlier behaviour (bit-identical masks), so it is no change.
  """
  old, new = _flatten(stored), _flatten(plain(current))
  defaults = _section_defaults()
  unchanged_later = {k for k in new if k not in old and k in defaults and new[k] == defaults[k]}
  changed = [k for k in dict.fromkeys([*new, *old])
             if old.get(k) != new.get(k) and k not in unchanged_later]
  if not changed:
    return None
  k = changed[0]
  text = f"{k}={_short(old.get(k))}, now {_short(new.get(k))}"
  if len(changed) > 1:
    more = ", ".join(changed[1:4]) + ("..." if len(changed) > 4 else "")
    text += f" (and {len(changed) - 1} more: {more})"
  return text


def array_problem(a: np.ndarray, shape: tuple, bound: float | None = None) -> str | None:
  """Why `a` is not a trustworthy float32 array of `shape` within +-bound; None if it is.

  A None in `shape` accepts any size along that axis.
  """
  if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
    return f"shape {tuple(a.shape)}, expected {tuple(shape)}"
  if a.dtype != np.float32:
    return f"dtype {a.dtype}, expected float32"
  if not np.all(np.isfinite(a)):
    return f"{int(np.size(a) - np.isfinite(a).sum())} values are not finite"
  if bound is not None and a.size and float(np.max(np.abs(a))) > bound + BOUND_SLACK:
    return f"max |value| {float(np.max(np.abs(a))):.4g} exceeds {bound:g}"
  return None


def save_array(path, a: np.ndarray) -> pathlib.Path:
  return atomic_write(path, lambda f: np.save(f, a))


def load_array(path, shape: tuple, bound: float | None = None) -> np.ndarray:
  """A checked .npy file; DamagedError if it is unreadable or fails the checks."""
  try:
    a = np.load(path, allow_pickle=False)
  except Exception as e:  # any failure to parse means the file cannot be trusted
    raise DamagedError(f"unreadable: {_first_line(e)}") from None
  problem = array_problem(a, shape, bound) if isinstance(a, np.ndarray) else "not an array"
  if problem:
    raise DamagedError(problem)
  return a


def write_json(path, obj) -> pathlib.Path:
  return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=True).encode()))


def save_masks(path, masks: np.ndarray, names, settings: dict,
               seconds: float | None) -> pathlib.Path:
  """masks (P, H, W, C) float32 with the people's names, the settings that made them and
  the seconds learning them took (None: not measured, e.g. every batch was reused)."""
  settings = plain(settings)
  timing = {} if seconds is None else {"seconds": seconds}
  return atomic_write(path, lambda f: np.savez(
      f, masks=np.asarray(masks, np.float32), names=np.array(list(names), dtype=str),
      settings=json.dumps(settings, sort_keys=True), settings_hash=digest(settings), **timing))


@dataclasses.dataclass
class StoredMasks:
  masks: np.ndarray
  names: list[str]
  settings: dict | None  # None: a file from before settings were recorded
  seconds: float | None = None  # time spent learning them (None: not recorded)


def read_masks(path) -> StoredMasks:
  """The arrays of a masks file, unchecked; DamagedError if it cannot be read."""
  try:
    with np.load(path, allow_pickle=False) as z:
      masks, names = z["masks"], [str(n) for n in z["names"]]
      settings = json.loads(str(z["settings"])) if "settings" in z.files else None
      seconds = float(z["seconds"]) if "seconds" in z.files else None
  except Exception as e:  # a truncated zip, a missing key, bad JSON: all untrustworthy
    raise DamagedError(f"unreadable: {_first_line(e)}") from None
  return StoredMasks(masks, names, settings, seconds)


def masks_problem(stored: StoredMasks, names, image_shape: tuple, eps: float) -> str | None:
  """Why stored masks cannot be used for these people and this budget; None if they can."""
  if stored.names != list(names):
    return (f"masks of {len(stored.names)} people {_short(stored.names)}, "
            f"expected {_short(list(names))}")
  return array_problem(stored.masks, (len(names),) + tuple(image_shape), eps)


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:160] if text else ''}"
