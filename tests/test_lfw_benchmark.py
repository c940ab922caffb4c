"""The LFW benchmark behind experiments.lfw_verify: settings, a tiny real run, its table and JSON."""
import dataclasses
import json

import pytest

from opom_jax import paths
from opom_jax.eval import lfw_benchmark
from opom_jax.settings import SettingError

# 2 folds x (2 matched + 2 mismatched) real LFW pairs.
PAIRS = """2 2
Abdullah_Gul 1 2
Alvaro_Uribe 1 2
Abdullah_Gul 3 Alvaro_Uribe 3
Angelina_Jolie 1 Alvaro_Uribe 4
Angelina_Jolie 1 3
Abdullah_Gul 4 5
Angelina_Jolie 2 Abdullah_Gul 6
Alvaro_Uribe 5 Angelina_Jolie 4
"""


@pytest.fixture
def cfg(tmp_path):
  (tmp_path / "pairs.txt").write_text(PAIRS)
  return lfw_benchmark.LfwBenchmarkConfig(
      data_root=str(paths.data_root()), model_root=str(paths.model_root()),
      models=("foamliu_mbf",), pairs=str(tmp_path / "pairs.txt"), cache=str(tmp_path / "crops.npz"),
      runtime=False, batch_size=4, output_json=str(tmp_path / "accuracy.json"))


@pytest.mark.parametrize("field,value,names", [
    ("models", ("nope",), "models"), ("max_pairs_per_fold", -1, "max_pairs_per_fold"),
    ("batch_size", 0, "batch_size"), ("pairs", "/no/pairs.txt", "pairs"),
    ("dataset", "no_such_folder", "dataset"), ("model_root", "/", "model_root"),
])
def test_validate_names_the_bad_setting(cfg, field, value, names):
  with pytest.raises(SettingError) as e:
    lfw_benchmark.validate(dataclasses.replace(cfg, **{field: value}))
  assert e.value.setting == names


def test_all_expands_to_the_zoo_once(cfg):
  names = dataclasses.replace(cfg, models=("foamliu_mbf", "all")).model_names()
  assert names[0] == "foamliu_mbf" and sorted(names) == sorted(set(names)) and len(names) > 5


def test_tiny_run_fills_the_table_and_the_json(cfg):
  rows = lfw_benchmark.run(lfw_benchmark.validate(cfg), log=lambda _: None)
  assert [r["name"] for r in rows] == ["foamliu_mbf"]
  row = rows[0]
  assert row["pairs"] == 8 and row["runtime"] is None and 75 <= row["jax"] <= 100
  table = lfw_benchmark.table(rows).splitlines()
  assert table[0].startswith("| model | JAX acc % (std) |")
  assert table[2].startswith(f"| foamliu_mbf | {row['jax']:.2f} ({row['jax_std']:.2f}) | n/a | 99.48 | 8 |")
  stored = json.loads(open(cfg.output_json).read())   # every pair of this file was used
  assert stored["foamliu_mbf"]["jax"] == row["jax"] and stored["foamliu_mbf"]["pairs"] == 8


def test_update_json_keeps_other_models_and_fields(tmp_path):
  path = tmp_path / "acc.json"
  path.write_text(json.dumps({"a": {"jax": 90.0, "runtime": 89.0}, "b": {"jax": 80.0}}))
  lfw_benchmark.update_json(path, "a", {"name": "a", "jax": 91.0, "pairs": 6000})
  assert json.loads(path.read_text()) == {"a": {"jax": 91.0, "runtime": 89.0, "pairs": 6000},
                                          "b": {"jax": 80.0}}
