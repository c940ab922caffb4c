r"""Evaluates the masks of a run directory: writes results.csv / results.md.

  python -m experiments.evaluate --flagfile configs/lfw_quick.flags --workdir runs/quick
"""
from absl import app

from experiments import flags as run_flags
from opom_jax.run import evaluate


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  rows = evaluate.evaluate(run_flags.build_config())
  print(evaluate.table(rows))


if __name__ == "__main__":
  run_flags.run(main)
