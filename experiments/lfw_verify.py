r"""LFW 10-fold verification accuracy of the zoo: JAX imports and their own runtimes.

  python -m experiments.lfw_verify                            # all models, 6000 pairs
  python -m experiments.lfw_verify --models=foamliu_mbf --max_pairs_per_fold=100

Each model (one at a time) embeds the aligned crops of every image in the pairs
file once, as the JAX import (`jax:<name>`) and, where it exists, its original
runtime. A full run (every pair) updates --output_json; the markdown table is
printed and, with --table, written.
"""
import json
import os
import pathlib
import time

from absl import app
from absl import flags

from opom_jax import paths
from opom_jax.eval import verification
from opom_jax.models import zoo

MODELS = flags.DEFINE_list("models", ["all"], "Zoo names or 'all'.")
PAIRS = flags.DEFINE_string("pairs", None, "LFW pairs file (default <data_root>/lfw-protocol/pairs.txt).")
DATA_ROOT = flags.DEFINE_string("data_root", None, "Folder of data sets (default: $OPOM_DATA_ROOT, else ../shared/datasets).")
MODEL_ROOT = flags.DEFINE_string("model_root", None, "Folder of model weights (default: $OPOM_MODEL_ROOT, else ../shared/models).")
DATASET = flags.DEFINE_string("dataset", "lfw-deepfunneled", "Sub-folder of --data_root with <Person>/<Person>_NNNN.jpg.")
CACHE = flags.DEFINE_string("cache", "/tmp/opom_lfw_pairs_cache.npz", "Aligned crops cache (.npz), built once.")
MAX_PAIRS_PER_FOLD = flags.DEFINE_integer("max_pairs_per_fold", 0, "Quick runs: first K/2 matched + K/2 mismatched per fold (0: all).")
JAX = flags.DEFINE_bool("jax", True, "Measure the JAX imports.")
RUNTIME = flags.DEFINE_bool("runtime", True, "Measure the original runtimes where they exist.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 50, "Images per embed call (the JAX batch is fixed at 32 and padded).")
OUTPUT_JSON = flags.DEFINE_string("output_json", str(paths.REPO_ROOT / "configs" / "lfw_accuracy.json"),
                                  "Accuracies, updated per model after a full run.")
TABLE = flags.DEFINE_string("table", None, "Also write the markdown table here.")


def log(msg):
  print(msg, flush=True)


def _models() -> list[str]:
  names = []
  for m in MODELS.value:
    if m == "all":
      names += zoo.names()
    elif m in zoo.ZOO:
      names.append(m)
    else:
      raise flags.ValidationError(f"--models: unknown model {m!r}; use 'all', {zoo.names()}")
  return list(dict.fromkeys(names))


def _published(name):
  from experiments import models as zoo_listing  # pylint: disable=g-import-not-at-top
  return zoo_listing.published_lfw(name.partition(":")[0])


def _jax_target(name, model_root):
  return zoo.load_target(f"jax:{name}", model_root)


def _measure(label, target, faces, pairs):
  log(f"[{label}] embedding {len(pairs.images())} images")
  result = verification.verify(target.embed, faces, pairs, BATCH_SIZE.value,
                               progress=lambda s: log(f"[{label}] {s}"))
  log(f"[{label}] accuracy {100 * result.mean:.2f} +- {100 * result.std:.2f} %  "
      f"({result.num_pairs} pairs, {result.seconds:.0f} s)")
  extra = {}
  if hasattr(target, "num_fallbacks"):  # dlib re-detects faces on the crops
    extra = {"runtime_detector_fallbacks": int(target.num_fallbacks)}
    log(f"[{label}] its detector missed {target.num_fallbacks} of "
        f"{target.num_fallbacks + target.num_detected} crops (embedded from fixed landmarks)")
  return result, extra


def _pct(x):
  return None if x is None else round(100 * x, 2)


def markdown_table(rows) -> str:
  lines = ["| model | JAX acc % (std) | runtime acc % (std) | published % | pairs | centre-crop pairs (images) |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    jax_ = f"{r['jax']:.2f} ({r['jax_std']:.2f})" if r.get("jax") is not None else "-"
    rt = f"{r['runtime']:.2f} ({r['runtime_std']:.2f})" if r.get("runtime") is not None else "n/a"
    pub = f"{r['published']:.2f}" if r.get("published") is not None else "-"
    lines.append(f"| {r['name']} | {jax_} | {rt} | {pub} | {r['pairs']} | "
                 f"{r['fallback_pairs']} ({r['fallback_images']}) |")
  return "\n".join(lines)


def _update_json(path, name, row):
  path = pathlib.Path(path)
  data = json.loads(path.read_text()) if path.is_file() else {}
  entry = data.get(name, {})
  entry.update({k: v for k, v in row.items() if k != "name"})
  data[name] = entry
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
  os.replace(tmp, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  names = _models()
  try:
    data_root = paths.data_root(DATA_ROOT.value)
    model_root = paths.model_root(MODEL_ROOT.value)
  except paths.MissingPathError as e:
    raise flags.ValidationError(str(e)) from None
  pairs_file = PAIRS.value or data_root / "lfw-protocol" / "pairs.txt"
  try:
    all_pairs = verification.read_pairs(pairs_file)
  except (FileNotFoundError, ValueError) as e:
    raise flags.ValidationError(f"--pairs: {e}") from None
  pairs = verification.subset(all_pairs, MAX_PAIRS_PER_FOLD.value or None)
  full = len(pairs) == len(all_pairs)
  log(f"{pairs_file}: {len(pairs)} of {len(all_pairs)} pairs, {pairs.num_folds} folds, "
      f"{len(pairs.images())} images; models {names}")
  faces = verification.load_pair_faces(pairs, data_root / DATASET.value, CACHE.value, progress=log)
  log(f"faces: {faces.num_fallbacks} of {len(faces.ids)} images not detected -> centre crop")

  rows = []
  for name in names:
    t0 = time.perf_counter()
    row = {"name": name, "jax": None, "runtime": None, "pairs": len(pairs),
           "published": _published(name)}
    if JAX.value:
      result, _ = _measure(f"jax:{name}", _jax_target(name, model_root), faces, pairs)
      row.update(jax=_pct(result.mean), jax_std=_pct(result.std),
                 fallback_pairs=result.fallback_pairs, fallback_images=result.fallback_images)
    has_runtime = name in zoo.ZOO and zoo.ZOO[name].runtime is not None
    if RUNTIME.value and has_runtime:
      result, extra = _measure(name, zoo.load_target(name, model_root), faces, pairs)
      row.update(runtime=_pct(result.mean), runtime_std=_pct(result.std),
                 fallback_pairs=result.fallback_pairs, fallback_images=result.fallback_images,
                 **extra)
    rows.append(row)
    log(f"[{name}] done in {time.perf_counter() - t0:.0f} s")
    if full and OUTPUT_JSON.value:
      _update_json(OUTPUT_JSON.value, name, {k: v for k, v in row.items() if v is not None or k == "runtime"})
  table = markdown_table(rows)
  log("\n" + table)
  if full and OUTPUT_JSON.value:
    log(f"updated {OUTPUT_JSON.value}")
  elif OUTPUT_JSON.value:
    log(f"subset of the pairs: {OUTPUT_JSON.value} left unchanged")
  if TABLE.value:
    pathlib.Path(TABLE.value).write_text(table + "\n")
  return 0


def _guarded(argv):
  try:
    return main(argv)
  except flags.ValidationError as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  app.run(_guarded)
