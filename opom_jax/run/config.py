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
from opom_jax.attack.losses import LOSSES
from opom_jax.data import splits
from opom_jax.files import atomic_write_text
from opom_jax.models import zoo
from opom_jax.settings import Choice, Range, Required, SettingError, setting

MAX_SEED = 2**31 - 1


def _device_count() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.device_count()


def _surrogate_key(name: str) -> str:
  """An IResNet may name its checkpoint as `iresnet50@<path>`; zoo models may not."""
  arch = name.partition("@")[0]
  return arch if arch in zoo.IRESNETS else name


def _target_names() -> list[str]:
  """A zoo model with its own runtime here, or any zoo model's JAX import as `jax:<name>`."""
  return [n for n in zoo.names() if zoo.ZOO[n].runtime] + [f"jax:{n}" for n in zoo.names()]


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


@dataclasses.dataclass(frozen=True)
class RunConfig:
  workdir: str = setting("", Required())
  data: DataConfig = DataConfig()
  attack: AttackConfig = AttackConfig()
  model_root: str = ""
  surrogates: tuple[str, ...] = setting(("foamliu_mbf",), SURROGATES)
  methods: tuple[str, ...] = setting(
      ("fi_uap", "fi_uap_plus", "class_center", "affine_hull", "convex_hull"),
      Choice(LOSSES.names, "method"))
  targets: tuple[str, ...] = setting(("w600k_mbf",),
                                     Choice(_target_names, "target", allow_empty=True))
  seed: int = setting(0, SEED)
  people_per_batch: int = setting(10, Range(1))
  devices: int = setting(0, Range(0, _device_count))  # 0: all local devices
  checkpoint_every: int = setting(0, Range(0))        # 0: no mid-run checkpoints
  overwrite: bool = False             # replace stored artefacts made with other settings
  # Verification rejection at FAR 1e-3, its threshold set once per target on LFW pairs.
  verification: bool = True
  verification_images: int = setting(-1, Range(1, special=((-1, "every image of the pairs file"),)))

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> "RunConfig":
    d = dict(d)
    d["data"] = DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["data"].items()})
    d["attack"] = AttackConfig(**d["attack"])
    for k in ("surrogates", "methods", "targets"):
      d[k] = tuple(d[k])
    return cls(**d)


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
  zoo.check_weights(cfg.model_root, [("surrogates", s) for s in cfg.surrogates if learns]
                    + [("targets", t) for t in getattr(cfg, "targets", ())])
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


def write(cfg: RunConfig, name: str = "config.json") -> pathlib.Path:
  return atomic_write_text(pathlib.Path(cfg.workdir) / name, cfg.to_json())


def read(workdir, name: str = "config.json") -> RunConfig:
  return RunConfig.from_dict(json.loads((pathlib.Path(workdir) / name).read_text()))
