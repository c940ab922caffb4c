"""Flags that make a launcher one process of a multi-process run (jax.distributed).

Every launcher has them: experiments.flags.run joins the run before main, so
before any JAX computation. Without them a process joins only where JAX detects
a cluster of several processes itself (TPU pod slice, SLURM, Open MPI), and on
a single machine runs alone.
"""
from absl import flags

from opom_jax.run import distributed
from opom_jax.run.log import progress_log

COORDINATOR_ADDRESS = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, the same on every process (multi-process runs; TPU pods, SLURM and Open MPI need none of these three flags).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the multi-process run (with --coordinator_address).", lower_bound=1)
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's number, 0 to --num_processes - 1; process 0 writes the run's files.", lower_bound=0)
DISTRIBUTED_TIMEOUT = flags.DEFINE_integer("distributed_timeout", 300, "Seconds a process waits for the others to join the run.", lower_bound=1)


def initialize() -> None:
  """Joins the run the flags (or the detected cluster) describe; alone, does nothing."""
  joined = distributed.initialize(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value,
                                  PROCESS_ID.value, timeout_s=DISTRIBUTED_TIMEOUT.value)
  if joined:
    progress_log(joined)
