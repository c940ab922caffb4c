"""Flags of a run (data, methods, targets, batching); `build_config` turns them into one
validated RunConfig."""
import os

from absl import flags

from experiments import attack_flags
from experiments import flags as shared
from opom_jax import paths
from opom_jax.attack.losses import LOSSES
from opom_jax.models import base as models_base
from opom_jax.run import config as config_lib
from opom_jax.run import methods as methods_lib

WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: masks, checkpoints, results.")
CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Where aligned faces are cached (tfds data_dir). Default: <workdir>/../aligned_cache.")
MAX_PEOPLE = flags.DEFINE_integer("max_people", 10, "First K eligible people (natural name order: s2 before s10).")
PEOPLE = flags.DEFINE_list("people", [], "Explicit identities (overrides --max_people).")
N_TRAIN = flags.DEFINE_integer("n_train", 10, "Photos per person used to learn the mask (< --min_photos).")
MIN_PHOTOS = flags.DEFINE_integer("min_photos", 15, "Only people with at least this many photos.")
MAX_TEST = flags.DEFINE_integer("max_test", -1, "Test photos per person, the first by file name (-1: all, the reference protocol).")
MAX_DISTRACTORS = flags.DEFINE_integer("max_distractors", -1, "Cap on one-photo distractors (-1: all people with one photo).")
DISTRACTOR_DATASET = flags.DEFINE_string("distractor_dataset", "", "Sub-folder of --data_root whose one-photo people are the distractors (default: --dataset's own), e.g. lfw-deepfunneled for celeba-subset or att_faces.")
UNSELECTED_DISTRACTORS = flags.DEFINE_bool("unselected_distractors", False, "Also every photo of --dataset's people with >= --min_photos that --max_people/--people left out (AT&T's other people).")
DETECT_UPSAMPLE = flags.DEFINE_integer("detect_upsample", 1, "dlib face detector's image pyramid upsampling (0-3).")
DETECT_BORDER = flags.DEFINE_float("detect_border", 0.0, "Black margin added around each photo before detection, as a fraction of its longer side: finds faces that fill small photos (0.25 for AT&T's 92x112).")
METHODS = flags.DEFINE_list("methods", list(LOSSES), f"Methods: {methods_lib.METHODS.names()} (each loss learns one mask per person; {methods_lib.PER_IMAGE_PGD}: a perturbation per test photo, the non-universal reference).")
TARGETS = flags.DEFINE_list("targets", ["w600k_mbf"], "Black-box targets: zoo names (own runtime), jax:<name>, or zoo: every zoo model that is not a surrogate (its own runtime where it has one). A target with a surrogate's weights is reported as white-box.")
PEOPLE_PER_BATCH = flags.DEFINE_integer("people_per_batch", 10, "Identities per compiled attack batch.")
DEVICES = flags.DEFINE_integer("devices", 0, "Devices to shard identities over (0: all).")
COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", models_base.FLOAT32, list(models_base.COMPUTE_DTYPES), "What the surrogates' forward computes in while learning masks (bfloat16: float32 accumulation, loss and update; stored with the masks).")
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
      n_train=N_TRAIN.value, min_photos=MIN_PHOTOS.value, max_distractors=MAX_DISTRACTORS.value,
      max_test=MAX_TEST.value,
      distractor_dataset=DISTRACTOR_DATASET.value, unselected_distractors=UNSELECTED_DISTRACTORS.value,
      detect_upsample=DETECT_UPSAMPLE.value, detect_border=DETECT_BORDER.value)
  methods = tuple(METHODS.value)
  return config_lib.validate(config_lib.RunConfig(
      workdir=workdir, data=data, attack=attack_flags.attack_config(methods_lib.loss_of(methods[0]) if methods else ""),
      model_root=str(paths.model_root(shared.MODEL_ROOT.value)),
      surrogates=tuple(attack_flags.SURROGATES.value), methods=methods,
      targets=tuple(TARGETS.value), seed=attack_flags.SEED.value,
      people_per_batch=PEOPLE_PER_BATCH.value, devices=DEVICES.value,
      compute_dtype=COMPUTE_DTYPE.value,
      checkpoint_every=CHECKPOINT_EVERY.value, overwrite=OVERWRITE.value,
      verification=VERIFICATION.value, verification_images=VERIFICATION_IMAGES.value))
