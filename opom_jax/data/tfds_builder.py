"""tensorflow-datasets builder of aligned faces, stored as array_record.

One tfds split per role ('train', 'test', 'distractor'), examples in the
deterministic order of `splits.make_split`. Prepared once into `data_dir`;
the prepared dataset is the cache, so later calls read it back without
detecting again. Works without TensorFlow: features are raw numpy tensors
and text (no image codec), written as array_record and read back through
`as_data_source()`.

Photos that could not be aligned are listed in the dataset's metadata
(`metadata.json`, key 'skipped') and in `skipped.json` next to it;
`load_split` says per person what failed and drops a protected person left
without a training or a test photo.
"""
import collections
import dataclasses
import hashlib
import json
import os
import re
from typing import Callable

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from opom_jax import files
from opom_jax.data import faces
from opom_jax.data import splits

SKIP_FILE = "skipped.json"
_FORMAT = "array_record"


@dataclasses.dataclass(eq=False)
class FacesConfig(tfds.core.BuilderConfig):
  """Which photos of which folder; the name is a digest of all of it."""
  root: str = ""
  n_train: int = 10
  min_photos: int = 15
  max_people: int | None = None
  people: tuple[str, ...] | None = None
  include_distractors: bool = True
  max_distractors: int | None = None
  distractor_root: str = ""        # one-photo people of this folder ("": root's)
  unselected_distractors: bool = False
  upsample: int = 1                # detector settings (align.detect_faces)
  border: float = 0.0


# Settings added after the first caches were written: they enter the config
# name only away from these defaults, so those caches keep their names.
_LATER_DEFAULTS = dict(distractor_root="", unselected_distractors=False,
                       upsample=1, border=0.0)


def make_config(root, *, n_train=10, min_photos=15, max_people=None,
                people=None, include_distractors=True, max_distractors=None,
                distractor_root=None, unselected_distractors=False,
                upsample=1, border=0.0) -> FacesConfig:
  root = os.path.abspath(os.fspath(root))
  people = None if people is None else tuple(sorted(set(people)))
  distractor_root = (os.path.abspath(os.fspath(distractor_root))
                     if distractor_root else "")
  if distractor_root == root:
    distractor_root = ""
  params = dict(root=root, n_train=n_train, min_photos=min_photos,
                max_people=max_people, people=people,
                include_distractors=include_distractors,
                max_distractors=max_distractors)
  later = dict(distractor_root=distractor_root,
               unselected_distractors=unselected_distractors,
               upsample=upsample, border=float(border))
  digested = {**params, **{k: v for k, v in later.items()
                           if v != _LATER_DEFAULTS[k]}}
  digest = hashlib.sha1(
      json.dumps(digested, sort_keys=True).encode()).hexdigest()[:10]
  stem = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(root)) or "root"
  return FacesConfig(name=f"{stem}_{digest}", description=json.dumps(digested),
                     **params, **later)


class OpomFaces(tfds.core.GeneratorBasedBuilder):
  """ArcFace-aligned 112x112 faces of a `<root>/<identity>/<photo>` folder."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "dlib HOG + 68-pt -> 5-pt Umeyama alignment."}
  BUILDER_CONFIGS = []  # built per call by make_config

  # tfds 4.9.10 finds this file through `importlib_resources`, a backport it
  # only requires on Python < 3.9 (ModuleNotFoundError here); say it directly.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, *, num_workers: int = 1, log_every: int = 500,
               aligned: dict | None = None, **kwargs):
    self._num_workers = num_workers
    self._log_every = log_every
    self._aligned = aligned  # photo path -> record or Skipped, aligned beforehand
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(112, 112, 3), dtype=np.uint8),
            "landmarks": tfds.features.Tensor(shape=(5, 2), dtype=np.float32),
            "transform": tfds.features.Tensor(shape=(2, 3), dtype=np.float32),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.int32),
            "image_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "identity": tfds.features.Text(),
            "role": tfds.features.Text(),
            "path": tfds.features.Text(),  # relative to the root
        }),
        # The order is part of the protocol (sorted names), keep it.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Local folder, nothing to download.
    cfg = self.builder_config
    plan, ignored = _plan(cfg)
    self.info.metadata["root"] = cfg.root
    self.info.metadata["skipped"] = [
        faces.Skipped(p, r).as_dict() for p, r in ignored]
    # tfds cannot write an empty split: roles with no photo are left out
    # (load_split returns empty arrays for them).
    return {role: self._generate_examples(role, photos)
            for role in splits.ROLES
            if (photos := [p for p in plan if p.role == role])}

  def _aligned_faces(self, photos, skipped):
    """Records in photo order: aligned now, or taken from the processes' parts."""
    if self._aligned is None:
      return faces.iter_faces(photos, skipped, num_workers=self._num_workers,
                              log_every=self._log_every,
                              upsample=self.builder_config.upsample,
                              border=self.builder_config.border)
    chosen = [self._aligned[p.path] for p in photos]
    skipped.extend(r for r in chosen if isinstance(r, faces.Skipped))
    return (r for r in chosen if not isinstance(r, faces.Skipped))

  def _generate_examples(self, role, photos):
    skipped, count = [], 0
    try:
      for rec in self._aligned_faces(photos, skipped):
        # Another folder's distractors come out as ../<folder>/...
        rel = os.path.relpath(rec["path"], self.builder_config.root)
        yield rel, {
            "image": rec["crop"],
            "landmarks": rec["landmarks"].astype(np.float32),
            "transform": rec["transform"].astype(np.float32),
            "box": rec["box"].astype(np.int32),
            "image_size": np.asarray(rec["image_size"], np.int32),
            "identity": rec["identity"],
            "role": rec["role"],
            "path": rel,
        }
        count += 1
    finally:
      self.info.metadata["skipped"] += [s.as_dict() for s in skipped]
    if not count:
      reasons = sorted({s.reason for s in skipped})
      raise ValueError(
          f"none of the {len(photos)} '{role}' photos under "
          f"{self.builder_config.root} could be aligned ({reasons}); fix the "
          "photos or change the selection (people, min_photos, n_train).")


