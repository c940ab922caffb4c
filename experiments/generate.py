r"""Learns OPOM masks for the people of a data set.

  python -m experiments.generate --flagfile configs/lfw_quick.flags --workdir runs/quick
"""
from absl import app

from experiments import flags as run_flags
from opom_jax.run import generate


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  generate.generate(run_flags.build_config())


if __name__ == "__main__":
  run_flags.run(main)
