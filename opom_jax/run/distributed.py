"""Multi-process runs (jax.distributed): one process per host, one program.

Every process runs the same launcher with the same flags. Once joined,
jax.devices() lists every process's devices and a process computes only on its
own. What keeps N processes equivalent to one:

- every process reads the same inputs and takes the same decisions from the
  same files (reuse a batch, resume a checkpoint), so the work directory must be
  one folder that every host sees at the same path (`check_shared`);
- results are gathered, so every process holds them whole; process 0 alone
  writes files (opom_jax.files), and `barrier` makes the others wait where they
  then read what it wrote;
- the aligned-faces cache is filled by all of them: each aligns its share of the
  people (`alignment_share`), process 0 writes the dataset, all read it.
"""
from __future__ import annotations

import pathlib
import secrets
import socket
import time
from typing import Callable

import jax
import numpy as np

from opom_jax.settings import SettingError


def _detected_cluster():
  """The cluster environment jax.distributed would configure itself from (TPU
  pod, SLURM, Open MPI...) when it holds more than one process, else None."""
  from jax._src import clusters  # pylint: disable=g-import-not-at-top  (no public API for detection)
  for env in getattr(clusters.ClusterEnv, "_cluster_types", []):
    if not env.opt_in_only_method and env.is_env_present():  # jax's own order and rule
      return env if env.get_process_count() > 1 else None
  return None


def _wait_for_coordinator(address: str, timeout_s: int) -> None:
  """Returns once process 0's coordinator accepts connections; SettingError after
  timeout_s (jax's own client would abort the process instead)."""
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
      return
    except OSError as e:
      if time.monotonic() > deadline:
        raise SettingError("coordinator_address", address,
                           f"could not be reached in {timeout_s} s ({e.strerror or e}): "
                           "is process 0 running there?") from None
      time.sleep(0.5)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 300) -> str | None:
  """Joins a multi-process run; a line describing it, or None when this process runs alone.

  With no argument, joins only where a cluster environment holding several
  processes is detected (nothing at all on a single machine). Must run before
  any JAX computation. A process that cannot reach the coordinator within
  `timeout_s` seconds fails with SettingError naming the address.
  """
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  cluster = _detected_cluster()
  if cluster is None and all(v is None for v in given.values()):
    return None
  missing = [name for name, value in given.items() if value is None]
  if cluster is None and missing:
    name = next(n for n in given if n not in missing)
    raise SettingError(name, given[name], f"needs {' and '.join(missing)} too: no cluster "
                       "(TPU pod, SLURM, Open MPI) is detected to supply them")
  if num_processes is not None and num_processes < 1:
    raise SettingError("num_processes", num_processes, "must be at least 1")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise SettingError("process_id", process_id, f"must be in [0, {num_processes})")
  if coordinator_address is not None and not coordinator_address.rpartition(":")[2].isdigit():
    raise SettingError("coordinator_address", coordinator_address, "is not host:port")
  if coordinator_address is not None and process_id not in (None, 0):
    _wait_for_coordinator(coordinator_address, timeout_s)
  # CPU devices exchange arrays through gloo (accelerators use their own collectives).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=timeout_s)
  except Exception as e:  # jax raises XlaRuntimeError/RuntimeError; the reason is its first line
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    address = coordinator_address or (cluster.__name__ if cluster else "")
    raise SettingError("coordinator_address", address, f"could not be joined: {first}") from None
  return (f"distributed: process {jax.process_index()} of {jax.process_count()}, "
          f"{jax.local_device_count()} of {jax.device_count()} devices here"
          + (f" ({cluster.__name__})" if cluster else ""))


def is_multiprocess() -> bool:
  return jax.distributed.is_initialized() and jax.process_count() > 1


def is_main() -> bool:
  """Whether this process writes the run's files (process 0, or the only one)."""
  return not jax.distributed.is_initialized() or jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier of this name (none alone)."""
  if is_multiprocess():
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def alignment_share(make):
  """make(index, count, barrier): this process's share of aligning a data set (None alone)."""
  if not is_multiprocess():
    return None
  return make(jax.process_index(), jax.process_count(), barrier)


def from_every_process(value: bool) -> np.ndarray:
  """Every process's `value`, indexed by process (one element alone)."""
  if not is_multiprocess():
    return np.array([value])
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(np.array(value))).reshape(-1)


def check_shared(directory) -> None:
  """Raises SettingError on every process unless all see `directory` as one folder.

  Process 0 writes a file there; a process that does not find it is on another
  disk, and would resume or read from files the others cannot see.
  """
  if not is_multiprocess():
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  token = int(multihost_utils.broadcast_one_to_all(np.int64(secrets.randbits(62))))
  marker = directory / f".shared_check_{token}"
  if is_main():
    directory.mkdir(parents=True, exist_ok=True)
    marker.touch()
  barrier(f"shared check {token}: written")
  seen = from_every_process(marker.exists())
  barrier(f"shared check {token}: read")
  if is_main():
    marker.unlink(missing_ok=True)
  if not seen.all():
    missing = [int(p) for p in np.flatnonzero(~seen)]
    raise SettingError("workdir", str(directory),
                       f"is not one folder shared by every process: process(es) {missing} do not "
                       "see what process 0 wrote there (use a shared file system)")


def split_rows(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
  """fn over rows, each process taking a share of them, the results gathered.

  For functions that are not JAX computations (an ONNX runtime embedding
  photos); every process must call the returned function with the same rows.
  """
  if not is_multiprocess():
    return fn

  def split(rows: np.ndarray) -> np.ndarray:
    count = jax.process_count()
    if len(rows) < count:
      return np.asarray(fn(rows))
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    shares = np.array_split(np.arange(len(rows)), count)
    mine = np.asarray(fn(rows[shares[jax.process_index()]]))
    size = len(shares[0])  # array_split: the first shares are the largest
    padded = np.zeros((size,) + mine.shape[1:], mine.dtype)
    padded[:len(mine)] = mine
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return np.concatenate([gathered[p, :len(s)] for p, s in enumerate(shares)])

  return split
