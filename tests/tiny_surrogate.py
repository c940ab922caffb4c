"""A tiny random face 'model' with the zoo calling convention, for fast run-layer tests.

apply(params, x, *, dropout_rate=0.0, rng=None) -> (N, 16) on (N, 112, 112, 3)
float 0..255: 8x8 average pooling, one 3x3 convolution, ReLU, a dense layer.
Compiles in about a second, so tests of batching, resume and stored files do
not pay for a real network.
"""
import jax
import numpy as np

from opom_jax.models import ops
from opom_jax.models.base import Surrogate


def tiny_surrogate(seed: int = 0, dim: int = 16) -> Surrogate:
  rng = np.random.default_rng(seed)  # numpy: eager jax.random would compile per op
  params = {"conv": (0.5 * rng.normal(size=(3, 3, 3, 8))).astype(np.float32),
            "dense": (0.05 * rng.normal(size=(14 * 14 * 8, dim))).astype(np.float32)}

  def apply(params, x, *, dropout_rate=0.0, rng=None):
    n = x.shape[0]
    x = ((x - 127.5) / 128.0).reshape(n, 14, 8, 14, 8, 3).mean(axis=(2, 4))
    h = jax.nn.relu(ops.conv2d(x, params["conv"], padding=((1, 1), (1, 1))))
    if dropout_rate > 0 and rng is not None:
      h = h * jax.random.bernoulli(rng, 1 - dropout_rate, h.shape) / (1 - dropout_rate)
    return h.reshape(n, -1) @ params["dense"]

  return Surrogate(name="tiny", params=params, apply=apply, emb_dim=dim)


def random_faces(num_people: int, photos: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(P, N, 112, 112, 3) float32 0..255 smooth random 'photos' and (P, N) validity."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (num_people, photos, 14, 14, 3)).astype(np.float32)
  images = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
  valid = np.ones((num_people, photos), bool)
  return images, valid
