"""Two processes joined through jax.distributed (CPU, gloo) make the masks of one.

Each process is a launcher (experiments.flags.run, so the distributed flags
are parsed and the run joined before main) with two CPU devices: identities
are sharded over the four devices of both. Every process is killed when the
test fails or runs out of time, so no run outlives it.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 300  # per run of the processes; a run here takes well under a minute

# argv: --workdir, --out and the distributed flags. 5 people (two with fewer
# photos) in batches of 3 (4 when rounded to four devices), 40 iterations,
# checkpoints every 4; the orbax saves make a run last long enough to be killed.
SCRIPT = """
import pathlib
import sys
sys.path.insert(0, "tests")
from absl import flags as absl_flags
from experiments import flags

WORKDIR = absl_flags.DEFINE_string("workdir", None, "")
OUT = absl_flags.DEFINE_string("out", None, "")


def main(argv):
  import jax
  import numpy as np
  from opom_jax.attack import AttackConfig
  from opom_jax.files import atomic_write_text
  from opom_jax.run import distributed
  from opom_jax.run.learn import learn_masks
  from tiny_surrogate import random_faces, tiny_surrogate
  s = tiny_surrogate()
  images, valid = random_faces(5, 3)
  valid[1, 2] = valid[4, 1:] = False
  masks = learn_masks([s.apply], (s.params,), images, valid,
                      AttackConfig(loss="convex_hull", iters=40, nter=3), seed=3,
                      people_per_batch=3, workdir=WORKDIR.value, checkpoint_every=4)
  rows = images[:, 0]
  shares = []
  embed = distributed.split_rows(lambda x: shares.append(len(x)) or x.mean(axis=(1, 2)))
  # Each process writes its own files: what it holds after the gather.
  np.savez(f"{OUT.value}.{jax.process_index()}.npz", masks=masks, embedded=embed(rows),
           expected=rows.mean(axis=(1, 2)), share=shares[0], devices=jax.device_count())
  atomic_write_text(pathlib.Path(WORKDIR.value) / "writer.txt", str(jax.process_index()))


flags.run(main)
"""


# argv: --workdir (the aligned-faces cache), --out and the distributed flags. Two LFW
# people and 6 one-photo distractors, aligned by the joined processes or by one alone.
ALIGN_SCRIPT = """
import sys
from absl import flags as absl_flags
from experiments import flags

WORKDIR = absl_flags.DEFINE_string("workdir", None, "")
OUT = absl_flags.DEFINE_string("out", None, "")


def main(argv):
  import jax
  import numpy as np
  from opom_jax import paths
  from opom_jax.data import tfds_builder
  from opom_jax.run import distributed
  faces = tfds_builder.load_split(
      paths.data_root() / "lfw-deepfunneled", WORKDIR.value, log=print,
      share=distributed.alignment_share(tfds_builder.Share),
      people=["Angelina_Jolie", "Halle_Berry"], n_train=4, min_photos=5, max_distractors=6)
  np.savez(f"{OUT.value}.{jax.process_index()}.npz",
           **{f"{role}.{k}": np.asarray(v[k]) for role, v in faces.items()
              for k in ("images", "identity", "transforms", "paths", "names")})


flags.run(main)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(tmp_path, devices: int) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          # Later runs reuse the first run's compiled programs.
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _start(tmp_path, workdir, out, processes: int, run: str,
           script: str = SCRIPT) -> list[subprocess.Popen]:
  """`processes` launcher processes (two CPU devices each when joined) of one run."""
  port = _free_port()
  procs = []
  for i in range(processes):
    joined = ([f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
               f"--process_id={i}", "--distributed_timeout=120"] if processes > 1 else [])
    log = open(tmp_path / f"{run}.{i}.log", "w")
    procs.append(subprocess.Popen(
        [sys.executable, "-c", script, f"--workdir={workdir}", f"--out={out}", *joined],
        cwd=REPO, env=_env(tmp_path, 2 if processes > 1 else 1), stdout=log,
        stderr=subprocess.STDOUT, text=True, start_new_session=True))
    log.close()
  return procs


def _kill(procs):
  for p in procs:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def _logs(tmp_path, run: str) -> str:
  return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}"
                   for p in sorted(tmp_path.glob(f"{run}.*.log")))


