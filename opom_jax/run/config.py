"""One resolved configuration per run, written into the run's work directory."""
from __future__ import annotations

import dataclasses
import json
import pathlib

from opom_jax.attack.config import AttackConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
  data_root: str = ""                 # resolved: flag > OPOM_DATA_ROOT > ../shared/datasets
  dataset: str = "lfw-deepfunneled"   # folder of <identity>/<image> under data_root
  cache_dir: str = ""                 # tfds data_dir for the aligned faces
  max_people: int = 10
  people: tuple[str, ...] = ()        # explicit identities (overrides max_people)
  n_train: int = 10
  min_photos: int = 15
  max_distractors: int = -1           # -1: every person with exactly one photo


@dataclasses.dataclass(frozen=True)
class RunConfig:
  workdir: str
  data: DataConfig
  attack: AttackConfig
  model_root: str = ""
  surrogates: tuple[str, ...] = ("foamliu_mbf",)
  methods: tuple[str, ...] = ("fi_uap", "fi_uap_plus", "class_center", "affine_hull", "convex_hull")
  targets: tuple[str, ...] = ("w600k_mbf",)
  seed: int = 0
  people_per_batch: int = 10
  devices: int = 0                    # 0: all local devices
  checkpoint_every: int = 0           # 0: no mid-run checkpoints

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


def write(cfg: RunConfig, name: str = "config.json") -> pathlib.Path:
  path = pathlib.Path(cfg.workdir) / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(cfg.to_json())
  return path


def read(workdir, name: str = "config.json") -> RunConfig:
  return RunConfig.from_dict(json.loads((pathlib.Path(workdir) / name).read_text()))
