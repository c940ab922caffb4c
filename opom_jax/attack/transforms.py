"""Input diversity (Xie et al. 2019): random resize-and-pad, kept at a fixed shape."""
import jax
import jax.numpy as jnp


def input_diversity(key, x, prob: float, min_scale: float = 0.9):
  """With probability `prob`, shrink the batch by a random factor and pad it back.

  Equivalent to the usual resize-to-r-then-zero-pad-to-R at a random offset,
  but expressed as one differentiable resampling to the original size so
  shapes stay static under jit.
  """
  if prob <= 0.0:
    return x
  k_apply, k_scale, k_shift = jax.random.split(key, 3)
  n, h, w, c = x.shape
  scale = jax.random.uniform(k_scale, (), minval=min_scale, maxval=1.0)
  shift = jax.random.uniform(k_shift, (2,)) * (1.0 - scale) * jnp.array([h, w])
  resized = jax.image.scale_and_translate(
      x, (n, h, w, c), (1, 2), jnp.stack([scale, scale]), shift, "linear",
      antialias=False)
  return jnp.where(jax.random.uniform(k_apply) < prob, resized, x)
