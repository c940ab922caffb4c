"""Leave-one-out transfer: the ensemble rule, a reduced protocol end to end, and its flag errors.

The end-to-end case runs `experiments.transfer` with configs/transfer_loo_tiny.flags
(two people, 50 distractors, two iterations, a pool of three cheap surrogates, two
targets) as a subprocess, beside the bad-flag cases (each spends its time importing JAX).
"""
import concurrent.futures
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from opom_jax.models import zoo
from opom_jax.run import transfer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "--flagfile=configs/transfer_loo_tiny.flags"
TINY_POOL = ("foamliu_mbf", "xiaoccer_mbf_128", "bubbliiiing_mbf")
TINY_TARGETS = ("foamliu_mbf", "jax:xiaoccer_mbf")  # xiaoccer_mbf has no runtime of its own

# A held-out split: the pool leaves both targets out, so they share one ensemble and
# one set of masks per setting; two settings changed one at a time.
HELD_OUT = ["--loo_pool=bubbliiiing_mbf", "--settings=base|attack.mask_resolution=8"]

# (arguments after the tiny flagfile, what the one error line must contain)
BAD_FLAGS = [
    (["--loo_targets=nope"], "--loo_targets=nope"),
    (["--loo_targets=jax:xiaoccer_mbf", "--loo_pool=xiaoccer_mbf_128"], "--loo_pool=xiaoccer_mbf_128"),
    (["--settings=attack.epz=4"], "--settings=attack.epz"),
    (["--settings=surrogates=y1_mbf"], "--settings=surrogates=y1_mbf"),
    (["--settings=base|attack.eps=4|base"], "names the setting base twice"),
    (["--settings=attack.ensemble_subset=4"], "--settings=attack.ensemble_subset=4"),
]


def _families(names):
  return {zoo.weights_of(n) for n in names}


def test_ensemble_leaves_out_the_targets_weight_family():
  pool = zoo.names()
  for target in ("xiaoccer_mbf", "jax:xiaoccer_mbf", "xiaoccer_mbf_128"):
    members = transfer.ensemble(target, pool)
    assert not {"xiaoccer_mbf", "xiaoccer_mbf_128"} & set(members), (target, members)
    assert _families(members) == _families(pool) - {zoo.weights_of("xiaoccer_mbf")}
  for target in ("foamliu_mbf", "jax:foamliu_mbf"):
    assert "foamliu_mbf" not in transfer.ensemble(target, pool)
  # One model per weight family, the first the pool names.
  members = transfer.ensemble("foamliu_mbf", pool)
  assert len(members) == len(_families(members)) == len(_families(pool)) - 1
  assert transfer.ensemble("y1_mbf", ["xiaoccer_mbf_128", "xiaoccer_mbf", "foamliu_mbf"]) == (
      "xiaoccer_mbf_128", "foamliu_mbf")


def test_a_target_runs_its_own_runtime_where_it_has_one():
  assert transfer.resolve_target("w600k_mbf") == "w600k_mbf"
  assert transfer.resolve_target("edgeface_xs") == "jax:edgeface_xs"
  assert transfer.resolve_target("jax:w600k_mbf") == "jax:w600k_mbf"


