"""The transfer setting the leave-one-out ablation chose (reports/transfer/README.md).

experiments.protect and experiments.protect_video learn with it unless told
otherwise; configs/best_attack.flags holds the same settings as flags (a test
keeps the two equal). Learned by one model of each weight family in the zoo:
the more unlike recognisers a mask fools at once, the better it transfers to
those it never saw.
"""
from __future__ import annotations

SURROGATES = ("bubbliiiing_mbf", "dlib_resnet", "edgeface_xs", "faceplugin_mbf", "foamliu_mbf",
              "hse_faceres", "w600k_mbf", "xiaoccer_mbf", "y1_mbf")

# AttackConfig fields that differ from its defaults (the reference's base rule).
ATTACK = {"ensemble_weighting": "equalise", "variation_prob": 0.5}