def _plan(cfg: FacesConfig) -> tuple[list[splits.Photo], list]:
  """The selected photos in dataset order, and the files that are not photos."""
  listing = splits.list_identities(cfg.root)
  ignored = list(listing.ignored)
  others = None
  if cfg.distractor_root and cfg.include_distractors:
    other_listing = splits.list_identities(cfg.distractor_root)
    others, ignored = other_listing.photos, ignored + other_listing.ignored
  plan = splits.make_split(
      listing.photos, n_train=cfg.n_train, min_photos=cfg.min_photos,
      max_people=cfg.max_people, names=cfg.people,
      include_distractors=cfg.include_distractors,
      max_distractors=cfg.max_distractors, distractor_photos=others,
      distractor_prefix=_prefix(cfg.distractor_root),
      unselected_distractors=cfg.unselected_distractors)
  return plan, ignored


def _prefix(distractor_root: str) -> str:
  """How another folder's distractors are named: `<folder>/<person>`."""
  return os.path.basename(distractor_root) + "/" if distractor_root else ""


@dataclasses.dataclass(frozen=True)
class Share:
  """One process's part of aligning a data set in a multi-process run.

  Process `index` of `count` aligns the photos of every `count`-th person
  (distractors included) into a part file of its own; after `barrier(name)`,
  which returns once every process has called it, process 0 writes the
  dataset from the parts and the others then read it. The cache folder must
  be one that every process sees.
  """
  index: int
  count: int
  barrier: Callable[[str], None]


_PART_FIELDS = ("crop", "landmarks", "transform", "box", "image_size")


def _part_path(data_dir, config: FacesConfig, index: int, count: int) -> epath.Path:
  return epath.Path(data_dir) / "aligned_parts" / config.name / f"part-{index}-of-{count}.npz"


def _align_share(config: FacesConfig, share: Share, data_dir, log, **align_kwargs) -> None:
  """Aligns this process's people into its part file (kept: a restarted run reuses it)."""
  path = _part_path(data_dir, config, share.index, share.count)
  if path.exists():
    log(f"faces: process {share.index}'s aligned part is already in {path}")
    return
  plan, _ = _plan(config)
  people = list(dict.fromkeys(p.identity for p in plan))
  mine = set(people[share.index::share.count])
  photos = [p for p in plan if p.identity in mine]
  log(f"faces: process {share.index} of {share.count} aligns {len(photos)} of "
      f"{len(plan)} photos ({len(mine)} of {len(people)} people)")
  skipped = []
  records = list(faces.iter_faces(photos, skipped, **align_kwargs))
  arrays = {k: np.stack([r[k] for r in records]) if records else np.zeros((0,))
            for k in _PART_FIELDS}
  meta = {"records": [{k: r[k] for k in ("identity", "role", "path")} for r in records],
          "skipped": [s.as_dict() for s in skipped]}
  # Each process writes its own part; a killed one leaves none.
  files.atomic_write(path, lambda f: np.savez(
      f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays), every_process=True)


def _read_parts(data_dir, config: FacesConfig, count: int) -> dict:
  """photo path -> record or faces.Skipped, from every process's part."""
  aligned = {}
  for index in range(count):
    with np.load(_part_path(data_dir, config, index, count)) as part:
      meta = json.loads(part["meta"].tobytes())
      for i, r in enumerate(meta["records"]):
        aligned[r["path"]] = {**r, **{k: part[k][i] for k in _PART_FIELDS}}
    aligned.update((s["path"], faces.Skipped(**s)) for s in meta["skipped"])
  return aligned


