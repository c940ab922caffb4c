r"""Evaluates the masks of a run directory: writes results.csv / results.md.

  python -m experiments.evaluate --flagfile configs/lfw_quick.flags --workdir runs/quick
"""
from experiments import flags
from experiments import run_flags
from opom_jax.run import evaluate


def main(argv):
  del argv
  cfg = run_flags.build_config()
  evaluate.check_masks(cfg)
  print(evaluate.table(evaluate.evaluate(cfg)))


if __name__ == "__main__":
  flags.run(main)
