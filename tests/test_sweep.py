"""experiments.sweep end to end on a reduced configs/sweep_quick.flags: killed and
restarted with the same command it skips the finished point and finishes the
rest with each (point, method, target) row once; a point that fails at run
time is logged and the others finish; points whose settings changed are
recomputed (two at once, --parallel=2). Then the report's figures, and that
ordinary people's faces are never drawn.

The data root holds two 5-photo LFW people and two one-photo distractors (as
links, under the name lfw-deepfunneled) and a folder 'broken' whose people's
photos are not images: it passes the file-name checks and fails only when
its faces are aligned.
"""
import csv
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from opom_jax.eval import sweep_report
from opom_jax.run import artefacts, sweep
from opom_jax.run.config import RunConfig

REPO = pathlib.Path(__file__).resolve().parent.parent
LFW_POINTS = ("dataset=lfw-deepfunneled__eps=4.0", "dataset=lfw-deepfunneled__eps=8.0")
BROKEN_POINT = "dataset=broken__eps=8.0"
GRID = "data.dataset+attack.eps=lfw-deepfunneled+4,lfw-deepfunneled+8,broken+8"
COLUMNS = ["dataset", "method", "surrogate", "target", "eps", "rule", "protect@1", "protect@1_lo",
           "protect@1_hi", "protect@5", "protect@10", "verif_reject", "psnr", "ssim"]


def _data_root(root: pathlib.Path, lfw: pathlib.Path):
  for person, count in (("Abdullah_Gul", 5), ("Alvaro_Uribe", 5), ("Aaron_Eckhart", 1),
                        ("Aaron_Guiel", 1)):
    (root / "lfw-deepfunneled" / person).mkdir(parents=True)
    for photo in sorted((lfw / person).iterdir())[:count]:
      (root / "lfw-deepfunneled" / person / photo.name).symlink_to(photo)
  for person in ("Nobody_One", "Nobody_Two"):
    (root / "broken" / person).mkdir(parents=True)
    for i in range(5):
      (root / "broken" / person / f"{person}_{i:04d}.jpg").write_bytes(b"not a photo")


def _command(tmp_path, *extra):
  return [sys.executable, "-m", "experiments.sweep", "--flagfile=configs/sweep_quick.flags",
          f"--data_root={tmp_path / 'data'}", f"--cache_dir={tmp_path / 'cache'}",
          f"--workdir={tmp_path / 'work'}", "--max_people=2", "--min_photos=5", "--n_train=3",
          "--max_distractors=2", "--methods=class_center", "--iters=2", "--targets=",
          "--verification=false", f"--sweep={GRID}", *extra]


def _env(tmp_path):
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          # Later runs reuse the first run's compiled programs.
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _mtime(work, point):
  return (work / point / "masks" / "class_center.npz").stat().st_mtime_ns


