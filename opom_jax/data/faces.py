"""Aligns every photo of a `<root>/<identity>/<photo>` folder, never crashing.

Photos come out in a fixed order (identity, then file name); each one either
yields a record or lands in the skip report with a reason ('unreadable
image', 'no face found', ...). Detection is the slow part (~50 ms a photo on
one core), so `num_workers > 1` spreads it over processes, keeping the order.
"""
import collections
import dataclasses
import functools
import multiprocessing
import os
import time
from typing import Iterable, Iterator

from absl import logging

from opom_jax.data import align
from opom_jax.data import splits


@dataclasses.dataclass(frozen=True)
class Skipped:
  path: str
  reason: str
  identity: str = ""
  role: str = ""

  def as_dict(self) -> dict[str, str]:
    return dataclasses.asdict(self)


def _align_one(photo: splits.Photo, upsample: int = 1, border: float = 0.0):
  """Worker: a record dict, or a Skipped (exceptions never cross processes)."""
  try:
    face = align.align_file(photo.path, upsample, border)
  except align.AlignError as e:
    return Skipped(photo.path, e.reason, photo.identity, photo.role)
  except Exception as e:  # pylint: disable=broad-except
    # A bad file must not stop a 13k-photo run; report what happened.
    return Skipped(photo.path, f"alignment failed ({type(e).__name__}: {e})",
                   photo.identity, photo.role)
  return dict(identity=photo.identity, role=photo.role, path=photo.path,
              crop=face.crop, landmarks=face.landmarks,
              transform=face.transform, box=face.box,
              image_size=face.image_size)


def iter_faces(photos: Iterable[splits.Photo] | str | os.PathLike,
               skipped: list[Skipped] | None = None, *, num_workers: int = 1,
               log_every: int = 500, upsample: int = 1,
               border: float = 0.0) -> Iterator[dict]:
  """Yields aligned-face records in input order, appending failures to `skipped`.

  `photos` is a list of `splits.Photo` (e.g. from `splits.make_split`) or a
  folder root, in which case every photo of every identity is aligned (role
  '') and non-photo files are reported too. `upsample` and `border` go to
  the detector (align.detect_faces).

  Record keys: identity, role, path, crop (112, 112, 3) uint8, landmarks
  (5, 2), transform (2, 3) photo -> crop, box (4,), image_size (h, w).
  """
  if skipped is None:
    skipped = []
  if isinstance(photos, (str, os.PathLike)):
    listing = splits.list_identities(photos)
    skipped.extend(Skipped(p, r) for p, r in listing.ignored)
    photos = [splits.Photo(name, p, "") for name, ps in listing.photos.items()
              for p in ps]
  photos = list(photos)
  total, done, start = len(photos), 0, time.monotonic()
  align_one = functools.partial(_align_one, upsample=upsample, border=border)
  if num_workers > 1 and total > 1:
    # spawn: the parent may hold JAX/XLA threads, which fork would copy.
    pool = multiprocessing.get_context("spawn").Pool(num_workers)
    results = pool.imap(align_one, photos, chunksize=8)
  else:
    pool, results = None, map(align_one, photos)
  try:
    for result in results:
      done += 1
      if log_every and (done % log_every == 0 or done == total):
        rate = done / max(time.monotonic() - start, 1e-9)
        logging.info("aligned %d/%d photos (%.1f/s, %d skipped, ~%.0f s left)",
                     done, total, rate, len(skipped), (total - done) / rate)
      if isinstance(result, Skipped):
        skipped.append(result)
      else:
        yield result
  finally:
    if pool is not None:
      pool.terminate()


def align_folder(root: str | os.PathLike, *, num_workers: int = 1,
                 log_every: int = 500) -> tuple[list[dict], list[Skipped]]:
  """Every photo of `<root>/<identity>/<photo>` aligned: (records, skipped)."""
  skipped = []
  records = list(iter_faces(root, skipped, num_workers=num_workers,
                            log_every=log_every))
  return records, skipped


def failure_report(skipped: Iterable[dict], aligned: dict[tuple[str, str], int]) -> list[str]:
  """One line per person and role with photos that could not be aligned.

  `skipped`: Skipped.as_dict() entries; `aligned`: (identity, role) -> photos
  aligned. A person's line gives the count, each reason with its files, e.g.
  `s33 (train): 2 of 5 photos not aligned: no face found (3.pgm, 7.pgm)`.
  One-photo distractors that failed (31 of LFW's 4069) share one line.
  """
  failed = collections.defaultdict(list)
  for s in skipped:
    if s.get("identity"):   # non-photo files have no person (listed in skipped.json)
      failed[(s["identity"], s["role"])].append(s)
  lines, singles = [], collections.Counter()
  for (identity, role), items in sorted(failed.items()):
    total = len(items) + aligned.get((identity, role), 0)
    if role == splits.DISTRACTOR and total == 1:
      singles[items[0]["reason"]] += 1
      continue
    by_reason = collections.defaultdict(list)
    for s in items:
      by_reason[s["reason"]].append(os.path.basename(s["path"]))
    reasons = "; ".join(f"{r} ({', '.join(files)})" for r, files in by_reason.items())
    lines.append(f"{identity} ({role}): {len(items)} of {total} photos not aligned: {reasons}")
  if singles:
    counts = ", ".join(f"{r}: {n}" for r, n in sorted(singles.items()))
    lines.append(f"{sum(singles.values())} one-photo distractors not aligned ({counts})")
  return lines
