r"""Generate, then evaluate: the main job.

  python -m experiments.run --flagfile configs/lfw_quick.flags --workdir runs/lfw_quick
"""
from experiments import flags
from experiments import run_flags
from opom_jax.run import evaluate
from opom_jax.run import faces as faces_lib
from opom_jax.run import generate


def main(argv):
  del argv
  cfg = run_flags.build_config()
  faces = faces_lib.load_faces(cfg)
  generate.generate(cfg, faces=faces)
  print(evaluate.table(evaluate.evaluate(cfg, faces=faces)))


if __name__ == "__main__":
  flags.run(main)
