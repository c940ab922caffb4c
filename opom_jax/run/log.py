"""Progress output of long jobs."""
from typing import Callable

Log = Callable[[str], None] | None


def progress_log(message: str) -> None:
  print(message, flush=True)  # flushed: long runs are often redirected to a file
