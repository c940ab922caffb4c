r"""Generate, then evaluate: the main job.

  python -m experiments.run --flagfile configs/lfw_quick.flags --workdir runs/lfw_quick
"""
from absl import app

from experiments import flags as run_flags
from opom_jax import pipeline


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = run_flags.build_config()
  faces = pipeline.load_faces(cfg)
  pipeline.generate(cfg, faces=faces)
  print(pipeline.markdown_table(pipeline.evaluate(cfg, faces=faces)))


if __name__ == "__main__":
  run_flags.run(main)
