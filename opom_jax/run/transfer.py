"""Leave-one-out transfer: every target attacked by masks learned on the rest of the zoo.

For a target T the ensemble is the surrogate pool without T and without any
model sharing T's weights (zoo.weights_of: a mask learned on one of them is
white-box against the other), and with one model per weight family. The masks
are evaluated on T alone, through its own runtime where it has one. Each
(setting, target) works in its own folder <workdir>/<setting>/<target> with
its config.json, so a killed run restarted resumes: generate keeps finished
masks, and a finished evaluation is reused while its config and masks agree.

Targets whose ensembles coincide (a pool that already leaves them all out: a
held-out split, as configs/transfer_ablation.flags uses) share one set of
masks, learned once and copied into each target's folder.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import time

from opom_jax import files
from opom_jax import fingerprint
from opom_jax import settings
from opom_jax.eval import transfer as tables
from opom_jax.models import zoo
from opom_jax.run import artefacts
from opom_jax.run import config as config_lib
from opom_jax.run import evaluate
from opom_jax.run import generate
from opom_jax.run import sweep_grid
from opom_jax.run.config import RunConfig
from opom_jax.run.faces import load_faces
from opom_jax.run.log import Log, progress_log
from opom_jax.settings import Choice, SettingError, setting

# Every zoo model with a runtime of its own, and the two JAX-only ones least like
# the MobileFaceNets (another architecture, other training data).
DEFAULT_TARGETS = ("dlib_resnet", "faceplugin_mbf", "foamliu_mbf", "w600k_mbf", "y1_mbf",
                   "jax:edgeface_xs", "jax:hse_faceres")


def _target_spellings() -> list[str]:
  """A zoo name (its own runtime, else its JAX import) or `jax:<name>` (the JAX import)."""
  return zoo.names() + [f"jax:{n}" for n in zoo.names()]


@dataclasses.dataclass(frozen=True)
class LooConfig:
  loo_targets: tuple[str, ...] = setting(DEFAULT_TARGETS, Choice(_target_spellings, "target"))
  loo_pool: tuple[str, ...] = setting(tuple(zoo.names()), config_lib.SURROGATES)


@dataclasses.dataclass(frozen=True)
class LooRun:
  setting: str
  target: str       # as evaluated: a zoo name (its own runtime) or jax:<name>
  cfg: RunConfig    # the ensemble as surrogates, the target as the only target


def resolve_target(name: str) -> str:
  return name if name.startswith("jax:") else zoo.target_name(name)


def ensemble(target: str, pool) -> tuple[str, ...]:
  """The pool without the target's weight family, keeping the first-named model of each family."""
  seen, members = {zoo.weights_of(target)}, []
  for name in pool:
    family = zoo.weights_of(name)
    if family not in seen:
      seen.add(family)
      members.append(name)
  return tuple(members)


def setting_points(spec: str, base: RunConfig, pool=None) -> list[tuple[str, RunConfig]]:
  """The attack settings to run, each as a whole leave-one-out.

  Points are checked with the pool as their surrogates (`pool`, else base's),
  the most any target's ensemble has; plan checks each ensemble again.

  Without a spec the base config alone, named `base`. Else `|`-separated
  alternatives, each `base` or a grid in sweep_grid's grammar (errors name the
  setting `sweep`), so an ablation changes one thing at a time:
  `base|attack.mask_resolution=28|attack.variation_prob+attack.mask_resolution=0.5+28`.
  """
  if pool:
    base = dataclasses.replace(base, surrogates=tuple(pool))
  if not spec:
    spec = "base"
  points = []
  for alternative in filter(None, (a.strip() for a in spec.split("|"))):
    if alternative == "base":
      points.append(("base", dataclasses.replace(
          base, workdir=str(pathlib.Path(base.workdir) / "base"))))
      continue
    for name, cfg in sweep_grid.parse_grid(alternative, base):
      if (cfg.surrogates, cfg.targets) != (base.surrogates, base.targets):
        raise SettingError("settings", spec, f"sets surrogates or targets (at the point {name}), "
                           "which leave-one-out chooses itself: use --loo_pool and --loo_targets")
      points.append((name, cfg))
  names = [n for n, _ in points]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise SettingError("settings", spec, f"names the setting {twice[0]} twice")
  return points


