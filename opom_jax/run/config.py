"""One resolved configuration per run, written into the run's work directory.

Each field declares its allowed values (opom_jax.settings); `validate` is the
one check of a whole config: those declarations, then the files the settings
name (data folder, people, model weights), so a bad setting fails in a second,
before any face is aligned or model loaded.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

from opom_jax import paths
from opom_jax import settings
from opom_jax.attack.config import AttackConfig
from opom_jax.data import splits
from opom_jax.files import atomic_write_text
from opom_jax.models import base as models_base
from opom_jax.models import zoo
from opom_jax.run.methods import METHODS
from opom_jax.settings import Choice, Range, Required, SettingError, setting

MAX_SEED = 2**31 - 1


def _device_count() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.device_count()


def _surrogate_key(name: str) -> str:
  """An IResNet may name its checkpoint as `iresnet50@<path>`; zoo models may not."""
  arch = name.partition("@")[0]
  return arch if arch in zoo.IRESNETS else name


# `--targets=zoo`: every zoo model that is not a surrogate of the run (resolved_targets).
ZOO_TARGETS = "zoo"


def _target_names() -> list[str]:
  """A zoo model with its own runtime here, any zoo model's JAX import as `jax:<name>`, or `zoo`."""
  return ([n for n in zoo.names() if zoo.ZOO[n].runtime] + [f"jax:{n}" for n in zoo.names()]
          + [ZOO_TARGETS])


