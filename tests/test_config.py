"""The one validation path of every setting: declared ranges, choices, files, config.json."""
import dataclasses
import json
import math

import jax
import pytest

from opom_jax import paths
from opom_jax import settings
from opom_jax.attack.config import AttackConfig
from opom_jax.errors import UserError
from opom_jax.registry import UnknownNameError
from opom_jax.run import config as config_lib
from opom_jax.run.config import DataConfig, ProtectConfig, RunConfig
from opom_jax.settings import SettingError


def _with(cfg, setting: str, value):
  """cfg with the dotted `setting` replaced."""
  section, _, name = setting.rpartition(".")
  if section:
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})
  return dataclasses.replace(cfg, **{name: value})


BASE = RunConfig(workdir="/tmp/run")   # defaults: eps 8, min_photos 15, upper 1

# (setting, allowed values at and inside each bound, refused values just outside[, other settings])
BOUNDS = [
    ("attack.eps", [1.0, 8.0, 64.0], [0.0, -8.0, 64.001, math.nan]),   # step_size 1 <= eps
    ("attack.step_size", [1e-6, 8.0], [0.0, 8.001]),              # (0, eps]
    ("attack.iters", [1, 10_000], [0, -1, 10_001]),
    ("attack.nter", [0, 10_000], [-1, 10_001]),
    ("attack.upper", [1e-6, 1.0], [0.0, 1.001]),
    ("attack.lower", [0.0, 1.0], [-0.001, 1.001]),                # [0, upper]
    ("attack.dropout_rate", [0.0, 0.999], [1.0, -0.1]),
    ("attack.diversity_prob", [0.0, 1.0], [1.001, -0.1]),
    ("attack.eot_prob", [0.0, 1.0], [1.001, -0.1]),
    ("data.max_people", [1, 5749], [0, -1]),
    ("data.n_train", [1, 14], [0, 15]),                          # [1, min_photos)
    ("data.min_photos", [2, 15], [1, 0], {"data.n_train": 1}),
    ("data.max_distractors", [-1, 0, 4069], [-2, -5]),            # -1: all
    ("seed", [0, 2**31 - 1], [-1, 2**31]),
    ("people_per_batch", [1, 64], [0, -3]),
    ("checkpoint_every", [0, 4], [-1]),
    ("devices", [0, jax.device_count()], [jax.device_count() + 1, -1]),
]


