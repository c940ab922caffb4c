"""Writing files so that a killed process never leaves half of one."""
from __future__ import annotations

import os
import pathlib
import sys
from typing import BinaryIO, Callable


def _this_process_writes() -> bool:
  if "jax" not in sys.modules:  # no JAX, no multi-process run
    return True
  from opom_jax.run import distributed  # pylint: disable=g-import-not-at-top
  return distributed.is_main()


def atomic_write(path, write: Callable[[BinaryIO], None], *,
                 every_process: bool = False) -> pathlib.Path:
  """Calls write(binary file) on a temporary file beside `path`, then renames it
  over `path`: readers see the old file or the new one, never a partial one.

  In a multi-process run only process 0 writes (the others hold the same
  gathered results), so no two processes write one file; `every_process` is
  for a file only this process writes (its own part of a shared job).
  """
  path = pathlib.Path(path)
  if not (every_process or _this_process_writes()):
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    with open(tmp, "wb") as f:
      write(f)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return path


def atomic_write_text(path, text: str) -> pathlib.Path:
  return atomic_write(path, lambda f: f.write(text.encode()))