@dataclasses.dataclass
class Resumed:
  """What the tests read, kept before the last test changes the work directory."""
  tmp_path: pathlib.Path
  work: pathlib.Path
  first_mtime: int             # the first point's masks when the sweep was killed
  second_done_at_kill: bool
  restart: subprocess.CompletedProcess
  header: list[str]
  rows: list[dict]             # results.csv after the restart
  own_rows: dict[str, list[dict]]   # each finished point's own results.csv
  log: str                     # sweep.log
  report: str
  images: dict[str, bytes]     # report.md's images -> their first bytes


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, lfw_root) -> Resumed:
  """The sweep, SIGKILLed once its first point is finished, then rerun with the same command."""
  tmp_path = tmp_path_factory.mktemp("sweep")
  _data_root(tmp_path / "data", lfw_root)
  work, env = tmp_path / "work", _env(tmp_path)
  proc = subprocess.Popen(_command(tmp_path), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  marker = work / LFW_POINTS[0] / sweep.MARKER
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None and not marker.exists():
    time.sleep(0.05)
  assert proc.poll() is None, "the sweep ended before its first point could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (work / "results.csv").exists()
  first_mtime = _mtime(work, LFW_POINTS[0])
  second_done = (work / LFW_POINTS[1] / sweep.MARKER).exists()

  restart = subprocess.run(_command(tmp_path), cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
  with open(work / "results.csv", newline="") as f:
    header = next(csv.reader(f))
  report = (work / "report.md").read_text()
  images = [line[line.index("](") + 2:-1] for line in report.splitlines() if line.startswith("![")]
  return Resumed(tmp_path, work, first_mtime, second_done, restart, header,
                 _rows(work / "results.csv"),
                 {p: _rows(work / p / "results.csv") for p in LFW_POINTS},
                 (work / sweep.LOG).read_text(), report,
                 {i: (work / i).read_bytes()[:8] for i in images})


def test_results_have_one_row_per_point_method_and_target(resumed):
  assert set(COLUMNS) <= set(resumed.header)
  keys = [(r["point"], r["method"], r["target"]) for r in resumed.rows]
  assert len(keys) == len(set(keys)), "a row is repeated"
  # Every finished point's own table, each row once, with the point's settings beside it.
  expected = []
  for point, eps in zip(LFW_POINTS, ("4", "8")):
    own = resumed.own_rows[point]
    assert {r["method"] for r in own} == {"clean", f"random_{eps}", "class_center"}
    assert {r["target"] for r in own} == {"jax:foamliu_mbf"}
    expected += [{**r, "point": point, "dataset": "lfw-deepfunneled", "eps": eps,
                  "surrogate": "foamliu_mbf", "rule": "base"} for r in own]
  got = sorted(resumed.rows, key=lambda r: (r["point"], r["method"]))
  expected = sorted(expected, key=lambda r: (r["point"], r["method"]))
  assert [{k: r[k] for k in resumed.header} for r in got] == [
      {k: r.get(k, "") for k in resumed.header} for r in expected]
  for point in LFW_POINTS:
    config = json.loads((resumed.work / point / "config.json").read_text())
    assert config["workdir"] == str(resumed.work / point)
    assert config["attack"]["eps"] == float(point[-3:])


def test_a_killed_sweep_skips_its_finished_point(resumed):
  first = LFW_POINTS[0]
  assert not resumed.second_done_at_kill
  assert f"{first}: skipped" in resumed.restart.stdout
  assert f"{LFW_POINTS[1]}: finished" in resumed.restart.stdout
  assert _mtime(resumed.work, first) == resumed.first_mtime   # not recomputed


def test_failing_points_are_logged_and_the_others_finish(resumed):
  assert resumed.restart.returncode != 0
  error = resumed.restart.stderr.strip().splitlines()[-1]
  assert error.startswith(f"error: 1 of 3 sweep points failed: {BROKEN_POINT} ")
  assert "could be aligned" in (resumed.work / BROKEN_POINT / sweep.ERROR).read_text()
  assert f"{BROKEN_POINT}: FAILED" in resumed.log
  assert f"{BROKEN_POINT}: FAILED" in resumed.restart.stdout
  assert not (resumed.work / BROKEN_POINT / sweep.MARKER).exists()
  assert {r["point"] for r in resumed.rows} == set(LFW_POINTS)


def test_report_has_tables_and_figures(resumed):
  report = resumed.report
  assert "## lfw-deepfunneled" in report and "class_center" in report
  assert BROKEN_POINT in report          # listed as failed
  # protection vs eps, surrogate x target, example faces
  assert len(resumed.images) == 3, report
  assert all(head == b"\x89PNG\r\n\x1a\n" for head in resumed.images.values())


def test_points_whose_settings_changed_are_recomputed_in_parallel(resumed):
  """A different --step_size changes every point's config: each is run again (here two
  worker processes at once, --parallel=2) and its stored masks are replaced.

  Runs last: it changes the work directory (the other tests read the fixture's copies)."""
  work = resumed.work
  again = subprocess.run(_command(resumed.tmp_path, "--step_size=0.5", "--parallel=2"), cwd=REPO,
                         env=_env(resumed.tmp_path), capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and f"failed: {BROKEN_POINT} " in again.stderr
  for point in LFW_POINTS:
    assert f"{point}: finished" in again.stdout and f"{point}: skipped" not in again.stdout
    with np.load(work / point / "masks" / "class_center.npz") as z:
      assert json.loads(str(z["settings"]))["attack"]["step_size"] == 0.5
    assert json.loads((work / point / "config.json").read_text())["attack"]["step_size"] == 0.5
  rows = _rows(work / "results.csv")
  keys = sorted((r["point"], r["method"]) for r in rows)
  assert keys == sorted((p, m) for p, eps in zip(LFW_POINTS, "48")
                        for m in ("clean", f"random_{eps}", "class_center"))


def _report_rows(dataset, point, eps):
  base = {"point": point, "dataset": dataset, "surrogate": "foamliu_mbf", "target": "w600k_mbf",
          "box": "black-box", "eps": eps, "rule": "base", "protect@1_lo": 0.1, "protect@1_hi": 0.3}
  return [{**base, "method": m, "protect@1": 0.2} for m in ("clean", "class_center")]


def test_report_never_draws_ordinary_people(tmp_path):
  """An AT&T point's examples are not drawn; an LFW point's are."""
  examples = {}
  for point in ("att", "lfw"):
    examples[point] = tmp_path / f"{point}.npz"
    np.savez(examples[point], clean=np.zeros((2, 112, 112, 3), np.uint8),
             methods=np.array(["class_center"]), masks=np.zeros((1, 2, 112, 112, 3), np.float32),
             eps=8.0)
  rows = _report_rows("att_faces", "att", 8.0) + _report_rows("lfw-deepfunneled", "lfw", 8.0)
  sweep_report.write_report(tmp_path, rows, spec="data.dataset=...", points=["att", "lfw"],
                            failed={}, examples=examples)
  drawn = sorted(p.name for p in (tmp_path / sweep_report.FIGURES).glob("*examples*"))
  assert drawn == ["lfw-deepfunneled_examples.png"]
  with pytest.raises(ValueError, match="not a celebrity"):
    sweep_report.example_faces(examples["att"], "att_faces", tmp_path / "att.png")


def test_a_point_is_digested_by_what_it_computes():
  """Where and how a point runs leave its digest alone; what it computes does not."""
  base = RunConfig(workdir="/a/sweep/p")
  same = [dataclasses.replace(base, workdir="/moved/p", devices=1, people_per_batch=3,
                              checkpoint_every=5, overwrite=True),
          dataclasses.replace(base, data=dataclasses.replace(base.data, cache_dir="/elsewhere"))]
  other = [dataclasses.replace(base, attack=dataclasses.replace(base.attack, eps=4.0)),
           dataclasses.replace(base, methods=("convex_hull",)),
           dataclasses.replace(base, data=dataclasses.replace(base.data, max_distractors=9)),
           dataclasses.replace(base, verification_images=100)]
  assert {sweep.config_digest(c) for c in same} == {sweep.config_digest(base)}
  assert len({sweep.config_digest(c) for c in [base, *other]}) == 1 + len(other)


def test_a_setting_added_later_keeps_finished_points_while_at_its_default(tmp_path):
  """A marker written before attack.feature_weight existed (its settings lack the key, its
  digest differs) still marks the point finished while the setting is at its default."""
  cfg = RunConfig(workdir=str(tmp_path))
  (tmp_path / "results.csv").write_text("method\nclean\n")
  stored = artefacts.plain(sweep.point_settings(cfg))
  del stored["attack"]["feature_weight"]
  marker = {"config": "digest-before", "results": sweep._file_digest(tmp_path / "results.csv"),
            "settings": stored}
  (tmp_path / sweep.MARKER).write_text(json.dumps(marker))
  assert sweep.is_finished(cfg)
  on = dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, feature_weight=1.0))
  assert not sweep.is_finished(on)
  other = dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, eps=4.0))
  assert not sweep.is_finished(other)
  (tmp_path / "results.csv").write_text("method\nclean\nforged\n")
  assert not sweep.is_finished(cfg)                # results no longer the ones named
  (tmp_path / "results.csv").write_text("method\nclean\n")
  (tmp_path / sweep.MARKER).write_text(json.dumps({k: v for k, v in marker.items()
                                                   if k != "settings"}))
  assert not sweep.is_finished(cfg)                # an old marker: its digest alone decides
