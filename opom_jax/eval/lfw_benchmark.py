"""LFW 10-fold verification accuracy of zoo models: JAX imports and their own runtimes.

Each model (one at a time) embeds the aligned crops of every image in the
pairs file once, as the JAX import (`jax:<name>`) and, where it exists, its
original runtime. A run over every pair updates the accuracy JSON that
experiments.models lists.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Callable

from opom_jax import paths
from opom_jax import settings
from opom_jax.eval import verification
from opom_jax.eval.tables import markdown_table
from opom_jax.models import zoo
from opom_jax.settings import Choice, Range, Required, SettingError, setting

ACCURACY_FILE = paths.REPO_ROOT / "configs" / "lfw_accuracy.json"


@dataclasses.dataclass(frozen=True)
class LfwBenchmarkConfig:
  data_root: str = setting("", Required())
  dataset: str = "lfw-deepfunneled"   # <data_root>/<dataset>/<Person>/<Person>_NNNN.jpg
  model_root: str = setting("", Required())
  models: tuple[str, ...] = setting(("all",), Choice(lambda: ["all", *zoo.names()], "model"))
  pairs: str = ""                     # "": <data_root>/lfw-protocol/pairs.txt
  cache: str = "/tmp/opom_lfw_pairs_cache.npz"   # aligned crops, built once
  max_pairs_per_fold: int = setting(0, Range(0))  # 0: every pair
  jax: bool = True                    # measure the JAX imports
  runtime: bool = True                # measure the original runtimes where they exist
  batch_size: int = setting(50, Range(1))
  output_json: str = str(ACCURACY_FILE)   # updated per model after a run over every pair

  def model_names(self) -> list[str]:
    names = [n for m in self.models for n in (zoo.names() if m == "all" else [m])]
    return list(dict.fromkeys(names))

  def pairs_file(self) -> pathlib.Path:
    return pathlib.Path(self.pairs) if self.pairs else pathlib.Path(self.data_root) / "lfw-protocol" / "pairs.txt"


def validate(cfg: LfwBenchmarkConfig) -> LfwBenchmarkConfig:
  """Declared ranges and choices, the weights of every model, and the LFW folder."""
  settings.check(cfg)
  zoo.check_weights(cfg.model_root, [("models", n) for n in cfg.model_names()])
  if not (pathlib.Path(cfg.data_root) / cfg.dataset).is_dir():
    raise SettingError("dataset", cfg.dataset, f"is not a folder in data_root {cfg.data_root}")
  if not cfg.pairs_file().is_file():
    raise SettingError("pairs", str(cfg.pairs_file()), "is not a file")
  return cfg


def _pct(x):
  return None if x is None else round(100 * x, 2)


def _measure(label, target, faces, pairs, batch_size, log):
  log(f"[{label}] embedding {len(pairs.images())} images")
  result = verification.verify(target.embed, faces, pairs, batch_size,
                               progress=lambda s: log(f"[{label}] {s}"))
  log(f"[{label}] accuracy {100 * result.mean:.2f} +- {100 * result.std:.2f} %  "
      f"({result.num_pairs} pairs, {result.seconds:.0f} s)")
  row = {"fallback_pairs": result.fallback_pairs, "fallback_images": result.fallback_images}
  if hasattr(target, "num_fallbacks"):  # dlib re-detects faces on the crops
    row["runtime_detector_fallbacks"] = int(target.num_fallbacks)
    log(f"[{label}] its detector missed {target.num_fallbacks} of "
        f"{target.num_fallbacks + target.num_detected} crops (embedded from fixed landmarks)")
  return result, row


def run(cfg: LfwBenchmarkConfig, log: Callable[[str], None] = print) -> list[dict]:
  """One row per model: accuracy % (and std) of the JAX import and the runtime."""
  try:
    all_pairs = verification.read_pairs(cfg.pairs_file())
  except (FileNotFoundError, ValueError) as e:
    raise SettingError("pairs", str(cfg.pairs_file()), f"is not an LFW pairs file: {e}") from None
  pairs = verification.subset(all_pairs, cfg.max_pairs_per_fold or None)
  full = len(pairs) == len(all_pairs)
  names = cfg.model_names()
  log(f"{cfg.pairs_file()}: {len(pairs)} of {len(all_pairs)} pairs, {pairs.num_folds} folds, "
      f"{len(pairs.images())} images; models {names}")
  try:
    faces = verification.load_pair_faces(pairs, pathlib.Path(cfg.data_root) / cfg.dataset,
                                         cfg.cache, progress=log)
  except FileNotFoundError as e:  # an image named in the pairs file
    raise SettingError("dataset", cfg.dataset, f"does not match the pairs file: {e}") from None
  log(f"faces: {faces.num_fallbacks} of {len(faces.ids)} images not detected -> centre crop")
  rows = []
  for name in names:
    t0 = time.perf_counter()
    row = {"name": name, "jax": None, "runtime": None, "pairs": len(pairs),
           "published": zoo.ZOO[name].published_lfw}
    if cfg.jax:
      target = zoo.load_target(f"jax:{name}", cfg.model_root)
      result, extra = _measure(f"jax:{name}", target, faces, pairs, cfg.batch_size, log)
      row.update(jax=_pct(result.mean), jax_std=_pct(result.std), **extra)
    if cfg.runtime and zoo.ZOO[name].runtime is not None:
      target = zoo.load_target(name, cfg.model_root)
      result, extra = _measure(name, target, faces, pairs, cfg.batch_size, log)
      row.update(runtime=_pct(result.mean), runtime_std=_pct(result.std), **extra)
    rows.append(row)
    log(f"[{name}] done in {time.perf_counter() - t0:.0f} s")
    if full and cfg.output_json:
      update_json(cfg.output_json, name, {k: v for k, v in row.items() if v is not None or k == "runtime"})
  if cfg.output_json:
    log(f"updated {cfg.output_json}" if full else f"subset of the pairs: {cfg.output_json} left unchanged")
  return rows


TABLE_FIELDS = ["model", "JAX acc % (std)", "runtime acc % (std)", "published %", "pairs",
                "centre-crop pairs (images)"]


def table(rows: list[dict]) -> str:
  """The rows of `run` as a markdown table; '-' where not measured, 'n/a' for no runtime."""
  def acc(r, key, missing):
    return f"{r[key]:.2f} ({r[key + '_std']:.2f})" if r.get(key) is not None else missing
  return markdown_table([{
      "model": r["name"], "JAX acc % (std)": acc(r, "jax", "-"),
      "runtime acc % (std)": acc(r, "runtime", "n/a"),
      "published %": "-" if r.get("published") is None else f"{r['published']:.2f}",
      "pairs": r["pairs"],
      "centre-crop pairs (images)": f"{r.get('fallback_pairs', '-')} ({r.get('fallback_images', '-')})",
  } for r in rows], TABLE_FIELDS)


def update_json(path, name: str, row: dict):
  """Merges one model's row into the accuracy JSON, atomically."""
  path = pathlib.Path(path)
  data = json.loads(path.read_text()) if path.is_file() else {}
  entry = data.get(name, {})
  entry.update({k: v for k, v in row.items() if k != "name"})
  data[name] = entry
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
  os.replace(tmp, path)
