"""Flags of a run (data, methods, targets, batching); `build_config` turns them into one
validated RunConfig."""
import os

from absl import flags

from experiments import attack_flags
from experiments import flags as shared
from opom_jax import paths
from opom_jax.attack.losses import LOSSES
from opom_jax.run import config as config_lib

WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: masks, checkpoints, results.")
CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Where aligned faces are cached (tfds data_dir). Default: <workdir>/../aligned_cache.")
MAX_PEOPLE = flags.DEFINE_integer("max_people", 10, "First K eligible people (alphabetical).")
PEOPLE = flags.DEFINE_list("people", [], "Explicit identities (overrides --max_people).")
N_TRAIN = flags.DEFINE_integer("n_train", 10, "Photos per person used to learn the mask (< --min_photos).")
MIN_PHOTOS = flags.DEFINE_integer("min_photos", 15, "Only people with at least this many photos.")
MAX_DISTRACTORS = flags.DEFINE_integer("max_distractors", -1, "Cap on distractors (-1: all people with one photo).")
METHODS = flags.DEFINE_list("methods", list(LOSSES), f"Losses to learn masks with: {LOSSES.names()}.")
TARGETS = flags.DEFINE_list("targets", ["w600k_mbf"], "Black-box targets: zoo names (own runtime) or jax:<name>.")
PEOPLE_PER_BATCH = flags.DEFINE_integer("people_per_batch", 10, "Identities per compiled attack batch.")
DEVICES = flags.DEFINE_integer("devices", 0, "Devices to shard identities over (0: all).")
CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 0, "Checkpoint every K iterations (0: off).")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace stored masks made with other settings.")
VERIFICATION = flags.DEFINE_bool("verification", True, "Also measure verification rejection at FAR 1e-3 (threshold per target on LFW pairs, cached).")
VERIFICATION_IMAGES = flags.DEFINE_integer("verification_images", -1, "LFW pairs images the thresholds rest on (-1: all; fewer for quick checks).")


def build_config() -> config_lib.RunConfig:
  """The flags as one RunConfig, validated (config_lib.validate) before any work starts."""
  workdir = os.path.abspath(WORKDIR.value) if WORKDIR.value else ""
  cache = CACHE_DIR.value or os.path.join(os.path.dirname(workdir), "aligned_cache")
  data = config_lib.DataConfig(
      data_root=str(paths.data_root(shared.DATA_ROOT.value)), dataset=shared.DATASET.value,
      cache_dir=cache, max_people=MAX_PEOPLE.value, people=tuple(PEOPLE.value),
      n_train=N_TRAIN.value, min_photos=MIN_PHOTOS.value, max_distractors=MAX_DISTRACTORS.value)
  methods = tuple(METHODS.value)
  return config_lib.validate(config_lib.RunConfig(
      workdir=workdir, data=data, attack=attack_flags.attack_config(methods[0] if methods else ""),
      model_root=str(paths.model_root(shared.MODEL_ROOT.value)),
      surrogates=tuple(attack_flags.SURROGATES.value), methods=methods,
      targets=tuple(TARGETS.value), seed=attack_flags.SEED.value,
      people_per_batch=PEOPLE_PER_BATCH.value, devices=DEVICES.value,
      checkpoint_every=CHECKPOINT_EVERY.value, overwrite=OVERWRITE.value,
      verification=VERIFICATION.value, verification_images=VERIFICATION_IMAGES.value))
