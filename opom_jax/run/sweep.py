"""A sweep: generate + evaluate at every point of a grid, resumable, then one table and a report.

Each point works in <workdir>/<point> (sweep_grid names it) with its resolved
config.json. A point is finished when its completion marker, written
atomically after its results.csv, holds the digest of the point's config and
of that results.csv: a restarted sweep skips such points, and recomputes a
point whose marker is missing or disagrees (killed part way, or made with
other settings), replacing its artefacts, since the point directory belongs to
the sweep. A point that fails is logged (console, <point>/error.txt,
<workdir>/sweep.log) and the others go on. At the end results.csv is rebuilt
from every finished point's own results.csv, so a resumed sweep's table holds
each (point, method, target) row exactly once, and report.md is written
beside it (opom_jax.eval.sweep_report).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import json
import pathlib
import time
import traceback

import numpy as np

from opom_jax import fingerprint
from opom_jax.eval import paired
from opom_jax.eval.tables import csv_text
from opom_jax.files import atomic_write, atomic_write_text
from opom_jax.run import artefacts
from opom_jax.run import config as config_lib
from opom_jax.run import evaluate as evaluate_lib
from opom_jax.run import generate as generate_lib
from opom_jax.run import sweep_grid
from opom_jax.run.config import RunConfig
from opom_jax.run.faces import load_faces
from opom_jax.run.log import Log, progress_log

MARKER = "sweep_done.json"
ERROR = "error.txt"
LOG = "sweep.log"
EXAMPLES = "examples.npz"
EXAMPLE_PEOPLE = 4

# Settings that say where and how a point runs, not what it computes (masks do
# not depend on batching or devices: artefacts.mask_settings): changing them,
# or moving the sweep's folder, leaves a finished point finished.
HOW_NOT_WHAT = ("workdir", "overwrite", "devices", "people_per_batch", "checkpoint_every",
                "data.cache_dir")

# The point's settings in the aggregate table, beside evaluate.FIELDS.
POINT_COLUMNS = {"dataset": "data.dataset", "surrogate": "surrogates", "eps": "attack.eps",
                 "rule": "attack.rule"}
# A swept field named by one of these columns (or by each row's method) gets no column of its own.
COLUMN_OF_FIELD = {**{f: c for c, f in POINT_COLUMNS.items()}, "methods": "method"}


def point_settings(cfg: RunConfig) -> dict:
  """What a point computes: its config without the HOW_NOT_WHAT settings."""
  d = dataclasses.asdict(cfg)
  for path in HOW_NOT_WHAT:
    section, _, name = path.rpartition(".")
    (d[section] if section else d).pop(name)
  return d


def config_digest(cfg: RunConfig) -> str:
  return fingerprint.digest(point_settings(cfg))


def _file_digest(path: pathlib.Path) -> str:
  return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def is_finished(cfg: RunConfig) -> bool:
  """Whether the point's marker names this config and its results.csv is the one it names.

  A setting added to the code after the marker was written is no change while it is at
  its default (artefacts.settings_change; every setting is off by default): the marker
  keeps the settings themselves beside their digest for that comparison.
  """
  work = pathlib.Path(cfg.workdir)
  try:
    marker = json.loads((work / MARKER).read_text())
    same = marker.get("config") == config_digest(cfg) or (
        isinstance(marker.get("settings"), dict)
        and artefacts.settings_change(marker["settings"], point_settings(cfg)) is None)
    return same and marker.get("results") == _file_digest(work / "results.csv")
  except (OSError, ValueError, AttributeError):  # no marker, or not one this code wrote
    return False


def setting_value(cfg: RunConfig, field: str) -> str:
  """A dotted field of cfg as the sweep spells it (tuples '/'-joined, as in the grammar)."""
  value = cfg
  for name in field.split("."):
    value = getattr(value, name)
  if isinstance(value, tuple):
    return "/".join(map(str, value))
  return f"{value:g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass
class Outcome:
  points: list[str]
  skipped: list[str]              # finished before this sweep started
  failed: dict[str, str]          # point -> one line naming its error
  results: pathlib.Path
  report: pathlib.Path


class _SweepLog:
  """Progress to the console and, with a time stamp, to <workdir>/sweep.log."""

  def __init__(self, path: pathlib.Path, log: Log):
    self.path, self.log = path, log or progress_log
    path.parent.mkdir(parents=True, exist_ok=True)

  def __call__(self, message: str):
    self.log(message)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(f"{stamp} {message}\n")


def _one_line(e: BaseException) -> str:
  return f"{type(e).__name__}: {' '.join(str(e).split())}"


def run_point(cfg: RunConfig, faces: dict, log: Log = None):
  """Generate and evaluate one point, from scratch or from its own partial artefacts."""
  work = pathlib.Path(cfg.workdir)
  work.mkdir(parents=True, exist_ok=True)
  for stale in (MARKER, ERROR, EXAMPLES):  # a point recomputed is unfinished until its new marker
    (work / stale).unlink(missing_ok=True)
  config_lib.write(cfg)
  generate_lib.generate(cfg, log, faces=faces, overwrite=True)
  rows = evaluate_lib.evaluate(cfg, log, faces=faces)
  _save_examples(cfg, faces)
  marker = {"config": config_digest(cfg), "results": _file_digest(work / "results.csv"),
            "rows": len(rows), "settings": artefacts.plain(point_settings(cfg))}
  atomic_write_text(work / MARKER, json.dumps(marker, indent=1, sort_keys=True))


def _save_examples(cfg: RunConfig, faces: dict):
  """One clean test photo and the masks of the first few people, for the report's face grid.

  Only for celebrity data sets: photos of ordinary people are never copied out.
  """
  from opom_jax.eval import sweep_report  # pylint: disable=g-import-not-at-top  (matplotlib)
  if not sweep_report.is_celebrity(cfg.data.dataset):
    return
  test = faces["test"]
  people = np.unique(test["identity"])[:EXAMPLE_PEOPLE]
  first = [int(np.flatnonzero(test["identity"] == p)[0]) for p in people]
  masks = np.stack([artefacts.read_masks(generate_lib.mask_path(cfg.workdir, m)).masks[people]
                    for m in cfg.methods])
  atomic_write(pathlib.Path(cfg.workdir) / EXAMPLES, lambda f: np.savez(
      f, clean=test["images"][first], methods=np.array(cfg.methods, dtype=str), masks=masks,
      eps=cfg.attack.eps))


def attempt_point(cfg: RunConfig, faces_cache: dict, log: Log) -> str | None:
  """Runs one point; None once it is finished, else its error in one line (traceback in
  <point>/error.txt). faces_cache keeps the last data set's crops for the next point."""
  try:
    if faces_cache.get("data") != cfg.data:  # points that only change the attack share the crops
      faces_cache.clear()  # frees the last data set's crops before the next are read
      faces_cache.update(faces=load_faces(cfg, log), data=cfg.data)
    run_point(cfg, faces_cache["faces"], log)
    return None
  except Exception as e:  # pylint: disable=broad-except  (one failed point must not end the sweep)
    atomic_write_text(pathlib.Path(cfg.workdir) / ERROR, traceback.format_exc())
    return _one_line(e)


