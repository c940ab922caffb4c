"""Orbax checkpoints of the attack state (mask, momentum, step, PRNG state).

The state is saved as its flat list of leaves (PRNG keys as raw key data) and
restored into the structure of a freshly initialised state, so any pytree
(optax NamedTuples included) round-trips exactly. A digest of the leaves is
saved with them: a damaged file that still parses is caught on restore, and
`restore_latest` then falls back to the previous checkpoint.

In a multi-process run every process saves the same gathered (host) leaves,
which Orbax writes once from process 0, and every process restores them from
the shared directory into its own devices' slices.
"""
from __future__ import annotations

import hashlib
import pathlib
from typing import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from opom_jax.run import sharding
from opom_jax.run.log import Log, progress_log

_DIGEST = "digest"


def _is_key(x):
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _leaves(state) -> dict[str, np.ndarray]:
  leaves = jax.tree.leaves(state)
  return {f"leaf_{i:04d}": sharding.gather(x) for i, x in enumerate(leaves)}


def _saved_like(x) -> np.ndarray:
  """Zeros of the shape and dtype a leaf is saved with (PRNG keys as key data)."""
  spec = jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x
  return np.zeros(spec.shape, spec.dtype)


def _digest(leaves: dict[str, np.ndarray]) -> np.ndarray:
  h = hashlib.sha1()
  for name in sorted(leaves):
    a = np.ascontiguousarray(leaves[name])
    h.update(f"{name}{a.shape}{a.dtype.str}".encode())
    h.update(a.data)
  return np.frombuffer(h.digest(), np.uint8)


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:160] if text else ''}"


class AttackCheckpointer:
  """Keeps the latest `max_to_keep` checkpoints of one attack batch, keyed by step."""

  def __init__(self, directory, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def save(self, step: int, state) -> None:
    leaves = _leaves(state)
    leaves[_DIGEST] = _digest(leaves)
    self._manager.save(step, args=ocp.args.StandardSave(leaves))
    self._manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def _restore_host(self, like_state, step: int):
    """The step's leaves as numpy (PRNG keys as key data) in like_state's
    structure; raises if the checkpoint is damaged."""
    template = {f"leaf_{i:04d}": _saved_like(x) for i, x in enumerate(jax.tree.leaves(like_state))}
    template[_DIGEST] = np.zeros(20, np.uint8)
    saved = self._manager.restore(step, args=ocp.args.StandardRestore(template))
    saved = {k: np.asarray(v) for k, v in saved.items()}
    stored_digest = saved.pop(_DIGEST)
    if not np.array_equal(stored_digest, _digest(saved)):
      raise ValueError("its contents do not match the digest saved with them")
    treedef = jax.tree.structure(like_state)
    return jax.tree.unflatten(treedef, [saved[f"leaf_{i:04d}"] for i in range(treedef.num_leaves)])

  @staticmethod
  def _place(host_state, like_state):
    """Host leaves onto like_state's devices and shardings, keys re-wrapped."""
    def place(value, like):
      if not isinstance(like, jax.Array):
        return value
      placed = sharding.put(value, like.sharding)
      return jax.random.wrap_key_data(placed, impl=jax.random.key_impl(like)) if _is_key(like) else placed
    return jax.tree.map(place, host_state, like_state)

  def restore(self, like_state, step: int | None = None):
    """Restores into the structure (and shardings) of `like_state`; raises if damaged."""
    step = self._manager.latest_step() if step is None else step
    return self._place(self._restore_host(like_state, step), like_state)

  def restore_latest(self, like_state, check: Callable | None = None, log: Log = None):
    """(state, step) of the newest intact checkpoint, or (None, None) if there is none.

    `check(host_state, step)`, given the leaves as numpy arrays (PRNG keys as
    key data), returns why a restored state is unusable, or None. A damaged
    checkpoint is logged by path and deleted, so a new save of its step is
    possible.
    """
    log = log or progress_log
    for step in reversed(self.all_steps()):
      try:
        host = self._restore_host(like_state, step)
        problem = check(host, step) if check else None
      except Exception as e:  # any failure to read back means the checkpoint is damaged
        problem = _first_line(e)
      if problem is None:
        return self._place(host, like_state), step
      log(f"checkpoint {self.directory / str(step)} is damaged ({problem}); "
          "falling back to the previous one")
      self._manager.delete(step)
    return None, None

  def close(self):
    self._manager.close()
