"""The --sweep grammar: axes, `+` joined fields, tuple values, and validation of every point."""
import pathlib

import pytest

from opom_jax import paths
from opom_jax.run.config import DataConfig, RunConfig
from opom_jax.run.sweep_grid import parse_grid
from opom_jax.settings import SettingError


@pytest.fixture
def base(tmp_path):
  """A run on a folder of two 4-photo people (file names only: nothing is read)."""
  for person in ("Ann", "Bob"):
    (tmp_path / "faces" / person).mkdir(parents=True)
    for i in range(4):
      (tmp_path / "faces" / person / f"{person}_{i:04d}.jpg").write_bytes(b"")
  return RunConfig(workdir=str(tmp_path / "sweep"), model_root=str(paths.model_root()),
                   data=DataConfig(data_root=str(tmp_path), dataset="faces", n_train=3, min_photos=4))


def test_axes_form_their_product(base):
  points = parse_grid("attack.eps=4,8; seed=1,2,3", base)
  assert [name for name, _ in points] == [
      f"eps={e}__seed={s}" for e in ("4.0", "8.0") for s in (1, 2, 3)]
  assert [(c.attack.eps, c.seed) for _, c in points] == [(e, s) for e in (4.0, 8.0) for s in (1, 2, 3)]
  for name, cfg in points:
    assert cfg.workdir == str(pathlib.Path(base.workdir) / name)
    assert cfg.attack.iters == base.attack.iters and cfg.data == base.data  # the rest is the base


def test_plus_joined_fields_move_together(base):
  points = parse_grid("attack.rule+attack.iters+data.max_people=base+16+1,transfer+100+2", base)
  assert [(c.attack.rule, c.attack.iters, c.data.max_people) for _, c in points] == [
      ("base", 16, 1), ("transfer", 100, 2)]


def test_tuple_fields_take_slash_separated_items(base):
  points = parse_grid("surrogates=foamliu_mbf/edgeface_xs,foamliu_mbf;data.people=Ann/Bob", base)
  assert [c.surrogates for _, c in points] == [("foamliu_mbf", "edgeface_xs"), ("foamliu_mbf",)]
  assert all(c.data.people == ("Ann", "Bob") for _, c in points)
  assert points[0][0] == "surrogates=foamliu_mbf,edgeface_xs__people=Ann,Bob"


def test_bool_fields(base):
  assert [c.overwrite for _, c in parse_grid("overwrite=true,False,1", base)] == [True, False, True]


@pytest.mark.parametrize("spec,value,problem", [
    ("attack.epz=4", "attack.epz", "is not a setting"),
    ("data=4", "data", "is not a setting"),                 # a section, not a setting
    ("nope.eps=4", "nope.eps", "is not a setting"),
    ("attack.eps", "attack.eps", "is not 'field=v1,v2'"),
    ("", "", "is empty"),
    ("attack.eps=abc", "attack.eps=abc", "is not a float"),
    ("attack.iters=1.5", "attack.iters=1.5", "is not an int"),
    ("overwrite=maybe", "overwrite=maybe", "is not true or false"),
    ("attack.rule+attack.iters=base+16,transfer", "attack.rule+attack.iters=transfer",
     "needs one value per field"),
])
def test_grammar_errors_name_the_part(base, spec, value, problem):
  with pytest.raises(SettingError) as e:
    parse_grid(spec, base)
  assert (e.value.setting, e.value.value) == ("sweep", value) and problem in e.value.problem


@pytest.mark.parametrize("spec,value,problem", [
    ("attack.eps=8,-8", "attack.eps=-8.0", "is out of range (0, 64]"),
    ("attack.eps=65", "attack.eps=65.0", "is out of range (0, 64]"),
    ("attack.eps=0.5", "attack.step_size=1.0", "(0, eps=0.5]"),   # a bound that moves with eps
    ("data.max_people=0", "data.max_people=0", "must be >= 1"),
    ("data.n_train=4", "data.n_train=4", "[1, min_photos=4)"),
    ("attack.loss=fi_uap,nope", "attack.loss=nope", "unknown loss 'nope'"),
    ("attack.rule=adam", "attack.rule=adam", "unknown update rule 'adam'"),
    ("methods=convex_hull/nope", "methods=convex_hull,nope", "unknown method 'nope'"),
    ("data.people=Ann/Zed", "data.people=Ann,Zed", "['Zed']"),      # checked against the folder
    ("seed=-1", "seed=-1", "is out of range [0, 2147483647]"),
])
def test_every_point_is_validated_like_the_base(base, spec, value, problem):
  with pytest.raises(SettingError) as e:
    parse_grid(spec, base)
  assert (e.value.setting, e.value.value) == ("sweep", value) and problem in e.value.problem
  assert "(at the point " in e.value.problem
