r"""Protects a folder of one person's photos with an OPOM mask learned from them.

  python -m experiments.protect --photos=~/me --output=~/me_protected --save_mask=~/me_mask.npz
  python -m experiments.protect --photos=~/more_of_me --output=~/out --mask=~/me_mask.npz
  opom-protect --photos=~/me --output=~/out --face=all --format=jpeg --quality=92

Writes `<photo name>.protected.png` (or `.jpg`) per photo at its original
resolution, without metadata, plus mask.npz, report.json and contact_sheet.png.
"""
import os

from absl import flags as absl_flags

from experiments import attack_flags
from experiments import flags
from opom_jax import paths
from opom_jax.run import config as config_lib
from opom_jax.run import protect

attack_flags.default_to_best_setting()  # a person's photos get the best transfer setting

PHOTOS = absl_flags.DEFINE_string("photos", None, "Folder with photos of one person.")
OUTPUT = absl_flags.DEFINE_string(
    "output", None, "Where the protected photos go (not inside --photos).")
MAX_TRAIN = absl_flags.DEFINE_integer("max_train", 10, "Photos used to learn the mask (>= 1).")
METHOD = absl_flags.DEFINE_string("method", "convex_hull", "Loss the mask is learned with.")
MASK = absl_flags.DEFINE_string(
    "mask", "", "A saved mask (.npz from --save_mask) to apply instead of learning one.")
SAVE_MASK = absl_flags.DEFINE_string(
    "save_mask", "", "Also keep the learned mask in this .npz file.")
FACE = absl_flags.DEFINE_string(
    "face", "largest", f"Faces to protect in each photo: {', '.join(config_lib.PROTECT_FACES)} "
    "(the mask learns from the largest, or the centre one with --face=centre).")
FORMAT = absl_flags.DEFINE_string(
    "format", "png",
    f"Output format: {', '.join(config_lib.PROTECT_FORMATS)} (JPEG compression weakens the mask).")
QUALITY = absl_flags.DEFINE_integer("quality", 95, "JPEG quality in [1, 100] (--format=jpeg).")

# ProtectConfig settings -> this launcher's flags (for one-line errors).
RENAMED = {"attack.loss": "method"}


def _path(flag) -> str:
  return os.path.expanduser(flag.value or "")


def main(argv):
  del argv
  protect.protect_folder(config_lib.ProtectConfig(
      photos=_path(PHOTOS), output=_path(OUTPUT),
      attack=attack_flags.attack_config(METHOD.value),
      model_root=str(paths.model_root(flags.MODEL_ROOT.value)),
      surrogates=tuple(attack_flags.SURROGATES.value), max_train=MAX_TRAIN.value,
      seed=attack_flags.SEED.value, mask=_path(MASK), save_mask=_path(SAVE_MASK),
      face=FACE.value, format=FORMAT.value, quality=QUALITY.value))


def console_main():
  """The `opom-protect` console script."""
  flags.run(main, renamed=RENAMED)


if __name__ == "__main__":
  console_main()
