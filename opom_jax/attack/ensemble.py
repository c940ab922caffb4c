"""Ensembles of surrogates: which of them run at an iteration, and how their losses are weighed."""
import jax
import jax.numpy as jnp

# mean: the plain mean of the surrogates' losses. equalise: each loss divided by
# its own size at the start, so a surrogate whose loss happens to be on a larger
# scale (e.g. a lower embedding dimension) does not steer the mask alone.
WEIGHTINGS = ("mean", "equalise")

# The draw depends on the iteration alone: every identity of a batch, and every
# batching of the same people, sees the same surrogates at an iteration, so one
# compiled branch per surrogate is skipped for the whole batch.
_SUBSET_KEY = 0x5EB5E7


def draw_subset(step, count: int, k: int) -> jax.Array:
  """(count,) bool: k surrogates drawn without replacement for iteration `step` (unbatched)."""
  key = jax.random.fold_in(jax.random.key(_SUBSET_KEY), step)
  chosen = jax.random.choice(key, count, (k,), replace=False)
  return jnp.zeros(count, bool).at[chosen].set(True)


def equalising_weights(start_losses) -> jax.Array:
  """(M,) weights, mean 1, that make every surrogate's weighted start loss the same.

  A loss that is zero at the start (no random start) carries no scale; with all
  of them zero the weights are equal, as for the mean.
  """
  inverse = 1.0 / jnp.maximum(jnp.abs(jax.lax.stop_gradient(start_losses)), 1e-12)
  return inverse / jnp.mean(inverse)
