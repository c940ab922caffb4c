"""Deterministic per-identity split of a `<root>/<identity>/<photo>` folder.

The rule of the official OPOM figures on LFW: people with at least
`min_photos` photos (counted in the folder, before detection) are protected
identities; their photos sorted by file name give the first `n_train` to
mask training and the rest to test. People with exactly one photo are
distractors. The split is decided on names only; photos without a detected
face are dropped afterwards (e.g. Andy_Roddick: 15 photos, 0005 has no face,
so 9 train / 5 test).
"""
import dataclasses
import os
import pathlib
from typing import Iterable, Sequence

TRAIN, TEST, DISTRACTOR = "train", "test", "distractor"
ROLES = (TRAIN, TEST, DISTRACTOR)

# What counts as a photo when counting a person's photos. Anything else in an
# identity folder is reported by `list_identities` and never counted.
PHOTO_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".pnm", ".gif",
    ".tif", ".tiff", ".webp"})


@dataclasses.dataclass(frozen=True)
class Photo:
  identity: str
  path: str   # absolute path
  role: str   # one of ROLES


@dataclasses.dataclass(frozen=True)
class Listing:
  photos: dict[str, list[str]]   # identity -> photo paths sorted by file name
  ignored: list[tuple[str, str]]  # (path, reason) of non-photo entries


def list_identities(root: str | os.PathLike) -> Listing:
  """Identity folders of `root` (sorted) with their photos sorted by name.

  Hidden entries are ignored silently; loose files at the top level and
  files with a non-photo extension are returned in `ignored` with a reason.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(
        f"data root {root} is not a directory: it must hold one folder per "
        "identity, <root>/<identity>/<photo>.")
  photos, ignored = {}, []
  for entry in sorted(os.scandir(root), key=lambda e: e.name):
    if entry.name.startswith("."):
      continue
    if not entry.is_dir():
      ignored.append((entry.path, "not inside an identity folder"))
      continue
    names = []
    for f in sorted(os.scandir(entry.path), key=lambda e: e.name):
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
  """Protected identities: >= min_photos photos, alphabetical.

  `names` restricts to an explicit list (each must exist and qualify);
  `max_people` keeps the first K alphabetically after that.
  """
  if names is not None:
    names = sorted(set(names))
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
    people = sorted(n for n, p in photos.items() if len(p) >= min_photos)
  if max_people is not None:
    if max_people < 0:
      raise ValueError(f"max_people must be >= 0, got {max_people}")
    people = people[:max_people]
  return people


def select_distractors(photos: dict[str, Sequence[str]], *,
                       exclude: Iterable[str] = (), photos_per_person: int = 1,
                       max_distractors: int | None = None) -> list[str]:
  """Distractor identities: exactly `photos_per_person` photos, alphabetical."""
  exclude = set(exclude)
  people = sorted(n for n, p in photos.items()
                  if len(p) == photos_per_person and n not in exclude)
  return people if max_distractors is None else people[:max_distractors]


def make_split(photos: dict[str, Sequence[str]], *, n_train: int = 10,
               min_photos: int = 15, max_people: int | None = None,
               names: Iterable[str] | None = None,
               include_distractors: bool = True,
               max_distractors: int | None = None) -> list[Photo]:
  """The ordered list of photos with their role (before any detection).

  Order: protected people alphabetically (their photos by file name, train
  then test), then distractors alphabetically.
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
    ordered = sorted(photos[name], key=os.path.basename)
    out += [Photo(name, p, TRAIN) for p in ordered[:n_train]]
    out += [Photo(name, p, TEST) for p in ordered[n_train:]]
  if include_distractors:
    for name in select_distractors(photos, exclude=people,
                                   max_distractors=max_distractors):
      out += [Photo(name, p, DISTRACTOR) for p in photos[name]]
  return out
