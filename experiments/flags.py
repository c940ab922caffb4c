"""Flags shared by the launchers; `build_config` turns them into one RunConfig."""
import os
import pathlib

from absl import app
from absl import flags

from opom_jax import paths
from opom_jax.attack.config import AttackConfig
from opom_jax.run.config import DataConfig, RunConfig
from opom_jax.attack.losses import LOSSES
from opom_jax.models import zoo
from opom_jax.attack.update_rules import RULES

_D = AttackConfig()

WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: masks, checkpoints, results.")
DATA_ROOT = flags.DEFINE_string("data_root", None, "Folder of data sets (default: $OPOM_DATA_ROOT, else ../shared/datasets).")
MODEL_ROOT = flags.DEFINE_string("model_root", None, "Folder of model weights (default: $OPOM_MODEL_ROOT, else ../shared/models).")
DATASET = flags.DEFINE_string("dataset", "lfw-deepfunneled", "Sub-folder of --data_root holding <identity>/<image>.")
CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Where aligned faces are cached (tfds data_dir). Default: <workdir>/../aligned_cache.")
MAX_PEOPLE = flags.DEFINE_integer("max_people", 10, "First K eligible people (alphabetical).")
PEOPLE = flags.DEFINE_list("people", [], "Explicit identities (overrides --max_people).")
N_TRAIN = flags.DEFINE_integer("n_train", 10, "Photos per person used to learn the mask.")
MIN_PHOTOS = flags.DEFINE_integer("min_photos", 15, "Only people with at least this many photos.")
MAX_DISTRACTORS = flags.DEFINE_integer("max_distractors", -1, "Cap on distractors (-1: all people with one photo).")

SURROGATES = flags.DEFINE_list("surrogates", ["foamliu_mbf"], "Zoo surrogates; several = ensemble (mean loss).")
METHODS = flags.DEFINE_list("methods", list(LOSSES), f"Losses to learn masks with: {sorted(LOSSES)}.")
TARGETS = flags.DEFINE_list("targets", ["w600k_mbf"], "Black-box targets: zoo names (own runtime) or jax:<name>.")
RULE = flags.DEFINE_enum("rule", _D.rule, sorted(RULES), "Update rule.")
EPS = flags.DEFINE_float("eps", _D.eps, "L-inf budget in 0..255 pixel units.")
STEP_SIZE = flags.DEFINE_float("step_size", _D.step_size, "Step per iteration, pixel units.")
ITERS = flags.DEFINE_integer("iters", _D.iters, "Attack iterations.")
NTER = flags.DEFINE_integer("nter", _D.nter, "Class-centre warm-up iterations of the convex hull.")
LOWER = flags.DEFINE_float("lower", _D.lower, "Convex-hull lower weight bound.")
UPPER = flags.DEFINE_float("upper", _D.upper, "Convex-hull upper weight bound (< 1: reduced hull).")
DROPOUT = flags.DEFINE_float("dropout", _D.dropout_rate, "DFANet dropout probability (0: off).")
DIVERSITY = flags.DEFINE_float("diversity_prob", _D.diversity_prob, "Input-diversity probability.")
SEED = flags.DEFINE_integer("seed", 0, "Random seed (random start, dropout).")
PEOPLE_PER_BATCH = flags.DEFINE_integer("people_per_batch", 10, "Identities per compiled attack batch.")
DEVICES = flags.DEFINE_integer("devices", 0, "Devices to shard identities over (0: all).")
CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 0, "Checkpoint every K iterations (0: off).")


def _fail(flag, msg):
  raise flags.ValidationError(f"--{flag}: {msg}")


def build_config() -> RunConfig:
  """Validates the flags and resolves paths; errors name the flag."""
  if not WORKDIR.value:
    _fail("workdir", "is required")
  try:
    data_root = str(paths.data_root(DATA_ROOT.value))
  except paths.MissingPathError as e:
    _fail("data_root", str(e))
  try:
    model_root = str(paths.model_root(MODEL_ROOT.value))
  except paths.MissingPathError as e:
    _fail("model_root", str(e))
  for m in METHODS.value:
    if m not in LOSSES:
      _fail("methods", f"unknown method {m!r}; choose from {sorted(LOSSES)}")
  checks = [("eps", EPS.value > 0, "must be > 0"), ("step_size", STEP_SIZE.value > 0, "must be > 0"),
            ("iters", ITERS.value > 0, "must be > 0"), ("n_train", N_TRAIN.value > 0, "must be > 0"),
            ("dropout", 0 <= DROPOUT.value < 1, "must be in [0, 1)"),
            ("diversity_prob", 0 <= DIVERSITY.value <= 1, "must be in [0, 1]"),
            ("upper", 0 < UPPER.value <= 1, "must be in (0, 1]"),
            ("lower", 0 <= LOWER.value <= UPPER.value, "must be in [0, --upper]"),
            ("people_per_batch", PEOPLE_PER_BATCH.value > 0, "must be > 0"),
            ("max_people", MAX_PEOPLE.value > 0, "must be > 0")]
  for flag, ok, msg in checks:
    if not ok:
      _fail(flag, f"{msg} (got {flags.FLAGS[flag].value})")
  for s in SURROGATES.value:
    if s.partition("@")[0] not in zoo.surrogate_names():
      _fail("surrogates", f"unknown model {s!r}; surrogates are {zoo.surrogate_names()}")
  for t in TARGETS.value:
    if t.removeprefix("jax:") not in zoo.ZOO:
      _fail("targets", f"unknown target {t!r}; use a zoo name {zoo.names()} or jax:<name>")
  if not (pathlib.Path(data_root) / DATASET.value).is_dir():
    _fail("dataset", f"{data_root}/{DATASET.value} is not a folder of <identity>/<image>")
  cache = CACHE_DIR.value or os.path.join(os.path.dirname(os.path.abspath(WORKDIR.value)), "aligned_cache")
  data = DataConfig(data_root=data_root, dataset=DATASET.value, cache_dir=cache,
                    max_people=MAX_PEOPLE.value, people=tuple(PEOPLE.value),
                    n_train=N_TRAIN.value, min_photos=MIN_PHOTOS.value,
                    max_distractors=MAX_DISTRACTORS.value)
  attack = AttackConfig(loss=METHODS.value[0], rule=RULE.value, eps=EPS.value,
                        step_size=STEP_SIZE.value, iters=ITERS.value, nter=NTER.value,
                        lower=LOWER.value, upper=UPPER.value, dropout_rate=DROPOUT.value,
                        diversity_prob=DIVERSITY.value)
  return RunConfig(workdir=os.path.abspath(WORKDIR.value), data=data, attack=attack,
                   model_root=model_root, surrogates=tuple(SURROGATES.value),
                   methods=tuple(METHODS.value), targets=tuple(TARGETS.value), seed=SEED.value,
                   people_per_batch=PEOPLE_PER_BATCH.value, devices=DEVICES.value,
                   checkpoint_every=CHECKPOINT_EVERY.value)



def run(main):
  """app.run, but a bad flag value ends with one line naming the flag, not a traceback."""
  def guarded(argv):
    try:
      return main(argv)
    except flags.ValidationError as e:
      raise SystemExit(f"error: {e}") from None
  app.run(guarded)
