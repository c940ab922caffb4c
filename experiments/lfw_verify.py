r"""LFW 10-fold verification accuracy of the zoo: JAX imports and their own runtimes.

  python -m experiments.lfw_verify                            # all models, 6000 pairs
  python -m experiments.lfw_verify --models=foamliu_mbf --max_pairs_per_fold=100

A run over every pair updates --output_json; the markdown table is printed
and, with --table, written (opom_jax/eval/lfw_benchmark.py does the work).
"""
import pathlib

from absl import flags as absl_flags

from experiments import flags
from opom_jax import paths
from opom_jax.eval import lfw_benchmark

_D = lfw_benchmark.LfwBenchmarkConfig()

MODELS = absl_flags.DEFINE_list("models", list(_D.models), "Zoo names or 'all'.")
PAIRS = absl_flags.DEFINE_string("pairs", None, "LFW pairs file (default <data_root>/lfw-protocol/pairs.txt).")
CACHE = absl_flags.DEFINE_string("cache", _D.cache, "Aligned crops cache (.npz), built once.")
MAX_PAIRS_PER_FOLD = absl_flags.DEFINE_integer("max_pairs_per_fold", _D.max_pairs_per_fold, "Quick runs: first K/2 matched + K/2 mismatched per fold (0: all).")
JAX = absl_flags.DEFINE_bool("jax", _D.jax, "Measure the JAX imports.")
RUNTIME = absl_flags.DEFINE_bool("runtime", _D.runtime, "Measure the original runtimes where they exist.")
BATCH_SIZE = absl_flags.DEFINE_integer("batch_size", _D.batch_size, "Images per embed call (the JAX batch is fixed at 32 and padded).")
OUTPUT_JSON = absl_flags.DEFINE_string("output_json", _D.output_json, "Accuracies, updated per model after a full run.")
TABLE = absl_flags.DEFINE_string("table", None, "Also write the markdown table here.")


def log(msg):
  print(msg, flush=True)


def main(argv):
  del argv
  cfg = lfw_benchmark.validate(lfw_benchmark.LfwBenchmarkConfig(
      data_root=str(paths.data_root(flags.DATA_ROOT.value)), dataset=flags.DATASET.value,
      model_root=str(paths.model_root(flags.MODEL_ROOT.value)), models=tuple(MODELS.value),
      pairs=PAIRS.value or "", cache=CACHE.value, max_pairs_per_fold=MAX_PAIRS_PER_FOLD.value,
      jax=JAX.value, runtime=RUNTIME.value, batch_size=BATCH_SIZE.value,
      output_json=OUTPUT_JSON.value or ""))
  table = lfw_benchmark.table(lfw_benchmark.run(cfg, log))
  log("\n" + table)
  if TABLE.value:
    pathlib.Path(TABLE.value).write_text(table + "\n")


if __name__ == "__main__":
  flags.run(main)
