r"""Protects a folder of one person's photos with an OPOM mask learned from them.

  python -m experiments.protect --photos=~/me --output=~/me_protected
"""
import os

from absl import flags as absl_flags

from experiments import attack_flags
from experiments import flags
from opom_jax import paths
from opom_jax.run import config as config_lib
from opom_jax.run import protect

PHOTOS = absl_flags.DEFINE_string("photos", None, "Folder with photos of one person.")
OUTPUT = absl_flags.DEFINE_string("output", None, "Where the protected PNG photos go.")
MAX_TRAIN = absl_flags.DEFINE_integer("max_train", 10, "Photos used to learn the mask (>= 1).")
METHOD = absl_flags.DEFINE_string("method", "convex_hull", "Loss the mask is learned with.")


def main(argv):
  del argv
  protect.protect_folder(config_lib.ProtectConfig(
      photos=os.path.expanduser(PHOTOS.value or ""), output=os.path.expanduser(OUTPUT.value or ""),
      attack=attack_flags.attack_config(METHOD.value),
      model_root=str(paths.model_root(flags.MODEL_ROOT.value)),
      surrogates=tuple(attack_flags.SURROGATES.value), max_train=MAX_TRAIN.value,
      seed=attack_flags.SEED.value))


if __name__ == "__main__":
  flags.run(main, renamed={"attack.loss": "method"})
