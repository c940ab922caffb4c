"""Picking the fastest of several equivalent kernels by timing them once.

Which formulation of an op is fastest depends on the backend and the shapes
(ops.py: XLA:CPU's grouped convolution is 10-50x slower than a shifted sum,
while GPUs and TPUs have vendor kernels for it), so it is measured rather than
guessed: each candidate is jitted and run on arrays of the real shapes, a few
times, the first time a (backend, shape signature) key is seen; the winner is
kept for the rest of the process. Called while a program is being traced, the
timing runs eagerly (ensure_compile_time_eval) and the traced program uses
only the winner.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

# key -> chosen name; a process measures each key once.
_CHOSEN: dict[tuple, str] = {}


def _seconds(fn, args, repeats: int) -> float:
  """Best of `repeats` timed runs of jitted fn, after one run that compiles it."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def fastest(key: tuple, candidates: dict[str, Callable], arg_specs: Sequence[jax.ShapeDtypeStruct],
            fallback: str, repeats: int = 3) -> str:
  """The name of the fastest of `candidates` (functions of arrays shaped like `arg_specs`).

  Measured once per `key` (which should name the backend and everything the
  cost depends on) and remembered; if the measurement fails (e.g. the device
  runs out of memory), `fallback`, also remembered.
  """
  if key in _CHOSEN:
    return _CHOSEN[key]
  try:
    with jax.ensure_compile_time_eval():
      args = [jnp.ones(s.shape, s.dtype) for s in arg_specs]
      times = {name: _seconds(jax.jit(fn), args, repeats) for name, fn in candidates.items()}
    choice = min(times, key=times.get)
  except (RuntimeError, MemoryError):
    choice = fallback
  _CHOSEN[key] = choice
  return choice


def chosen() -> dict[tuple, str]:
  """What this process has measured so far: key -> chosen name."""
  return dict(_CHOSEN)