def run_sweep(base: RunConfig, spec: str, log: Log = None, parallel: int = 1) -> Outcome:
  """Every point of the grid `spec` around `base` (sweep_grid), then results.csv and report.md.

  parallel > 1 runs that many points at once, each in its own process on its share of the
  GPUs (sweep_parallel); the points and their markers are the same either way.
  """
  points = sweep_grid.parse_grid(spec, base)
  workdir = pathlib.Path(base.workdir)
  slog = _SweepLog(workdir / LOG, log)
  slog(f"sweep: {len(points)} points of '{spec}' in {workdir}"
       + (f", {parallel} at a time" if parallel > 1 else ""))
  heads = {name: f"sweep: point {i + 1}/{len(points)} {name}" for i, (name, _) in enumerate(points)}
  skipped = [name for name, cfg in points if is_finished(cfg)]
  for name in skipped:
    slog(f"{heads[name]}: skipped, finished before with these settings")
  todo = [(name, cfg) for name, cfg in points if name not in skipped]
  failed = {}

  def done(name: str, error: str | None, seconds: float):
    if error is None:
      slog(f"{heads[name]}: finished in {seconds:.0f}s")
    else:
      failed[name] = error
      slog(f"{heads[name]}: FAILED after {seconds:.0f}s: {error} "
           f"(traceback in {workdir / name / ERROR})")

  if parallel > 1:
    from opom_jax.run import sweep_parallel  # pylint: disable=g-import-not-at-top
    sweep_parallel.run_points(todo, parallel, started=lambda n: slog(f"{heads[n]}: running"),
                              done=done)
  else:
    faces_cache = {}
    for name, cfg in todo:
      slog(f"{heads[name]}: running")
      t0 = time.time()
      done(name, attempt_point(cfg, faces_cache, log), time.time() - t0)
  failed = {name: failed[name] for name, _ in points if name in failed}   # in grid order
  results = write_results(workdir, points, sweep_grid.swept_fields(spec))
  from opom_jax.eval import sweep_report  # pylint: disable=g-import-not-at-top  (matplotlib)
  examples = {name: pathlib.Path(cfg.workdir) / EXAMPLES for name, cfg in points
              if name not in failed and (pathlib.Path(cfg.workdir) / EXAMPLES).exists()}
  per_person = {name: pathlib.Path(cfg.workdir) / paired.PER_PERSON for name, cfg in points
                if is_finished(cfg) and (pathlib.Path(cfg.workdir) / paired.PER_PERSON).exists()}
  report = sweep_report.write_report(workdir, read_results(results), spec=spec,
                                     points=[n for n, _ in points], failed=failed,
                                     examples=examples, per_person=per_person)
  slog(f"sweep: {len(points) - len(failed)} of {len(points)} points finished "
       f"({len(skipped)} before this run), {len(failed)} failed; {results}, {report}")
  return Outcome([n for n, _ in points], skipped, failed, results, report)