def _finish(tmp_path, procs, run: str) -> str:
  """Waits for every process to succeed; kills them all at the first failure or the timeout."""
  deadline = time.time() + TIMEOUT_S
  try:
    while any(p.poll() is None for p in procs):
      failed = [p for p in procs if p.poll() not in (None, 0)]
      assert not failed and time.time() < deadline, (
          f"{run}: {'a process failed' if failed else 'timed out'}\n{_logs(tmp_path, run)}")
      time.sleep(0.1)
    assert all(p.returncode == 0 for p in procs), f"{run} failed\n{_logs(tmp_path, run)}"
  finally:
    _kill(procs)
  return _logs(tmp_path, run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """One process alone, and two joined, each uninterrupted: their outputs and logs."""
  tmp = tmp_path_factory.mktemp("multiprocess")
  out = {}
  for name, processes in (("one", 1), ("two", 2)):
    procs = _start(tmp, tmp / name, tmp / name, processes, name)
    log = _finish(tmp, procs, name)
    out[name] = ([dict(np.load(f"{tmp / name}.{i}.npz")) for i in range(processes)], log)
  return tmp, out


def test_two_processes_make_the_masks_of_one(runs):
  tmp, out = runs
  (one,), one_log = out["one"]
  two, two_log = out["two"]
  assert "distributed:" not in one_log  # alone, nothing is joined
  assert "distributed: process 1 of 2, 2 of 4 devices here" in two_log
  assert one["masks"].shape == (5, 112, 112, 3) and np.abs(one["masks"]).max() > 0
  assert all(int(p["devices"]) == 4 for p in two)
  # Both processes hold the whole gathered result, and it is the same.
  np.testing.assert_array_equal(two[0]["masks"], two[1]["masks"])
  # One device and batches of 3 against four devices and batches of 4: per-identity
  # programs are independent, so the masks agree to float rounding (a sign step
  # may flip on a gradient entry within rounding of zero: at most 0.1 % of entries).
  differs = np.abs(two[0]["masks"] - one["masks"]) > 1e-4
  assert differs.mean() <= 1e-3, differs.mean()
  # Finished batches and checkpoints were written once, under one digest.
  assert len(list((tmp / "two").glob("*/batch_*.npy"))) == 2
  assert (tmp / "two" / "writer.txt").read_text() == "0"
  assert not list((tmp / "two").rglob("*.tmp"))


def test_rows_split_over_processes_and_gathered(runs):
  _, out = runs
  two, _ = out["two"]
  for p in two:
    np.testing.assert_allclose(p["embedded"], p["expected"], rtol=1e-6)
  assert sorted(int(p["share"]) for p in two) == [2, 3]  # 5 rows: each process its share


def test_killed_processes_resume_to_identical_masks(runs):
  tmp, out = runs
  two, _ = out["two"]
  killed = tmp / "killed"
  procs = _start(tmp, killed, killed, 2, "killed")
  deadline = time.time() + TIMEOUT_S
  try:
    # Orbax renames a checkpoint into place once every process has written it.
    while not list(killed.glob("*/ckpt_00000/8")):
      assert all(p.poll() is None for p in procs), f"ended early\n{_logs(tmp, 'killed')}"
      assert time.time() < deadline, f"no checkpoint in time\n{_logs(tmp, 'killed')}"
      time.sleep(0.02)
  finally:
    _kill(procs)
  assert not list(tmp.glob("killed.*.npz"))

  log = _finish(tmp, _start(tmp, killed, killed, 2, "resumed"), "resumed")
  assert log.count("resumed at iteration") == 2, log  # in both processes
  for i in range(2):
    np.testing.assert_array_equal(np.load(f"{killed}.{i}.npz")["masks"], two[0]["masks"])


def test_each_process_aligns_its_share_of_the_people(tmp_path):
  faces = {}
  for name, processes in (("one", 1), ("two", 2)):
    procs = _start(tmp_path, tmp_path / f"{name}_cache", tmp_path / name, processes,
                   f"align_{name}", ALIGN_SCRIPT)
    _finish(tmp_path, procs, f"align_{name}")
    faces[name] = [dict(np.load(f"{tmp_path / name}.{i}.npz")) for i in range(processes)]
  # Each process aligned only its people, the two shares together every photo once.
  parts = sorted((tmp_path / "two_cache" / "aligned_parts").glob("*/part-*-of-2.npz"))
  assert [p.name for p in parts] == ["part-0-of-2.npz", "part-1-of-2.npz"]
  people = []
  for part in parts:
    with np.load(part) as f:
      meta = json.loads(f["meta"].tobytes())
    people.append({r["identity"] for r in meta["records"]})
  assert not people[0] & people[1] and {"Angelina_Jolie", "Halle_Berry"} <= people[0] | people[1]
  assert {"Angelina_Jolie", "Halle_Berry"} - people[0] and {"Angelina_Jolie", "Halle_Berry"} - people[1]
  for i in range(2):
    log = (tmp_path / f"align_two.{i}.log").read_text()
    assert f"faces: process {i} of 2 aligns" in log, log[-3000:]
  # Both processes read the same faces, which are those one process aligns alone.
  (one,), two = faces["one"], faces["two"]
  assert set(one) == set(two[0]) == set(two[1])
  assert list(one["train.names"]) == ["Angelina_Jolie", "Halle_Berry"] and len(one["train.images"]) == 8
  for key in one:
    for process in two:
      np.testing.assert_array_equal(process[key], one[key], err_msg=key)


@pytest.mark.parametrize("flags, error", [
    (["--coordinator_address=localhost:1234"],
     "error: --coordinator_address=localhost:1234 needs num_processes and process_id too: "
     "no cluster (TPU pod, SLURM, Open MPI) is detected to supply them"),
    (["--coordinator_address=localhost:{port}", "--num_processes=2", "--process_id=1",
      "--distributed_timeout=1"],
     "error: --coordinator_address=localhost:{port} could not be reached in 1 s "
     "(Connection refused): is process 0 running there?"),
], ids=["incomplete", "no_coordinator"])
def test_distributed_flag_mistakes_are_one_line_errors(tmp_path, flags, error):
  port = _free_port()  # nothing listens there
  proc = subprocess.run([sys.executable, "-c", SCRIPT, f"--workdir={tmp_path}",
                         f"--out={tmp_path}/x", *(f.format(port=port) for f in flags)],
                        cwd=REPO, env=_env(tmp_path, 1), capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 1 and lines == [error.format(port=port)], proc.stderr[-3000:]
