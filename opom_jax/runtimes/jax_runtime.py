"""A zoo network's JAX import run as a black box, for models with no runtime here."""
from __future__ import annotations

import jax
import numpy as np

from opom_jax.models.base import Surrogate


class JaxTarget:
  """A zoo surrogate used as a black box (for models with no runtime here)."""

  def __init__(self, surrogate: Surrogate, batch_size: int = 32):
    self.name = f"jax:{surrogate.name}"
    self._surrogate = surrogate
    self._batch = batch_size
    self._embed = jax.jit(lambda p, x: surrogate.apply(p, x))

  def embed(self, images: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(images), self._batch):
      chunk = np.asarray(images[start:start + self._batch], np.float32)
      n = len(chunk)
      if n < self._batch:  # fixed shape: one compiled program
        chunk = np.concatenate([chunk, np.zeros((self._batch - n,) + chunk.shape[1:], np.float32)])
      out.append(np.asarray(self._embed(self._surrogate.params, chunk))[:n])
    feats = np.concatenate(out) if out else np.zeros((0, self._surrogate.emb_dim), np.float32)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