def prepare(root, data_dir, *, num_workers: int = 1, log_every: int = 500,
            share: Share | None = None, log: Callable[[str], None] = logging.info,
            **config_kwargs):
  """Builds (once) and returns (builder, skipped list of dicts).

  `config_kwargs` go to `make_config`: n_train, min_photos, max_people,
  people, include_distractors, max_distractors, distractor_root,
  unselected_distractors, upsample, border. With a `share` (a multi-process
  run), each process aligns only its part of the photos; see Share.
  """
  config = make_config(root, **config_kwargs)
  make = lambda aligned=None: OpomFaces(
      config=config, data_dir=os.fspath(data_dir), file_format=_FORMAT,
      num_workers=num_workers, log_every=log_every, aligned=aligned)
  builder = make()
  version_dir = epath.Path(builder.data_dir)
  if not (version_dir / "dataset_info.json").exists():
    logging.info("aligning faces of %s into %s", config.root, version_dir)
    if share is not None and share.count > 1:
      _align_share(config, share, data_dir, log, num_workers=num_workers,
                   log_every=log_every, upsample=config.upsample, border=config.border)
      share.barrier("faces: every part aligned")
      if share.index == 0:
        _build(make(_read_parts(data_dir, config, share.count)), version_dir)
      share.barrier("faces: dataset written")
      builder = make()  # one made before the dataset existed does not see its splits
    else:
      _build(builder, version_dir)
  return builder, json.loads((version_dir / SKIP_FILE).read_text())


def _build(builder: "OpomFaces", version_dir: epath.Path) -> None:
  builder.download_and_prepare(
      file_format=_FORMAT,
      download_config=tfds.download.DownloadConfig(
          # Statistics would iterate the data through TensorFlow.
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
  skipped = list(builder.info.metadata["skipped"])
  (version_dir / SKIP_FILE).write_text(json.dumps(skipped, indent=1))


def _read_all(source) -> dict[str, np.ndarray]:
  n = len(source)
  records = source.__getitems__(list(range(n))) if n else []
  def stack(key, dtype, shape):
    if not n:
      return np.zeros((0,) + shape, dtype)
    return np.stack([r[key] for r in records]).astype(dtype)
  text = lambda key: [_text(r[key]) for r in records]
  return dict(images=stack("image", np.uint8, (112, 112, 3)),
              landmarks=stack("landmarks", np.float32, (5, 2)),
              transforms=stack("transform", np.float32, (2, 3)),
              boxes=stack("box", np.int32, (4,)),
              image_sizes=stack("image_size", np.int32, (2,)),
              identities=text("identity"), rel_paths=text("path"))


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_split(root, data_dir, *, num_workers: int = 1, share: Share | None = None,
               log: Callable[[str], None] = logging.info, **config_kwargs):
  """Aligned faces per role as numpy arrays (prepares the dataset if needed).

  Returns {role: dict(images (M, 112, 112, 3) uint8, identity (M,) int32
  index into names, names (list), paths (absolute), transforms (M, 2, 3),
  landmarks (M, 5, 2), boxes (M, 4), image_sizes (M, 2))}. 'train' and
  'test' share one `names` list (the protected people, in natural order) so
  an index means the same person in both; 'distractor' has its own.

  `log` gets a line per person with photos that could not be aligned, and
  one per protected person dropped for want of a training or a test photo.
  `share`: this process's part of the alignment in a multi-process run.
  """
  builder, skipped = prepare(root, data_dir, num_workers=num_workers, share=share,
                             log=log, **config_kwargs)
  root = builder.info.metadata.get("root", os.path.abspath(os.fspath(root)))
  out = {}
  sources = builder.as_data_source()
  for role in splits.ROLES:
    if role in sources:
      out[role] = _read_all(sources[role])
    elif role != splits.DISTRACTOR or builder.builder_config.include_distractors:
      out[role] = _read_all([])
  aligned = collections.Counter(
      (n, role) for role, d in out.items() for n in d["identities"])
  for line in faces.failure_report(skipped, aligned):
    log(f"faces: {line}")
  protected = _protected_people(out, skipped, aligned, log)
  kept = set(protected)
  for role, d in out.items():
    if role == splits.DISTRACTOR:
      names = sorted(set(d["identities"]), key=splits.natural_key)
    else:
      names = protected
      d.update(_rows(d, [n in kept for n in d["identities"]]))
    index = {n: i for i, n in enumerate(names)}
    d["names"] = names
    d["identity"] = np.array([index[n] for n in d.pop("identities")],
                             np.int32)
    d["paths"] = [os.path.normpath(os.path.join(root, p))
                  for p in d.pop("rel_paths")]
  return out


def _protected_people(out, skipped, aligned, log) -> list[str]:
  """The selected people left with a training and a test photo; the others are logged."""
  selected = {n for role in (splits.TRAIN, splits.TEST)
              for n in out.get(role, {}).get("identities", [])}
  selected |= {s["identity"] for s in skipped
               if s.get("role") in (splits.TRAIN, splits.TEST)}
  protected = []
  for name in sorted(selected, key=splits.natural_key):
    short = [role for role in (splits.TRAIN, splits.TEST)
             if not aligned[(name, role)]]
    if short:
      log(f"faces: dropped {name}: no {' or '.join(short)} photo could be "
          "aligned (see the lines above and skipped.json)")
    else:
      protected.append(name)
  return protected


def _rows(d: dict, keep: list[bool]) -> dict:
  """The rows of every per-photo field of a `_read_all` dict where `keep`."""
  keep = np.asarray(keep, bool)
  return {k: ([x for x, kept in zip(v, keep) if kept] if isinstance(v, list)
              else v[keep]) for k, v in d.items()}
