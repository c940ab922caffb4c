"""Orbax checkpoints of the attack state (mask, momentum, step, PRNG state).

The state is saved as its flat list of leaves (PRNG keys as raw key data) and
restored into the structure of a freshly initialised state, so any pytree
(optax NamedTuples included) round-trips exactly.
"""
from __future__ import annotations

import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp


def _to_saveable(state):
  leaves = jax.tree.leaves(state)
  return {f"leaf_{i:04d}": np.asarray(jax.random.key_data(x) if _is_key(x) else x)
          for i, x in enumerate(leaves)}


def _is_key(x):
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


class AttackCheckpointer:
  """Keeps the latest `max_to_keep` checkpoints of one attack batch, keyed by step."""

  def __init__(self, directory, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(_to_saveable(state)))
    self._manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, like_state, step: int | None = None):
    """Restores into the structure (and shardings) of `like_state`."""
    step = self._manager.latest_step() if step is None else step
    saved = self._manager.restore(step, args=ocp.args.StandardRestore(_to_saveable(like_state)))
    leaves, treedef = jax.tree.flatten(like_state)
    restored = []
    for i, like in enumerate(leaves):
      value = saved[f"leaf_{i:04d}"]
      if _is_key(like):
        value = jax.random.wrap_key_data(np.asarray(value), impl=jax.random.key_impl(like))
      sharding = getattr(like, "sharding", None)
      restored.append(jax.device_put(value, sharding) if sharding is not None else value)
    return jax.tree.unflatten(treedef, restored)

  def close(self):
    self._manager.close()
