"""Which models a run is evaluated on: `--targets=zoo`, and white-box vs black-box.

Names only: no model is loaded, but for checking the names runtimes get.
"""
import dataclasses
import json

import pytest

from opom_jax.models import zoo
from opom_jax.run import config as config_lib
from opom_jax.run import evaluate
from opom_jax.run.config import BLACK_BOX, WHITE_BOX, RunConfig, resolved_targets
from opom_jax.run.sweep_grid import parse_grid
from opom_jax.settings import SettingError
from run_checks import named_photos_config


def test_names_with_the_same_weights_are_one_model():
  assert zoo.weights_of("xiaoccer_mbf") == zoo.weights_of("xiaoccer_mbf_128")
  assert zoo.weights_of("foamliu_mbf") == zoo.weights_of("jax:foamliu_mbf")
  assert zoo.weights_of("dlib_resnet") == zoo.weights_of("jax:dlib_resnet")   # no weights file
  weights = [zoo.weights_of(n) for n in zoo.names()]
  assert len(set(weights)) == len(weights) - 1   # the xiaoccer pair is the only shared one
  assert zoo.weights_of("iresnet50@/a") != zoo.weights_of("iresnet50@/b")


def test_a_target_runs_by_its_own_runtime_where_it_has_one():
  for name in ("foamliu_mbf", "w600k_mbf", "y1_mbf", "faceplugin_mbf", "dlib_resnet"):
    assert zoo.target_name(name) == name
  for name in ("edgeface_xs", "xiaoccer_mbf", "bubbliiiing_mbf", "hse_faceres"):
    assert zoo.target_name(name) == f"jax:{name}"
  allowed = config_lib.RunConfig.__dataclass_fields__["targets"].metadata["rule"].names()
  assert all(zoo.target_name(n) in allowed for n in zoo.names())


def _boxes(cfg):
  pairs = resolved_targets(cfg)
  return [t for b, t in pairs if b == WHITE_BOX], [t for b, t in pairs if b == BLACK_BOX]


def test_zoo_means_every_model_without_a_surrogates_weights():
  white, black = _boxes(RunConfig(workdir="/w", surrogates=("foamliu_mbf",), targets=("zoo",)))
  assert white == ["jax:foamliu_mbf"]
  assert "foamliu_mbf" not in black and "jax:foamliu_mbf" not in black
  assert sorted(black) == sorted(zoo.target_name(n) for n in zoo.names() if n != "foamliu_mbf")

  white, black = _boxes(RunConfig(workdir="/w", surrogates=("xiaoccer_mbf",), targets=("zoo",)))
  assert white == ["jax:xiaoccer_mbf"]
  assert not any("xiaoccer" in t for t in black), black
  assert len(black) == len(zoo.names()) - 2

  white, black = _boxes(RunConfig(workdir="/w", surrogates=("foamliu_mbf", "edgeface_xs"),
                                  targets=("zoo", "w600k_mbf", "jax:w600k_mbf")))
  assert white == ["jax:foamliu_mbf", "jax:edgeface_xs"]
  assert len(black) == len(set(black)) == len(zoo.names()) - 2 + 1   # w600k by both runtimes


def test_a_listed_target_with_a_surrogates_weights_is_white_box():
  white, black = _boxes(RunConfig(workdir="/w", surrogates=("xiaoccer_mbf",),
                                  targets=("jax:xiaoccer_mbf_128", "w600k_mbf")))
  assert white == ["jax:xiaoccer_mbf", "jax:xiaoccer_mbf_128"] and black == ["w600k_mbf"]
  white, black = _boxes(RunConfig(workdir="/w", surrogates=("foamliu_mbf",),
                                  targets=("foamliu_mbf", "jax:foamliu_mbf")))
  assert white == ["jax:foamliu_mbf", "foamliu_mbf"] and black == []


def test_evaluate_runs_the_resolved_targets_and_config_json_records_them(tmp_path):
  cfg = RunConfig(workdir=str(tmp_path), surrogates=("y1_mbf",), targets=("zoo",))
  assert [(box, name) for box, name, _ in evaluate._targets(cfg, None)] == resolved_targets(cfg)
  stored = json.loads(config_lib.write(cfg).read_text())
  assert stored["targets"] == ["zoo"]
  white, black = _boxes(cfg)
  assert stored["resolved_targets"] == {WHITE_BOX: white, BLACK_BOX: black}
  assert config_lib.read(tmp_path) == cfg


@pytest.fixture
def base(tmp_path):
  return named_photos_config(tmp_path, targets=("zoo",))


def test_a_sweep_over_surrogates_resolves_zoo_per_point(base):
  config_lib.validate(base)
  points = dict(parse_grid("surrogates=foamliu_mbf,xiaoccer_mbf_128", base))
  black = {name: _boxes(cfg)[1] for name, cfg in points.items()}
  assert "foamliu_mbf" not in black["surrogates=foamliu_mbf"]
  assert "jax:xiaoccer_mbf" in black["surrogates=foamliu_mbf"]
  assert "foamliu_mbf" in black["surrogates=xiaoccer_mbf_128"]
  assert "jax:xiaoccer_mbf" not in black["surrogates=xiaoccer_mbf_128"]
  assert all(cfg.targets == ("zoo",) for cfg in points.values())
  with pytest.raises(SettingError, match="zoo"):   # the choices offered include `zoo`
    config_lib.validate(dataclasses.replace(base, targets=("every",)))


@pytest.mark.parametrize("name", ["dlib_resnet", "y1_mbf"])
def test_a_loaded_runtime_is_named_by_its_zoo_name(name):
  """dlib's and the TFLite runtime's own default names differ; a loaded target must not,
  or a leave-one-out run and a sweep would cache the same model's embeddings twice."""
  assert zoo.load_target(name).name == name
