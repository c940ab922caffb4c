"""Identities sharded over a device mesh (jax.jit + NamedSharding; no pmap).

Identities are independent, so the attack needs no collectives: each device
runs the vmapped step on its slice of people and XLA partitions the program.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

AXIS = "people"


def make_mesh(devices: int = 0) -> jax.sharding.Mesh:
  available = jax.device_count()
  n = available if devices <= 0 else devices
  if n > available:
    raise ValueError(f"--devices={devices} but only {available} devices are visible")
  # Auto axes: XLA propagates the identity sharding through the vmapped step.
  return jax.make_mesh((n,), (AXIS,), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def padded_batch(people_per_batch: int, mesh: jax.sharding.Mesh) -> int:
  """Batch size rounded up so every device gets the same number of people."""
  n = mesh.shape[AXIS]
  return int(math.ceil(people_per_batch / n) * n)


def shard_people(tree, mesh):
  """Places arrays with a leading identity axis, split across the mesh."""
  sharding = NamedSharding(mesh, P(AXIS))
  return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def replicate(tree, mesh):
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def pad_people(x: np.ndarray, size: int) -> np.ndarray:
  """Pads the identity axis with zeros (padded people have no valid photos)."""
  if len(x) == size:
    return x
  pad = np.zeros((size - len(x),) + x.shape[1:], x.dtype)
  return np.concatenate([x, pad])
