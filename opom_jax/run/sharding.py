"""Identities sharded over a device mesh (jax.jit + NamedSharding; no pmap).

Identities are independent, so the attack needs no collectives: each device
runs the vmapped step on its slice of people and XLA partitions the program.
In a multi-process run (opom_jax/run/distributed.py) the mesh holds every
process's devices; a process places only its own devices' rows (`put`) and
reads results back whole (`gather`).
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
  if n < available and jax.process_count() > 1:
    # Every process runs the same program on the mesh: it must hold devices of all.
    raise ValueError(f"--devices={devices}: a multi-process run uses all {available} devices "
                     "(--devices=0)")
  # Auto axes: XLA propagates the identity sharding through the vmapped step.
  return jax.make_mesh((n,), (AXIS,), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def padded_batch(people_per_batch: int, mesh: jax.sharding.Mesh) -> int:
  """Batch size rounded up so every device gets the same number of people."""
  n = mesh.shape[AXIS]
  return int(math.ceil(people_per_batch / n) * n)


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def put(x, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array from a host value every process holds: each process copies
  only the slices of its own devices (PRNG key arrays keep their type)."""
  if _is_key(x):
    return jax.random.wrap_key_data(put(jax.random.key_data(x), sharding),
                                    impl=jax.random.key_impl(x))
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def gather(x) -> np.ndarray:
  """A (possibly multi-process) array's whole value on every process, as numpy
  (PRNG keys as their raw key data)."""
  if _is_key(x):
    x = jax.random.key_data(x)
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def shard_people(tree, mesh):
  """Places arrays with a leading identity axis, split across the mesh."""
  sharding = NamedSharding(mesh, P(AXIS))
  return jax.tree.map(lambda x: put(x, sharding), tree)


def replicate(tree, mesh):
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: put(x, sharding), tree)


def pad_people(x: np.ndarray, size: int) -> np.ndarray:
  """Pads the identity axis with zeros (padded people have no valid photos)."""
  if len(x) == size:
    return x
  pad = np.zeros((size - len(x),) + x.shape[1:], x.dtype)
  return np.concatenate([x, pad])