@pytest.mark.parametrize("bound", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_each_bound_is_inclusive_or_exclusive_as_declared(bound):
  setting, allowed, refused, *others = bound
  base = BASE
  for name, value in (others[0] if others else {}).items():
    base = _with(base, name, value)
  for value in allowed:
    settings.check(_with(base, setting, value))
  for value in refused:
    with pytest.raises(SettingError) as e:
      settings.check(_with(base, setting, value))
    assert e.value.setting == setting and isinstance(e.value, UserError)


def test_message_names_the_setting_and_its_range():
  with pytest.raises(SettingError, match=r"^attack\.eps=1000 is out of range \(0, 64\]$"):
    settings.check(_with(BASE, "attack.eps", 1000))
  with pytest.raises(SettingError, match=r"^attack\.step_size=9 is out of range \(0, eps=8\]$"):
    settings.check(_with(BASE, "attack.step_size", 9))
  with pytest.raises(SettingError, match=r"^data\.max_distractors=-5 must be >= 0 or -1 "):
    settings.check(_with(BASE, "data.max_distractors", -5))
  with pytest.raises(SettingError, match=r"^data\.n_train=15 is out of range \[1, min_photos=15\)$"):
    settings.check(_with(BASE, "data.n_train", 15))


def test_a_bound_follows_the_field_it_names():
  settings.check(_with(_with(BASE, "attack.eps", 16.0), "attack.step_size", 12.0))
  with pytest.raises(SettingError, match="attack.lower"):
    settings.check(_with(_with(BASE, "attack.upper", 0.3), "attack.lower", 0.4))


def test_attack_validate_is_the_same_check():
  assert AttackConfig(eps=64.0, step_size=64.0).validate().eps == 64.0
  with pytest.raises(SettingError, match=r"^attack\.eps=65"):
    AttackConfig(eps=65.0).validate()


@pytest.mark.parametrize("setting,value", [
    ("attack.loss", "convex_hul"), ("attack.rule", "adam"), ("methods", ("fi_uap", "nope")),
    ("methods", ()), ("surrogates", ("resnet1000",)), ("surrogates", ()),
    ("surrogates", ("foamliu_mbf@/some/checkpoint",)),   # only IResNets take a checkpoint
    ("targets", ("w600k",)), ("targets", ("edgeface_xs",)),   # no own runtime: jax:edgeface_xs
])
def test_unknown_names_are_refused_like_a_registry_lookup(setting, value):
  with pytest.raises(SettingError) as e:
    settings.check(_with(BASE, setting, value))
  assert e.value.setting == setting
  assert isinstance(e.value, UnknownNameError)   # a KeyError too, as Registry.get raises


def test_known_names_pass():
  settings.check(dataclasses.replace(
      BASE, surrogates=("foamliu_mbf", "iresnet50", "iresnet18@/ckpt"), methods=("convex_hull",),
      targets=(), attack=AttackConfig(loss="fi_uap", rule="transfer")))
  settings.check(_with(BASE, "targets", ("jax:edgeface_xs", "dlib_resnet", "y1_mbf")))


@pytest.fixture
def data_root(tmp_path):
  """Two people with 4 photos, one with 2, one with 1 (names only: validation never reads them)."""
  for person, count in (("Ann", 4), ("Bob", 4), ("Cid", 2), ("Dee", 1)):
    (tmp_path / "faces" / person).mkdir(parents=True)
    for i in range(count):
      (tmp_path / "faces" / person / f"{person}_{i:04d}.jpg").write_bytes(b"")
  return tmp_path


def _small(data_root, tmp_path, **data):
  return RunConfig(workdir=str(tmp_path / "run"), model_root=str(paths.model_root()),
                   data=DataConfig(data_root=str(data_root), dataset="faces", n_train=3,
                                   min_photos=4, **data))


def test_validate_checks_the_files_the_settings_name(data_root, tmp_path):
  assert config_lib.validate(_small(data_root, tmp_path)).data.dataset == "faces"
  config_lib.validate(_small(data_root, tmp_path, people=("Ann", "Bob")))
  cases = [
      (_small(data_root, tmp_path, people=("Ann", "Zed")), "data.people", "Zed"),
      (_small(data_root, tmp_path, people=("Cid",)), "data.people", "Cid (2)"),
      (dataclasses.replace(_small(data_root, tmp_path), data=DataConfig(
          data_root=str(data_root), dataset="faces", n_train=3, min_photos=5)), "data.min_photos", "no person"),
      (_with(_small(data_root, tmp_path), "data.dataset", "other"), "data.dataset", "not a folder"),
      (_with(_small(data_root, tmp_path), "model_root", str(tmp_path)), "model_root",
       "foamliu_mobilefacenet.onnx"),
      (_with(_small(data_root, tmp_path), "surrogates", ("iresnet50@/no/such/ckpt",)), "surrogates",
       "/no/such/ckpt"),
      (_with(_small(data_root, tmp_path), "workdir", str(data_root / "faces" / "Ann" / "Ann_0000.jpg")),
       "workdir", "is a file"),
  ]
  for cfg, setting, text in cases:
    with pytest.raises(SettingError) as e:
      config_lib.validate(cfg)
    assert e.value.setting == setting and text in str(e.value), str(e.value)


def test_protect_config_uses_the_same_ranges():
  ok = ProtectConfig(photos="/p", output="/o", model_root=str(paths.model_root()))
  assert config_lib.validate(ok).max_train == 10
  for setting, value in (("max_train", 0), ("max_train", -1), ("attack.eps", 1000.0),
                         ("photos", ""), ("seed", -1), ("attack.lower", 2.0)):
    with pytest.raises(SettingError) as e:
      config_lib.validate(_with(ok, setting, value))
    assert e.value.setting == setting


def test_config_round_trips_through_config_json(tmp_path):
  cfg = RunConfig(
      workdir=str(tmp_path), model_root="/models",
      data=DataConfig(data_root="/data", dataset="faces", cache_dir="/cache", max_people=3,
                      people=("Ann", "Bob"), n_train=2, min_photos=5, max_distractors=7),
      attack=AttackConfig(loss="fi_uap", rule="transfer", eps=4.5, step_size=0.5, iters=30, nter=2,
                          lower=0.1, upper=0.9, dropout_rate=0.1, diversity_prob=0.5,
                          random_start=False),
      surrogates=("foamliu_mbf", "edgeface_xs"), methods=("fi_uap",), targets=("jax:y1_mbf",),
      seed=3, people_per_batch=4, devices=1, checkpoint_every=5, overwrite=True)
  path = config_lib.write(cfg)
  assert json.loads(path.read_text())["attack"]["eps"] == 4.5
  assert config_lib.read(tmp_path) == cfg


def test_config_json_from_before_overwrite_reads_with_its_default(tmp_path):
  stored = json.loads(RunConfig(workdir=str(tmp_path)).to_json())
  del stored["overwrite"]
  (tmp_path / "config.json").write_text(json.dumps(stored))
  assert config_lib.read(tmp_path).overwrite is False
