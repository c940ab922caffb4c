"""What every launcher shares: the data and model folders, and `run`, which ends
a user's mistake with one line naming the flag (or file), never a traceback.

The run-config flags are in run_flags.py, the attack flags in attack_flags.py,
so a launcher defines only the flags it reads.
"""
import sys

from absl import app
from absl import logging
from absl import flags

from experiments import distributed_flags
from opom_jax import paths
from opom_jax.errors import UserError
from opom_jax.registry import UnknownNameError
from opom_jax.settings import SettingError, format_value

DATA_ROOT = flags.DEFINE_string("data_root", None, "Folder of data sets (default: $OPOM_DATA_ROOT, else ../shared/datasets).")
MODEL_ROOT = flags.DEFINE_string("model_root", None, "Folder of model weights (default: $OPOM_MODEL_ROOT, else ../shared/models).")
DATASET = flags.DEFINE_string("dataset", "lfw-deepfunneled", "Sub-folder of --data_root holding <identity>/<image>.")

# Config setting (dotted path in RunConfig / ProtectConfig / LfwBenchmarkConfig) -> its flag.
FLAG_OF_SETTING = {
    "workdir": "workdir", "model_root": "model_root", "surrogates": "surrogates",
    "methods": "methods", "targets": "targets", "seed": "seed",
    "people_per_batch": "people_per_batch", "devices": "devices",
    "checkpoint_every": "checkpoint_every", "overwrite": "overwrite", "sweep": "sweep",
    "verification": "verification", "verification_images": "verification_images",
    "data.data_root": "data_root", "data.dataset": "dataset", "data.cache_dir": "cache_dir",
    "data.max_people": "max_people", "data.people": "people", "data.n_train": "n_train",
    "data.min_photos": "min_photos", "data.max_distractors": "max_distractors",
    "data.distractor_dataset": "distractor_dataset",
    "data.unselected_distractors": "unselected_distractors", "data.max_test": "max_test",
    "data.detect_upsample": "detect_upsample", "data.detect_border": "detect_border",
    "attack.loss": "methods", "attack.rule": "rule", "attack.eps": "eps",
    "attack.step_size": "step_size", "attack.iters": "iters", "attack.nter": "nter",
    "attack.lower": "lower", "attack.upper": "upper", "attack.reduced_upper": "reduced_upper", "attack.dropout_rate": "dropout",
    "attack.diversity_prob": "diversity_prob", "attack.eot_prob": "eot_prob",
    "attack.dropout_rates": "dropout_rates", "attack.ti_kernel": "ti_kernel",
    "attack.ti_sigma": "ti_sigma", "attack.si_copies": "si_copies",
    "attack.vt_samples": "vt_samples", "attack.vt_beta": "vt_beta",
    "attack.ensemble_subset": "ensemble_subset", "attack.ensemble_weighting": "ensemble_weighting",
    "attack.variation_prob": "variation_prob", "attack.mask_resolution": "mask_resolution",
    "attack.feature_weight": "feature_weight", "attack.feature_depth": "feature_depth",
    "photos": "photos", "output": "output", "max_train": "max_train", "mask": "mask",
    "save_mask": "save_mask", "face": "face", "format": "format", "quality": "quality",
    "data_root": "data_root", "dataset": "dataset", "models": "models", "pairs": "pairs", "max_pairs_per_fold": "max_pairs_per_fold",
    "batch_size": "batch_size",
    "coordinator_address": "coordinator_address", "num_processes": "num_processes",
    "process_id": "process_id",
    "compute_dtype": "compute_dtype",
}


def flag_message(e: SettingError, flag_of_setting: dict[str, str]) -> str:
  """`attack.eps=1000.0 is out of range (0, 64]` -> `--eps=1000.0 is out of range (0, 64]`."""
  flag = flag_of_setting.get(e.setting)
  return f"--{flag}={format_value(e.value)} {e.problem}" if flag else str(e)


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {_one_line(e)}")


def run(main, renamed: dict[str, str] | None = None):
  """app.run(main), but a user error (bad flag value, missing file) ends with one
  line `error: ...` on stderr and exit status 1. `renamed` overrides
  FLAG_OF_SETTING for this launcher's flags."""
  flag_of_setting = {**FLAG_OF_SETTING, **(renamed or {})}

  def guarded(argv):
    if not flags.FLAGS["verbosity"].present:  # JAX's INFO lines (no TPU...) are noise to a user
      logging.set_verbosity(logging.WARNING)
    try:
      if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; every setting is a --flag")
      distributed_flags.initialize()  # before any JAX computation
      return main(argv)
    except SettingError as e:
      sys.exit(f"error: {_one_line(flag_message(e, flag_of_setting))}")
    except (flags.ValidationError, UserError, UnknownNameError, paths.MissingPathError) as e:
      sys.exit(f"error: {_one_line(e)}")

  app.run(guarded, flags_parser=_parse_flags)