def plan(points: list[tuple[str, RunConfig]], loo: LooConfig) -> list[LooRun]:
  """One validated run per (setting, target); SettingError before any work if one cannot run."""
  settings.check(loo)
  targets = [resolve_target(t) for t in loo.loo_targets]
  twice = sorted({t for t in targets if targets.count(t) > 1})
  if twice:
    raise SettingError("loo_targets", loo.loo_targets, f"names the target {twice[0]} twice")
  runs = []
  for name, point in points:
    for target in targets:
      members = ensemble(target, loo.loo_pool)
      if not members:
        raise SettingError("loo_pool", loo.loo_pool, f"leaves no surrogate for the target "
                           f"{target}: every model in it shares {target}'s weights")
      workdir = pathlib.Path(point.workdir) / target.replace(":", "_")
      cfg = dataclasses.replace(point, workdir=str(workdir), surrogates=members, targets=(target,))
      runs.append(LooRun(name, target, config_lib.validate(cfg)))
  return runs


def _evaluated(cfg: RunConfig, faces: dict, stored: dict[str, artefacts.StoredMasks],
               log: Log) -> list[dict]:
  """evaluate's rows on the target alone (and the clean/random controls), reused if unchanged."""
  path = pathlib.Path(cfg.workdir) / "transfer_rows.json"
  key = fingerprint.digest({"config": json.loads(cfg.to_json()),
                            "masks": {m: fingerprint.array_digest(s.masks) for m, s in stored.items()}})
  try:
    stored = json.loads(path.read_text())
  except (OSError, ValueError):  # absent or half-written: evaluate again
    stored = None
  if isinstance(stored, dict) and stored.get("key") == key:
    log(f"evaluate: results already in {path}")
    return stored["rows"]
  runtime = zoo.load_target(cfg.targets[0], cfg.model_root)
  rows = evaluate.evaluate(cfg, log, faces=faces, targets=[("black-box", runtime)])
  artefacts.write_json(path, {"key": key, "rows": rows})
  return rows


def _loo_rows(run: LooRun, rows: list[dict], stored: dict[str, artefacts.StoredMasks],
              people: int) -> list[dict]:
  """One row per method; its learning time as stored with the masks (the run that learned them)."""
  clean = next(r["protect@1"] for r in rows if r["method"] == "clean")
  out = []
  for method in run.cfg.methods:
    row = next(r for r in rows if r["method"] == method)
    seconds = stored[method].seconds
    out.append({**{k: row.get(k) for k in tables.EVALUATED},
                "setting": run.setting, "method": method, "target": run.target,
                "ensemble": "/".join(run.cfg.surrogates), "clean@1": clean,
                "sec_per_person": None if seconds is None else seconds / people})
  return out


def _share_masks(source: str, cfg: RunConfig, log: Log) -> None:
  """Copies the masks learned in `source` for the same settings, where cfg's folder has none.

  generate then checks them against cfg like any stored masks (targets are not
  part of what masks depend on) and keeps them.
  """
  for method in cfg.methods:
    src, dst = generate.mask_path(source, method), generate.mask_path(cfg.workdir, method)
    if src.exists() and not dst.exists():
      with open(src, "rb") as f:
        files.atomic_write(dst, lambda out: shutil.copyfileobj(f, out))
      log(f"[{method}] the same ensemble's masks, learned in {source}")


def run(runs: list[LooRun], workdir, log: Log = None) -> list[dict]:
  """Learns and evaluates every run; the tables and chart in `workdir` grow after each target."""
  log = log or progress_log
  rows, faces, faces_data, t0 = [], None, None, time.time()
  learned = {}  # a run's config less its target -> the folder whose masks it learned
  for i, r in enumerate(runs):
    log(f"== transfer {i + 1}/{len(runs)} [{r.setting}]: target {r.target}, "
        f"ensemble of {len(r.cfg.surrogates)}: {', '.join(r.cfg.surrogates)}")
    if r.cfg.data != faces_data:  # settings that only change the attack share the crops
      faces, faces_data = load_faces(r.cfg, log), r.cfg.data
    learner = dataclasses.replace(r.cfg, workdir="", targets=()).to_json()
    if learner in learned:
      _share_masks(learned[learner], r.cfg, log)
    generate.generate(r.cfg, log, faces=faces)
    learned.setdefault(learner, r.cfg.workdir)
    stored = {m: artefacts.read_masks(generate.mask_path(r.cfg.workdir, m)) for m in r.cfg.methods}
    new = _loo_rows(r, _evaluated(r.cfg, faces, stored, log), stored, len(faces["train"]["names"]))
    rows += new
    tables.write(workdir, rows)
    for row in new:
      cost = "-" if row["sec_per_person"] is None else f"{row['sec_per_person']:.1f}"
      log(f"== [{r.setting}] {row['method']} vs {r.target}: protect@1 {row['protect@1']:.3f} "
          f"(training photos {row['train_protect@1']:.3f}), PSNR {row['psnr']:.1f} dB, "
          f"{cost} s per person to learn; {time.time() - t0:.0f}s so far")
  return rows
