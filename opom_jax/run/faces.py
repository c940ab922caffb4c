"""The aligned faces of a run's data set, as arrays grouped by role and person.

The aligned crops are cached by tfds_builder under a config name that digests
every selection setting (root, n_train, min_photos, max_people, people,
distractors and where they come from, detector settings), so other data
settings never read another selection's crops.
"""
from __future__ import annotations

import pathlib
import time

import numpy as np

from opom_jax.errors import UserError
from opom_jax.run import distributed
from opom_jax.run.config import RunConfig
from opom_jax.run.log import Log, progress_log


def load_faces(cfg: RunConfig, log: Log = None) -> dict:
  from opom_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top  (dlib, tfds)
  log = log or progress_log
  d = cfg.data
  root = pathlib.Path(d.data_root) / d.dataset
  log(f"faces: aligning or reading the cached crops of {root} in {d.cache_dir}")
  t0 = time.time()
  # In a multi-process run each process aligns its share of the people into the cache.
  others = pathlib.Path(d.data_root) / d.distractor_dataset if d.distractor_dataset else None
  faces = tfds_builder.load_split(
      root, d.cache_dir, log=log, share=distributed.alignment_share(tfds_builder.Share),
      n_train=d.n_train, min_photos=d.min_photos,
      max_people=None if d.people else d.max_people, people=list(d.people) or None,
      include_distractors=True,
      max_distractors=None if d.max_distractors < 0 else d.max_distractors,
      distractor_root=others, unselected_distractors=d.unselected_distractors,
      upsample=d.detect_upsample, border=d.detect_border)
  if d.max_test > 0:
    faces["test"] = first_per_identity(faces["test"], d.max_test)
  counts = {role: len(v["images"]) for role, v in faces.items()}
  log(f"faces: {counts} photos; {len(faces['train']['names'])} protected people, "
      f"{len(faces['distractor']['names'])} distractor people; {time.time() - t0:.0f}s")
  if not counts.get("train"):
    raise UserError(f"no eligible people in {root} (need >= {d.min_photos} photos each; "
                    "see --min_photos, --people)")
  return faces


def first_per_identity(split: dict, k: int) -> dict:
  """The split with only the first k rows of each identity (rows keep their order)."""
  ident = split["identity"]
  keep = np.zeros(len(ident), bool)
  for p in np.unique(ident):
    keep[np.flatnonzero(ident == p)[:k]] = True
  rows = np.flatnonzero(keep)
  per_row = lambda key, v: key != "names" and len(v) == len(ident)  # names: one per identity
  return {key: ((v[rows] if isinstance(v, np.ndarray) else [v[i] for i in rows])
                if per_row(key, v) else v) for key, v in split.items()}


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
