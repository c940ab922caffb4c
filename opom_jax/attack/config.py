"""Settings of the mask attack (pure data); each field declares its allowed values."""
from __future__ import annotations

import dataclasses

from opom_jax import settings
from opom_jax.attack import ensemble, losses, update_rules
from opom_jax.settings import Choice, Range, SettingError, setting

MAX_EPS = 64.0        # pixel units: beyond this a "mask" repaints the face
MAX_ITERS = 10_000
IMAGE_SIDE = 112      # the canonical aligned crop (models.base.CANONICAL_SHAPE)


@dataclasses.dataclass(frozen=True)
class OddSide(Range):
  """A kernel side: in range and odd (centred), or one of the special values."""

  def problem(self, value, owner) -> str | None:
    problem = super().problem(value, owner)
    if problem or any(value == v for v, _ in self.special) or value % 2:
      return problem
    return "must be odd (a centred kernel)"


@dataclasses.dataclass(frozen=True)
class RatesPerSurrogate:
  """`/`-separated rates in [0, 1), or "" (the owner's single `dropout_rate` for all)."""
  error = SettingError

  def problem(self, value, owner) -> str | None:
    try:
      rates = parse_rates(value)
    except ValueError:
      return "is not `/`-separated numbers, e.g. 0.1/0/0.05"
    bad = [r for r in rates if not 0.0 <= r < 1.0]
    if bad:
      return f"has the rate {bad[0]:g}, not in [0, 1)"
    if rates and owner.dropout_rate > 0:
      return f"is given beside the single dropout rate {owner.dropout_rate:g}; give one or the other"
    return None


def parse_rates(text: str) -> tuple[float, ...]:
  """"0.1/0/0.05" -> (0.1, 0.0, 0.05); ValueError if an item is not a number."""
  return tuple(float(r) for r in text.split("/") if r.strip())


@dataclasses.dataclass(frozen=True)
class AttackConfig:
  loss: str = setting("convex_hull", Choice(losses.LOSSES.names, "loss"))
  rule: str = setting("base", Choice(update_rules.RULES.names, "update rule"))
  eps: float = setting(8.0, Range(0.0, MAX_EPS, lo_open=True))
  step_size: float = setting(1.0, Range(0.0, "eps", lo_open=True))
  iters: int = setting(16, Range(1, MAX_ITERS))
  # Class-centre warm-up of the convex hull; nter >= iters is allowed (the hull
  # loss is then the class-centre loss throughout) since other losses ignore it.
  nter: int = setting(5, Range(0, MAX_ITERS))
  lower: float = setting(0.0, Range(0.0, "upper"))
  upper: float = setting(1.0, Range(0.0, 1.0, lo_open=True))
  # Weight cap of the method `reduced_convex_hull` (every person needs >= 1/cap photos).
  reduced_upper: float = setting(0.5, Range(0.0, 1.0, lo_open=True))
  # DFANet dropout; the reference's transfer setting uses 0.1.
  dropout_rate: float = setting(0.0, Range(0.0, 1.0, hi_open=True))
  # Input diversity: probability of a random resize-and-pad.
  diversity_prob: float = setting(0.0, Range(0.0, 1.0))
  # Expectation over real-world transformations (attack.eot): probability of
  # each of a random JPEG re-compression and a random down-and-up resize.
  eot_prob: float = setting(0.0, Range(0.0, 1.0))
  random_start: bool = True
  # Transfer techniques; each is off at its default, so earlier masks stay bit-identical.
  # Translation invariance (Dong et al. 2019): the gradient smoothed by a Gaussian
  # of this odd side before the update rule; sigma 0 is the paper's radius/sqrt(3).
  ti_kernel: int = setting(0, OddSide(3, 31, special=((0, "off"),)))
  ti_sigma: float = setting(0.0, Range(0.0, 16.0, lo_open=True, special=((0, "radius/sqrt(3)"),)))
  # Scale invariance (Lin et al. 2020): the loss averaged over x * 2^-i, i < si_copies.
  si_copies: int = setting(1, Range(1, 8))
  # Variance tuning (Wang & He 2021): the gradient plus last step's mean gradient
  # over vt_samples points within vt_beta * eps, less the gradient there.
  vt_samples: int = setting(0, Range(0, 64))
  vt_beta: float = setting(1.5, Range(0.0, 8.0))
  # Ensembles: k surrogates drawn per iteration (0: all), and how their losses are weighed.
  ensemble_subset: int = setting(0, Range(0))
  ensemble_weighting: str = setting("mean", Choice(lambda: ensemble.WEIGHTINGS, "ensemble weighting"))
  # DFANet with a rate per surrogate, `/`-separated in surrogate order ("": dropout_rate for all).
  dropout_rates: str = setting("", RatesPerSurrogate())
  # Expectation over photo variations (flip, shift, rotation, brightness, contrast,
  # blur) of the clean photo, the perturbation added after: each with this probability.
  variation_prob: float = setting(0.0, Range(0.0, 1.0))
  # Feature loss (attack.feature_loss): this weight times the relative distortion of the
  # activation at relative depth feature_depth, added to each surrogate's embedding loss.
  feature_weight: float = setting(0.0, Range(0.0, 1000.0))
  feature_depth: float = setting(0.5, Range(0.0, 1.0))
  # A smooth mask: bilinear on a grid of this side (0: every pixel free).
  mask_resolution: int = setting(0, Range(2, IMAGE_SIDE, special=((0, "off"),)))

  def validate(self) -> "AttackConfig":
    """Raises settings.SettingError (a UserError) naming the first bad field."""
    return settings.check(self, "attack.")

  def check_surrogates(self, count: int) -> "AttackConfig":
    """The settings that depend on the number of surrogates; SettingError if they do not fit."""
    rates = parse_rates(self.dropout_rates)
    if rates and len(rates) != count:
      raise SettingError("attack.dropout_rates", self.dropout_rates,
                         f"has {len(rates)} rates for {count} surrogate{'s' * (count != 1)}; "
                         "give one per surrogate")
    if self.ensemble_subset > count:
      raise SettingError("attack.ensemble_subset", self.ensemble_subset,
                         f"is more than the {count} surrogate{'s' * (count != 1)}")
    return self

  def surrogate_dropout_rates(self, count: int) -> tuple[float, ...]:
    """The DFANet rate of each of `count` surrogates (a validated config)."""
    return parse_rates(self.dropout_rates) or (self.dropout_rate,) * count
