"""The attack layer: pure JAX, no I/O.

subspace (class centre, affine and convex hull projections), losses, update
rules (optax chains), input transforms, the transfer techniques (ensemble,
translation_invariance, variance_tuning, variations, low_frequency) and the
vmapped attack step.
"""
from opom_jax.attack.config import AttackConfig
from opom_jax.attack.step import apply_mask
from opom_jax.attack.step import identity_keys
from opom_jax.attack.step import make_attack
from opom_jax.attack.step import project_universal
