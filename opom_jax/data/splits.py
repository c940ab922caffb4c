"""Deterministic per-identity split of a `<root>/<identity>/<photo>` folder.

The rule of the official OPOM figures on LFW: people with at least
`min_photos` photos (counted in the folder, before detection) are protected
identities; their photos sorted by file name give the first `n_train` to
mask training and the rest to test. People with exactly one photo are
distractors. The split is decided on names only; photos without a detected
face are dropped afterwards (e.g. Andy_Roddick: 15 photos, 0005 has no face,
so 9 train / 5 test).

Names sort naturally (digit runs by value: AT&T's s2 before s10, 2.pgm before
10.pgm), which for LFW's and CelebA's zero-padded names is the plain order.
Distractors may also come from another folder (its one-photo people, e.g.
LFW's as distractors of CelebA) and from the eligible people of the protected
folder that the selection left out (AT&T's other people).
"""
import dataclasses
import os
import pathlib
import re
from typing import Iterable, Sequence

TRAIN, TEST, DISTRACTOR = "train", "test", "distractor"
ROLES = (TRAIN, TEST, DISTRACTOR)

# What counts as a photo when counting a person's photos. Anything else in an
# identity folder is reported by `list_identities` and never counted.
PHOTO_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".pnm", ".gif",
    ".tif", ".tiff", ".webp"})


def natural_key(name: str) -> tuple:
  """Sort key comparing digit runs by value; the name itself breaks ties ('01' vs '1')."""
  parts = re.split(r"(\d+)", name)
  return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


@dataclasses.dataclass(frozen=True)
class Photo:
  identity: str
  path: str   # absolute path
  role: str   # one of ROLES


@dataclasses.dataclass(frozen=True)
class Listing:
  photos: dict[str, list[str]]   # identity -> photo paths in natural file-name order
  ignored: list[tuple[str, str]]  # (path, reason) of non-photo entries


def list_identities(root: str | os.PathLike) -> Listing:
  """Identity folders of `root` with their photos, both in natural name order.

  Hidden entries are ignored silently; loose files at the top level and
  files with a non-photo extension are returned in `ignored` with a reason.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(
        f"data root {root} is not a directory: it must hold one folder per "
        "identity, <root>/<identity>/<photo>.")
  photos, ignored = {}, []
  for entry in sorted(os.scandir(root), key=lambda e: natural_key(e.name)):
    if entry.name.startswith("."):
      continue
    if not entry.is_dir():
      ignored.append((entry.path, "not inside an identity folder"))
      continue
    names = []
    for f in sorted(os.scandir(entry.path), key=lambda e: natural_key(e.name)):
      if f.name.startswith("."):
        continue
      if not f.is_file():
        ignored.append((f.path, "not a file"))
      elif os.path.splitext(f.name)[1].lower() not in PHOTO_EXTENSIONS:
        ignored.append((f.path, "not a photo file extension"))
      else:
        names.append(os.path.abspath(f.path))
    photos[entry.name] = names
  return Listing(photos=photos, ignored=ignored)


def select_people(photos: dict[str, Sequence[str]], *, min_photos: int = 15,
                  max_people: int | None = None,
                  names: Iterable[str] | None = None) -> list[str]:
  """Protected identities: >= min_photos photos, in natural order.

  `names` restricts to an explicit list (each must exist and qualify);
  `max_people` keeps the first K of them.
  """
  if names is not None:
    names = sorted(set(names), key=natural_key)
    missing = [n for n in names if n not in photos]
    if missing:
      raise ValueError(f"identities not found in the data root: {missing}")
    few = [f"{n} ({len(photos[n])})" for n in names
           if len(photos[n]) < min_photos]
    if few:
      raise ValueError(
          f"identities with fewer than min_photos={min_photos} photos: {few}; "
          "lower min_photos to include them.")
    people = names
  else:
    people = sorted((n for n, p in photos.items() if len(p) >= min_photos), key=natural_key)
  if max_people is not None:
    if max_people < 0:
      raise ValueError(f"max_people must be >= 0, got {max_people}")
    people = people[:max_people]
  return people


def select_distractors(photos: dict[str, Sequence[str]], *,
                       exclude: Iterable[str] = (), photos_per_person: int = 1,
                       max_distractors: int | None = None) -> list[str]:
  """Distractor identities: exactly `photos_per_person` photos, in natural order."""
  exclude = set(exclude)
  people = sorted((n for n, p in photos.items()
                   if len(p) == photos_per_person and n not in exclude), key=natural_key)
  return people if max_distractors is None else people[:max_distractors]


def make_split(photos: dict[str, Sequence[str]], *, n_train: int = 10,
               min_photos: int = 15, max_people: int | None = None,
               names: Iterable[str] | None = None,
               include_distractors: bool = True,
               max_distractors: int | None = None,
               distractor_photos: dict[str, Sequence[str]] | None = None,
               distractor_prefix: str = "",
               unselected_distractors: bool = False) -> list[Photo]:
  """The ordered list of photos with their role (before any detection).

  Distractors: the one-photo people of `distractor_photos` (another folder's
  listing; None: `photos` itself), the first `max_distractors` of them, their
  identities prefixed with `distractor_prefix` so that they never merge with
  a protected name; with `unselected_distractors`, before them, every photo of
  the people of `photos` who qualify (>= min_photos) but were not selected.

  Order: protected people (their photos by file name, train then test), then
  unselected people, then one-photo distractors, each group in natural order.
  """
  if n_train < 1:
    raise ValueError(f"n_train must be >= 1, got {n_train}")
  if min_photos <= n_train:
    raise ValueError(
        f"min_photos={min_photos} must exceed n_train={n_train} so every "
        "protected person keeps at least one test photo.")
  people = select_people(photos, min_photos=min_photos, max_people=max_people,
                         names=names)
  out = []
  for name in people:
    ordered = sorted(photos[name], key=lambda p: natural_key(os.path.basename(p)))
    out += [Photo(name, p, TRAIN) for p in ordered[:n_train]]
    out += [Photo(name, p, TEST) for p in ordered[n_train:]]
  if not include_distractors:
    return out
  if unselected_distractors:
    chosen = set(people)
    for name in select_people(photos, min_photos=min_photos):
      if name not in chosen:
        out += [Photo(name, p, DISTRACTOR) for p in photos[name]]
  own = distractor_photos is None
  singles = photos if own else distractor_photos
  for name in select_distractors(singles, exclude=people if own else (),
                                 max_distractors=max_distractors):
    out += [Photo(distractor_prefix + name, p, DISTRACTOR) for p in singles[name]]
  return out