def _launch(args):
  return subprocess.run([sys.executable, "-m", "experiments.transfer", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  """(process, work dir) of the reduced run, then of every bad-flag case; run side by side."""
  root = tmp_path_factory.mktemp("loo")
  jobs = [[TINY, f"--workdir={root / 'run'}", f"--cache_dir={root / 'cache'}"]]
  jobs += [[TINY, f"--workdir={root / 'held_out'}", f"--cache_dir={root / 'cache2'}", *HELD_OUT]]
  jobs += [[TINY, f"--workdir={root / f'bad{i}'}", *args] for i, (args, _) in enumerate(BAD_FLAGS)]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    procs = list(pool.map(_launch, jobs))
  dirs = ["run", "held_out"] + [f"bad{i}" for i in range(len(BAD_FLAGS))]
  return [(p, root / d) for p, d in zip(procs, dirs)]


def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_reduced_leave_one_out_end_to_end(outcomes):
  proc, work = outcomes[0]
  assert proc.returncode == 0, proc.stderr[-3000:]
  for target in TINY_TARGETS:
    cfg = json.loads((work / "base" / target.replace(":", "_") / "config.json").read_text())
    assert cfg["targets"] == [target]
    assert zoo.weights_of(target) not in _families(cfg["surrogates"])
    assert cfg["surrogates"] == [s for s in TINY_POOL if zoo.weights_of(s) != zoo.weights_of(target)]
    # Evaluated on the target alone (and the clean/random controls), not on the surrogates.
    results = json.loads((work / "base" / target.replace(":", "_") / "results.json").read_text())
    assert {(r["box"], r["target"]) for r in results} == {("black-box", results[0]["target"])}
    assert {r["method"] for r in results} >= {"clean", "convex_hull"}

  rows = _read_csv(work / "transfer.csv")
  assert [r["target"] for r in rows] == [*TINY_TARGETS, "mean", "min"]
  per_target = rows[:len(TINY_TARGETS)]
  for field in ("protect@1", "protect@5", "protect@10", "train_protect@1", "clean@1", "ssim"):
    values = np.array([float(r[field]) for r in per_target])
    assert np.all((values >= 0) & (values <= 1)), (field, values)
    assert float(rows[-2][field]) == pytest.approx(values.mean(), abs=1e-4)
    assert float(rows[-1][field]) == pytest.approx(values.min(), abs=1e-4)
  for r in per_target:
    assert float(r["protect@1_lo"]) <= float(r["protect@1"]) <= float(r["protect@1_hi"])
    assert float(r["psnr"]) > 30 and float(r["sec_per_person"]) > 0  # an eps-8 mask; timed
  ablation = _read_csv(work / "ablation.csv")
  assert len(ablation) == 1 and float(ablation[0]["min protect@1"]) == pytest.approx(
      float(rows[-1]["protect@1"]), abs=1e-4)
  assert (work / "transfer.png").stat().st_size > 0 and (work / "ablation.png").stat().st_size > 0
  assert "| base | convex_hull | mean |" in (work / "transfer.md").read_text()


@pytest.mark.parametrize("index", range(len(BAD_FLAGS)), ids=[c[1] for c in BAD_FLAGS])
def test_bad_flag_is_named_in_one_line(outcomes, index):
  proc, work = outcomes[index + 2]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode != 0, proc.stdout[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
  assert BAD_FLAGS[index][1] in lines[0], lines[0]
  assert not work.exists()  # nothing started


def test_held_out_targets_share_one_set_of_masks_per_setting(outcomes):
  proc, work = outcomes[1]
  assert proc.returncode == 0, proc.stderr[-3000:]
  for setting in ("base", "mask_resolution=8"):
    folders = [work / setting / t.replace(":", "_") for t in TINY_TARGETS]
    for folder in folders:
      assert json.loads((folder / "config.json").read_text())["surrogates"] == ["bubbliiiing_mbf"]
    first, second = ((f / "masks" / "convex_hull.npz").read_bytes() for f in folders)
    assert first == second  # copied, not learned again
  # Learned once per setting (the second target's masks are the first's), and differently.
  assert proc.stdout.count("the same ensemble's masks") == 2, proc.stdout[-3000:]
  assert ((work / "base" / "foamliu_mbf" / "masks" / "convex_hull.npz").read_bytes()
          != (work / "mask_resolution=8" / "foamliu_mbf" / "masks" / "convex_hull.npz").read_bytes())
  ablation = _read_csv(work / "ablation.csv")
  assert [r["setting"] for r in ablation] == ["base", "mask_resolution=8"]
  assert all(r["targets"] == "2" for r in ablation)


def test_settings_alternatives_each_change_one_thing(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from run_checks import named_photos_config  # pylint: disable=g-import-not-at-top
  base = named_photos_config(tmp_path)
  points = transfer.setting_points("base | attack.eps=4,12 | attack.mask_resolution=28", base,
                                   pool=("foamliu_mbf", "y1_mbf"))
  assert [n for n, _ in points] == ["base", "eps=4.0", "eps=12.0", "mask_resolution=28"]
  changed = {n: {k for k, v in dataclasses.asdict(c.attack).items()
                 if v != getattr(base.attack, k)} for n, c in points}
  assert changed == {"base": set(), "eps=4.0": {"eps"}, "eps=12.0": {"eps"},
                     "mask_resolution=28": {"mask_resolution"}}
  assert [c.workdir for _, c in points] == [str(tmp_path / "sweep" / n) for n, _ in points]
  # Checked against the pool, the largest ensemble: a subset of 2 of its 2 is allowed.
  assert transfer.setting_points("attack.ensemble_subset=2", base, pool=("foamliu_mbf", "y1_mbf"))