SURROGATES = Choice(zoo.surrogate_names, "surrogate model", key=_surrogate_key)
SEED = Range(0, MAX_SEED)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  data_root: str = ""                 # resolved: flag > OPOM_DATA_ROOT > ../shared/datasets
  dataset: str = "lfw-deepfunneled"   # folder of <identity>/<image> under data_root
  cache_dir: str = ""                 # tfds data_dir for the aligned faces
  max_people: int = setting(10, Range(1))
  people: tuple[str, ...] = ()        # explicit identities (overrides max_people)
  min_photos: int = setting(15, Range(2))
  n_train: int = setting(10, Range(1, "min_photos", hi_open=True))  # every person keeps a test photo
  max_distractors: int = setting(-1, Range(0, special=((-1, "every person with one photo"),)))
  # Test photos per person (the first by file name): bounds the cost of evaluating people
  # with hundreds of photos; the reference protocol uses every one.
  max_test: int = setting(-1, Range(1, special=((-1, "every test photo"),)))
  # Whose one-photo people are the distractors: a folder under data_root ("": dataset's own),
  # e.g. LFW's singles for CelebA or AT&T, which have none.
  distractor_dataset: str = ""
  # Also every photo of the dataset's people who qualify (>= min_photos) but were not selected.
  unselected_distractors: bool = False
  # dlib's detector: pyramid upsampling, and a black margin (a fraction of the photo's longer
  # side) around the photo, without which it misses faces that fill small photos (AT&T).
  detect_upsample: int = setting(1, Range(0, 3))
  detect_border: float = setting(0.0, Range(0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class RunConfig:
  workdir: str = setting("", Required())
  data: DataConfig = DataConfig()
  attack: AttackConfig = AttackConfig()
  model_root: str = ""
  surrogates: tuple[str, ...] = setting(("foamliu_mbf",), SURROGATES)
  methods: tuple[str, ...] = setting(
      ("fi_uap", "fi_uap_plus", "class_center", "affine_hull", "convex_hull"),
      Choice(METHODS.names, "method"))
  targets: tuple[str, ...] = setting(("w600k_mbf",),
                                     Choice(_target_names, "target", allow_empty=True))
  seed: int = setting(0, SEED)
  # The surrogates' forward in the attack (bfloat16: float32 accumulation, loss and update).
  compute_dtype: str = setting(models_base.FLOAT32,
                               Choice(lambda: models_base.COMPUTE_DTYPES, "compute dtype"))
  people_per_batch: int = setting(10, Range(1))
  devices: int = setting(0, Range(0, _device_count))  # 0: all local devices
  checkpoint_every: int = setting(0, Range(0))        # 0: no mid-run checkpoints
  overwrite: bool = False             # replace stored artefacts made with other settings
  # Verification rejection at FAR 1e-3, its threshold set once per target on LFW pairs.
  verification: bool = True
  verification_images: int = setting(-1, Range(1, special=((-1, "every image of the pairs file"),)))

  def to_json(self) -> str:
    """The settings, and the targets they resolve to (a record: from_dict ignores it)."""
    record = {box: [t for b, t in resolved_targets(self) if b == box] for box in BOXES}
    return json.dumps({**dataclasses.asdict(self), RESOLVED_TARGETS: record}, indent=2,
                      sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> "RunConfig":
    d = dict(d)
    d.pop(RESOLVED_TARGETS, None)
    d["data"] = DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["data"].items()})
    d["attack"] = AttackConfig(**d["attack"])
    for k in ("surrogates", "methods", "targets"):
      d[k] = tuple(d[k])
    return cls(**d)


WHITE_BOX, BLACK_BOX = "white-box", "black-box"
BOXES = (WHITE_BOX, BLACK_BOX)
RESOLVED_TARGETS = "resolved_targets"   # config.json's record of resolved_targets(cfg)


def resolved_targets(cfg: RunConfig) -> list[tuple[str, str]]:
  """(box, target) per model a run is evaluated on: white-box ones first, then black-box.

  White-box: each zoo surrogate's JAX import, then any target with a surrogate's
  weights (zoo.weights_of: a mask learned on a model is no transfer to the same
  weights in another runtime or view). Black-box: the other targets, `zoo` spelled
  out as every zoo model without a surrogate's weights, by its own runtime where it
  has one (zoo.target_name). Resolved per config, so a sweep point that changes
  the surrogates changes what `zoo` means.
  """
  learned_on = {zoo.weights_of(s) for s in cfg.surrogates}
  named = []
  for t in cfg.targets:
    named += ([zoo.target_name(n) for n in zoo.names() if zoo.weights_of(n) not in learned_on]
              if t == ZOO_TARGETS else [t])
  white = [f"jax:{s}" for s in cfg.surrogates if s in zoo.ZOO]
  white += [t for t in named if zoo.weights_of(t) in learned_on]
  black = [t for t in named if zoo.weights_of(t) not in learned_on]
  return ([(WHITE_BOX, t) for t in dict.fromkeys(white)]
          + [(BLACK_BOX, t) for t in dict.fromkeys(black)])


PROTECT_FACES = ("largest", "centre", "all")
PROTECT_FORMATS = ("png", "jpeg")


@dataclasses.dataclass(frozen=True)
class ProtectConfig:
  """Protecting one person's photo folder (experiments.protect)."""
  photos: str = setting("", Required())
  output: str = setting("", Required())
  attack: AttackConfig = AttackConfig()
  model_root: str = ""
  surrogates: tuple[str, ...] = setting(("foamliu_mbf",), SURROGATES)
  max_train: int = setting(10, Range(1))
  seed: int = setting(0, SEED)
  mask: str = ""                      # a saved mask (.npz) to apply instead of learning one
  save_mask: str = ""                 # where to keep the learned mask (.npz), if anywhere
  # Which faces of a photo: the largest, the one nearest the centre, or all
  # (every face gets the person's mask; the mask learns from the largest).
  face: str = setting("largest", Choice(lambda: PROTECT_FACES, "face choice"))
  format: str = setting("png", Choice(lambda: PROTECT_FORMATS, "output format"))
  quality: int = setting(95, Range(1, 100))   # JPEG quality (format=jpeg only)


def validate(cfg: RunConfig | ProtectConfig) -> RunConfig | ProtectConfig:
  """Every declared range and choice, then the files the settings name; SettingError if not."""
  settings.check(cfg)
  learns = not (isinstance(cfg, ProtectConfig) and cfg.mask)  # a saved mask needs no surrogate
  if learns:
    cfg.attack.check_surrogates(len(cfg.surrogates))
  targets = [t for _, t in resolved_targets(cfg)] if isinstance(cfg, RunConfig) else []
  zoo.check_weights(cfg.model_root, [("surrogates", s) for s in cfg.surrogates if learns]
                    + [("targets", t) for t in targets])
  if isinstance(cfg, RunConfig):
    _check_data(cfg)
    if pathlib.Path(cfg.workdir).exists() and not pathlib.Path(cfg.workdir).is_dir():
      raise SettingError("workdir", cfg.workdir, "is a file, not a folder")
  return cfg


def _check_data(cfg: RunConfig):
  """The data folder, and enough people with enough photos (file names only: fast)."""
  d = cfg.data
  root = paths.data_root(d.data_root or None) / d.dataset
  if not root.is_dir():
    raise SettingError("data.dataset", d.dataset,
                       f"is not a folder of <identity>/<photo> in data_root {d.data_root}")
  photos = splits.list_identities(root).photos
  missing = [p for p in d.people if p not in photos]
  if missing:
    raise SettingError("data.people", d.people, f"names people not in {root}: {missing}")
  few = [f"{p} ({len(photos[p])})" for p in d.people if len(photos[p]) < d.min_photos]
  if few:
    raise SettingError("data.people", d.people,
                       f"names people with fewer than min_photos={d.min_photos} photos: {few}")
  if "reduced_convex_hull" in cfg.methods and d.n_train * cfg.attack.reduced_upper < 1:
    raise SettingError("attack.reduced_upper", cfg.attack.reduced_upper,
                       f"leaves no weights on the hull of n_train={d.n_train} photos "
                       f"(needs >= 1/{d.n_train})")
  if not d.people and not any(len(p) >= d.min_photos for p in photos.values()):
    raise SettingError("data.min_photos", d.min_photos, f"leaves no person of {root} to protect")
  if d.distractor_dataset and d.distractor_dataset != d.dataset:
    other = paths.data_root(d.data_root or None) / d.distractor_dataset
    if not other.is_dir():
      raise SettingError("data.distractor_dataset", d.distractor_dataset,
                         f"is not a folder of <identity>/<photo> in data_root {d.data_root}")
    if not any(len(p) == 1 for p in splits.list_identities(other).photos.values()):
      raise SettingError("data.distractor_dataset", d.distractor_dataset,
                         f"has no one-photo people (the distractors it would give) in {other}")


def write(cfg: RunConfig, name: str = "config.json") -> pathlib.Path:
  return atomic_write_text(pathlib.Path(cfg.workdir) / name, cfg.to_json())


def read(workdir, name: str = "config.json") -> RunConfig:
  return RunConfig.from_dict(json.loads((pathlib.Path(workdir) / name).read_text()))