def columns(swept: list[str]) -> list[str]:
  """The aggregate table's columns: the point, its settings, then evaluate's fields."""
  extra = [f for f in swept if f not in COLUMN_OF_FIELD]
  settings = ["dataset", "method", "surrogate", "target", "box", "eps", "rule", *extra]
  return ["point", *settings, *(f for f in evaluate_lib.FIELDS if f not in settings)]


def write_results(workdir: pathlib.Path, points: list[tuple[str, RunConfig]],
                  swept: list[str]) -> pathlib.Path:
  """<workdir>/results.csv from the results.csv of every finished point, in grid order."""
  fields = columns(swept)
  point_fields = {**POINT_COLUMNS, **{f: f for f in swept if f not in COLUMN_OF_FIELD}}
  lines = []
  for name, cfg in points:
    if not is_finished(cfg):
      continue
    settings = {"point": name, **{c: setting_value(cfg, f) for c, f in point_fields.items()}}
    with open(pathlib.Path(cfg.workdir) / "results.csv", newline="") as f:
      lines += [{**row, **settings} for row in csv.DictReader(f)]
  return atomic_write_text(workdir / "results.csv", csv_text(lines, fields))


def read_results(path) -> list[dict]:
  """The rows of an aggregate results.csv, numbers as floats (an empty cell: nan)."""
  numeric = set(evaluate_lib.FIELDS) - {"method", "target", "box"} | {"eps"}
  with open(path, newline="") as f:
    return [{k: (float(v) if v else float("nan")) if k in numeric else v for k, v in row.items()}
            for row in csv.DictReader(f)]
