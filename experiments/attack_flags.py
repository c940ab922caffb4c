"""Flags of the mask attack and its surrogates, shared by the run launchers and protect."""
from absl import flags

from experiments.flags import FLAG_OF_SETTING
from opom_jax.attack import best_setting
from opom_jax.attack.config import AttackConfig
from opom_jax.attack.ensemble import WEIGHTINGS
from opom_jax.attack.update_rules import RULES

_D = AttackConfig()

SURROGATES = flags.DEFINE_list("surrogates", ["foamliu_mbf"], "Zoo surrogates; several = ensemble (mean loss).")
RULE = flags.DEFINE_string("rule", _D.rule, f"Update rule: {RULES.names()}.")
EPS = flags.DEFINE_float("eps", _D.eps, "L-inf budget in 0..255 pixel units, in (0, 64].")
STEP_SIZE = flags.DEFINE_float("step_size", _D.step_size, "Step per iteration, pixel units, in (0, --eps].")
ITERS = flags.DEFINE_integer("iters", _D.iters, "Attack iterations.")
NTER = flags.DEFINE_integer("nter", _D.nter, "Class-centre warm-up iterations of the convex hull.")
LOWER = flags.DEFINE_float("lower", _D.lower, "Convex-hull lower weight bound, in [0, --upper].")
UPPER = flags.DEFINE_float("upper", _D.upper, "Convex-hull upper weight bound, in (0, 1] (< 1: reduced hull).")
REDUCED_UPPER = flags.DEFINE_float("reduced_upper", _D.reduced_upper, "Weight cap of the method reduced_convex_hull, in (0, 1]; needs >= 1/--n_train.")
DROPOUT = flags.DEFINE_float("dropout", _D.dropout_rate, "DFANet dropout probability, in [0, 1) (0: off).")
DIVERSITY = flags.DEFINE_float("diversity_prob", _D.diversity_prob, "Input-diversity probability, in [0, 1].")
EOT = flags.DEFINE_float("eot_prob", _D.eot_prob, "Expectation over JPEG re-compression and resizing: probability of each, in [0, 1] (0: off).")
DROPOUT_RATES = flags.DEFINE_string("dropout_rates", _D.dropout_rates, "DFANet rate per surrogate, `/`-separated in --surrogates order, e.g. 0.1/0/0.05 (empty: --dropout for all).")
TI_KERNEL = flags.DEFINE_integer("ti_kernel", _D.ti_kernel, "Translation invariance: odd side of the Gaussian that smooths the gradient (0: off).")
TI_SIGMA = flags.DEFINE_float("ti_sigma", _D.ti_sigma, "Its sigma in pixels (0: radius/sqrt(3), as in the TI paper).")
SI_COPIES = flags.DEFINE_integer("si_copies", _D.si_copies, "Scale invariance: loss averaged over x * 2^-i, i < this (1: off).")
VT_SAMPLES = flags.DEFINE_integer("vt_samples", _D.vt_samples, "Variance tuning: gradients sampled around x per step (0: off).")
VT_BETA = flags.DEFINE_float("vt_beta", _D.vt_beta, "Variance tuning: the sampled neighbourhood's radius in units of --eps.")
ENSEMBLE_SUBSET = flags.DEFINE_integer("ensemble_subset", _D.ensemble_subset, "Surrogates drawn at random per iteration (0: all); the others do not run.")
ENSEMBLE_WEIGHTING = flags.DEFINE_enum("ensemble_weighting", _D.ensemble_weighting, WEIGHTINGS, "mean: mean of the surrogates' losses; equalise: each divided by its size at the start.")
VARIATION_PROB = flags.DEFINE_float("variation_prob", _D.variation_prob, "Learn on varied photos (flip, shift, rotation, light, blur): probability of each, in [0, 1] (0: off).")
FEATURE_WEIGHT = flags.DEFINE_float("feature_weight", _D.feature_weight, "Feature loss: weight of the relative distortion of an intermediate layer, added to each surrogate's embedding loss (0: off).")
FEATURE_DEPTH = flags.DEFINE_float("feature_depth", _D.feature_depth, "Feature loss: relative depth of that layer among the surrogate's convolutions (flax networks: blocks), in [0, 1].")
MASK_RESOLUTION = flags.DEFINE_integer("mask_resolution", _D.mask_resolution, "A smooth mask: bilinear on a grid of this side, in [2, 112] (0: off).")
SEED = flags.DEFINE_integer("seed", 0, "Random seed (random start, dropout).")


def attack_config(loss: str) -> AttackConfig:
  """The attack the flags describe (validated with the whole config, not here)."""
  return AttackConfig(loss=loss, rule=RULE.value, eps=EPS.value, step_size=STEP_SIZE.value,
                      iters=ITERS.value, nter=NTER.value, lower=LOWER.value, upper=UPPER.value,
                      reduced_upper=REDUCED_UPPER.value,
                      dropout_rate=DROPOUT.value, diversity_prob=DIVERSITY.value,
                      eot_prob=EOT.value, dropout_rates=DROPOUT_RATES.value,
                      ti_kernel=TI_KERNEL.value, ti_sigma=TI_SIGMA.value,
                      si_copies=SI_COPIES.value, vt_samples=VT_SAMPLES.value,
                      vt_beta=VT_BETA.value, ensemble_subset=ENSEMBLE_SUBSET.value,
                      ensemble_weighting=ENSEMBLE_WEIGHTING.value,
                      variation_prob=VARIATION_PROB.value,
                      mask_resolution=MASK_RESOLUTION.value,
                      feature_weight=FEATURE_WEIGHT.value, feature_depth=FEATURE_DEPTH.value)


def default_to_best_setting() -> None:
  """The best transfer setting (attack.best_setting) as these flags' defaults: protect's.

  The run launchers keep the reference's base rule as their defaults, so their
  results stay comparable with the official code's.
  """
  flags.FLAGS.set_default("surrogates", list(best_setting.SURROGATES))
  for field, value in best_setting.ATTACK.items():
    flags.FLAGS.set_default(FLAG_OF_SETTING[f"attack.{field}"], value)
