"""Settings of the mask attack (pure data); each field declares its allowed values."""
from __future__ import annotations

import dataclasses

from opom_jax import settings
from opom_jax.attack import losses, update_rules
from opom_jax.settings import Choice, Range, setting

MAX_EPS = 64.0        # pixel units: beyond this a "mask" repaints the face
MAX_ITERS = 10_000


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

  def validate(self) -> "AttackConfig":
    """Raises settings.SettingError (a UserError) naming the first bad field."""
    return settings.check(self, "attack.")
