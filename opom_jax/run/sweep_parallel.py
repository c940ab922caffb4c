"""Sweep points run K at a time, each in a worker process on its own share of the GPUs.

Workers are spawned (fresh interpreters: JAX does not survive a fork) and each
takes one group of GPUs as CUDA_VISIBLE_DEVICES before it imports JAX, so two
points never share a GPU; on CPUs the workers share the cores. A worker runs a
point exactly as a sequential sweep does (sweep.attempt_point: same work
directory, same completion marker), so resuming is the same. A worker that
dies fails its point and the points not yet run; the next run finishes them.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from typing import Callable

import numpy as np

from opom_jax.errors import UserError
from opom_jax.run.config import RunConfig

_FACES = {}   # a worker's last data set's crops, for its next point


def device_groups(parallel: int) -> list[str | None]:
  """CUDA_VISIBLE_DEVICES for each of `parallel` workers; None each on CPUs."""
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.local_devices()
  platform = devices[0].platform
  if platform == "cpu":
    return [None] * parallel
  if platform != "gpu":
    raise UserError(f"--parallel={parallel} runs points in separate processes, which needs "
                    f"CPUs or GPUs, not {platform}; use --parallel=1")
  if parallel > len(devices):
    raise UserError(f"--parallel={parallel} needs a GPU per worker; there are {len(devices)}")
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  ordinals = visible.split(",") if visible else [str(i) for i in range(len(devices))]
  return [",".join(group) for group in np.array_split(ordinals, parallel)]


def _start_worker(groups):
  group = groups.get()
  if group is not None:
    os.environ["CUDA_VISIBLE_DEVICES"] = group


def _run_in_worker(name: str, cfg: RunConfig) -> tuple[str | None, float]:
  from opom_jax.run import sweep  # pylint: disable=g-import-not-at-top  (sweep imports this module)
  t0 = time.time()
  error = sweep.attempt_point(cfg, _FACES, lambda message: print(f"[{name}] {message}", flush=True))
  return error, time.time() - t0


def run_points(points: list[tuple[str, RunConfig]], parallel: int, *,
               started: Callable[[str], None],
               done: Callable[[str, str | None, float], None]):
  """Runs the points, at most `parallel` at once; started(name) as each begins and
  done(name, error or None, seconds) as each ends."""
  groups = device_groups(parallel)
  if groups[0] is not None:   # each worker sees only its GPUs: all of them are its devices
    points = [(name, dataclasses.replace(cfg, devices=0)) for name, cfg in points]
  context = multiprocessing.get_context("spawn")
  queue = context.Queue()
  for group in groups:
    queue.put(group)
  waiting = list(points)
  with concurrent.futures.ProcessPoolExecutor(parallel, mp_context=context,
                                              initializer=_start_worker,
                                              initargs=(queue,)) as pool:
    running = {}

    def submit():
      name, cfg = waiting.pop(0)
      try:
        future = pool.submit(_run_in_worker, name, cfg)
      except concurrent.futures.process.BrokenProcessPool:
        done(name, "not run: a worker process died", 0.0)
        return
      started(name)
      running[future] = (name, time.time())

    for _ in range(min(parallel, len(waiting))):
      submit()
    while running:
      finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in finished:
        name, t0 = running.pop(future)
        try:
          error, seconds = future.result()
        except Exception as e:  # pylint: disable=broad-except  (its worker died: BrokenProcessPool)
          error, seconds = f"its worker failed: {type(e).__name__}: {e}", time.time() - t0
        done(name, error, seconds)
        if waiting:
          submit()
    for name, _ in waiting:   # left when the pool broke
      done(name, "not run: a worker process died", 0.0)
