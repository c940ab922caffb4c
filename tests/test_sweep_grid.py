"""The --sweep grammar: axes, `+` joined fields, tuple values, and validation of every point."""
import pathlib

import pytest

from opom_jax.run.sweep_grid import parse_grid, swept_fields
from opom_jax.settings import SettingError
from run_checks import named_photos_config


@pytest.fixture
def base(tmp_path):
  return named_photos_config(tmp_path)


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
  assert [c.overwrite for _, c in parse_grid("overwrite=true,False", base)] == [True, False]
  assert [c.overwrite for _, c in parse_grid("overwrite=0,1", base)] == [False, True]


def test_swept_fields_in_order(base):
  assert swept_fields("attack.rule+attack.iters=base+16; seed=1,2; attack.rule=base") == [
      "attack.rule", "attack.iters", "seed"]


def test_two_spellings_of_one_point_are_refused(base):
  """Both would work in the same directory."""
  with pytest.raises(SettingError) as e:
    parse_grid("attack.eps=8,8.0", base)
  assert e.value.setting == "sweep" and "names the point eps=8.0 twice" in e.value.problem


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
