"""Launchers: bad flags end with one line naming the flag, before any work starts."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, env=None):
  return subprocess.run([sys.executable, "-m", "experiments.generate", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args,flag", [
    (["--methods=convex_hul"], "--methods"),
    (["--eps=0"], "--eps"),
    (["--eps=-2"], "--eps"),
    (["--data_root=/nonexistent/faces"], "--data_root"),
    (["--surrogates=resnet1000"], "--surrogates"),
    (["--targets=w600k"], "--targets"),
    (["--upper=0"], "--upper"),
])
def test_bad_flag_is_named_in_one_line(tmp_path, args, flag):
  proc = _run("--flagfile=configs/lfw_quick.flags", f"--workdir={tmp_path}", *args)
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and flag in last, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not any(tmp_path.iterdir())  # nothing started


def test_missing_default_data_root_says_what_to_set(tmp_path):
  proc = _run(f"--workdir={tmp_path}", env={"OPOM_DATA_ROOT": str(tmp_path / "none")})
  assert proc.returncode != 0
  assert "OPOM_DATA_ROOT" in proc.stderr.strip().splitlines()[-1]
