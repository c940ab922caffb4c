"""Flags of the mask attack and its surrogates, shared by the run launchers and protect."""
from absl import flags

from opom_jax.attack.config import AttackConfig
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
SEED = flags.DEFINE_integer("seed", 0, "Random seed (random start, dropout).")


def attack_config(loss: str) -> AttackConfig:
  """The attack the flags describe (validated with the whole config, not here)."""
  return AttackConfig(loss=loss, rule=RULE.value, eps=EPS.value, step_size=STEP_SIZE.value,
                      iters=ITERS.value, nter=NTER.value, lower=LOWER.value, upper=UPPER.value,
                      reduced_upper=REDUCED_UPPER.value,
                      dropout_rate=DROPOUT.value, diversity_prob=DIVERSITY.value,
                      eot_prob=EOT.value)
