"""Variance tuning (VT, Wang & He 2021): the gradient corrected by its spread nearby.

Each step adds to the gradient at x the previous step's
    v = mean_j grad(x + r_j) - grad(x),  r_j ~ U(-radius, radius)^shape,
a look at the gradient around the point, which steadies the direction of the
update and escapes the surrogate's local wrinkles (better transfer).
"""
import jax
import jax.numpy as jnp


def neighbourhood_mean_gradient(grad_fn, x, key, samples: int, radius: float):
  """Mean of grad_fn(x + r_j, key_j) over `samples` uniform points r_j in the radius.

  A loop, not a vmap: `samples` gradients at once would hold that many copies
  of the surrogates' activations.
  """
  def add_one(j, total):
    noise_key, draw_key = jax.random.split(jax.random.fold_in(key, j))
    r = jax.random.uniform(noise_key, x.shape, x.dtype, -radius, radius)
    return total + grad_fn(x + r, draw_key)
  return jax.lax.fori_loop(0, samples, add_one, jnp.zeros_like(x)) / samples
