"""Settings of the mask attack (pure data; validated by `validate`)."""
from __future__ import annotations

import dataclasses

from opom_jax.attack import losses, update_rules


@dataclasses.dataclass(frozen=True)
class AttackConfig:
  loss: str = "convex_hull"
  rule: str = "base"
  eps: float = 8.0
  step_size: float = 1.0
  iters: int = 16
  nter: int = 5
  lower: float = 0.0
  upper: float = 1.0
  dropout_rate: float = 0.0       # DFANet; the reference's transfer setting uses 0.1
  diversity_prob: float = 0.0     # input diversity: random resize-and-pad
  random_start: bool = True

  def validate(self):
    losses.LOSSES.get(self.loss)
    update_rules.RULES.get(self.rule)
    checks = {
        "eps": self.eps > 0, "step_size": self.step_size > 0,
        "iters": self.iters > 0, "nter": self.nter >= 0,
        "dropout_rate": 0.0 <= self.dropout_rate < 1.0,
        "diversity_prob": 0.0 <= self.diversity_prob <= 1.0,
        "lower": self.lower <= self.upper, "upper": 0.0 < self.upper <= 1.0,
    }
    for name, ok in checks.items():
      if not ok:
        raise ValueError(f"invalid attack setting {name}={getattr(self, name)!r}")
    return self
