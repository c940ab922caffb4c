r"""Learns OPOM masks for the people of a data set.

  python -m experiments.generate --flagfile configs/lfw_quick.flags --workdir runs/quick
"""
from experiments import flags
from experiments import run_flags
from opom_jax.run import generate


def main(argv):
  del argv
  generate.generate(run_flags.build_config())


if __name__ == "__main__":
  flags.run(main)
