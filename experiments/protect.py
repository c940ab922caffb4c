r"""Protects a folder of one person's photos with an OPOM mask learned from them.

  python -m experiments.protect --photos=~/me --output=~/me_protected
"""
from absl import app
from absl import flags

from experiments import flags as run_flags
from opom_jax import attack
from opom_jax import paths
from opom_jax.run import protect
from opom_jax.attack.losses import LOSSES

PHOTOS = flags.DEFINE_string("photos", None, "Folder with photos of one person.")
OUTPUT = flags.DEFINE_string("output", None, "Where the protected PNG photos go.")
MAX_TRAIN = flags.DEFINE_integer("max_train", 10, "Photos used to learn the mask.")
METHOD = flags.DEFINE_enum("method", "convex_hull", sorted(LOSSES), "Loss the mask is learned with.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not PHOTOS.value or not OUTPUT.value:
    raise flags.ValidationError("--photos and --output are required")
  try:
    model_root = str(paths.model_root(run_flags.MODEL_ROOT.value))
  except paths.MissingPathError as e:
    raise flags.ValidationError(f"--model_root: {e}") from None
  cfg = attack.AttackConfig(loss=METHOD.value, rule=run_flags.RULE.value,
                            eps=run_flags.EPS.value, step_size=run_flags.STEP_SIZE.value,
                            iters=run_flags.ITERS.value, nter=run_flags.NTER.value,
                            dropout_rate=run_flags.DROPOUT.value,
                            diversity_prob=run_flags.DIVERSITY.value)
  try:
    cfg.validate()
    protect.protect_folder(PHOTOS.value, OUTPUT.value, surrogate_names=run_flags.SURROGATES.value,
                           model_root=model_root, cfg=cfg, max_train=MAX_TRAIN.value,
                           seed=run_flags.SEED.value)
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise flags.ValidationError(str(e)) from None


if __name__ == "__main__":
  run_flags.run(main)
