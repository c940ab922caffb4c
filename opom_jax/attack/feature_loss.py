"""A feature loss on an intermediate layer, beside the embedding loss.

Mid-level features (edges, parts) are shared far more between face recognisers
than their final embeddings (Zhou et al. 2018, "Transferable adversarial
perturbations"; Ganeshan et al. 2019, FDA), so distorting them transfers to
networks the mask never saw. The loss is the relative squared distance
between each protected photo's activation and its clean photo's at one
layer, averaged over the person's real photos; maximised, like every loss.

The layer is chosen by relative depth among the activations a forward
records (models.ops.recording: every convolution's output, or every block's
in flax networks), so the same setting means "halfway through" for any zoo
network, whatever its format.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def layer_index(count: int, depth: float) -> int:
  """The recorded activation at relative depth `depth` in [0, 1] of `count`."""
  if count == 0:
    raise ValueError("the surrogate recorded no activation: it has no ops.conv2d or "
                     "ops.record to take a feature loss from")
  return min(count - 1, max(0, round(depth * (count - 1))))


def relative_distortion(adv, clean, valid):
  """Mean over real photos of ||adv - clean||^2 / ||clean||^2; adv, clean (N, ...)."""
  clean = jax.lax.stop_gradient(clean)
  axes = tuple(range(1, adv.ndim))
  ratio = (jnp.sum((adv - clean) ** 2, axis=axes)
           / jnp.maximum(jnp.sum(clean ** 2, axis=axes), 1e-12))
  m = valid.astype(ratio.dtype)
  return jnp.sum(ratio * m) / jnp.maximum(m.sum(), 1.0)
