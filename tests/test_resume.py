"""A run killed with SIGKILL resumes from its checkpoint and ends with the same
masks as an uninterrupted run (which also shows same seed, same masks).

The fast test drives learn_masks with a tiny surrogate in a subprocess; the
slow one runs experiments.generate on real LFW photos with foamliu_mbf.
"""
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

# argv: workdir, output .npy. Checkpoints every 4 of 60 iterations; the
# orbax saves make the run last long enough to be killed part way.
SCRIPT = """
import sys
sys.path.insert(0, "tests")
import numpy as np
from opom_jax.attack import AttackConfig
from opom_jax.run.learn import learn_masks
from tiny_surrogate import random_faces, tiny_surrogate
s = tiny_surrogate()
images, valid = random_faces(3, 2)
masks = learn_masks([s.apply], (s.params,), images, valid,
                    AttackConfig(loss="convex_hull", iters=60, nter=3), seed=3,
                    workdir=sys.argv[1], checkpoint_every=4)
np.save(sys.argv[2], masks)
"""


def _env(tmp_path):
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          # Later runs reuse the first run's compiled programs.
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _kill_after_checkpoint(command, checkpoint_glob, env, workdir: pathlib.Path):
  """Starts `command`, SIGKILLs it once a checkpoint matching the glob is in place."""
  proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if list(workdir.glob(checkpoint_glob)):  # orbax renames a checkpoint into place once complete
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()


def test_killed_learn_masks_resumes_to_identical_masks(tmp_path):
  env = _env(tmp_path)
  run = lambda workdir, out: [sys.executable, "-c", SCRIPT, str(workdir), str(out)]
  full = subprocess.run(run(tmp_path / "full", tmp_path / "full.npy"), cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert full.returncode == 0, full.stderr[-3000:]

  killed = tmp_path / "killed"
  _kill_after_checkpoint(run(killed, tmp_path / "killed.npy"), "*/ckpt_00000/8", env, killed)
  assert not (tmp_path / "killed.npy").exists()

  resumed = subprocess.run(run(killed, tmp_path / "killed.npy"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed at iteration" in resumed.stdout, resumed.stdout[-3000:]
  a, b = np.load(tmp_path / "full.npy"), np.load(tmp_path / "killed.npy")
  assert a.shape == (3, 112, 112, 3) and np.abs(a).max() > 0
  np.testing.assert_array_equal(a, b)


def _tiny_dataset(root: pathlib.Path, lfw: pathlib.Path):
  """2 people x 4 photos (3 train, 1 test) and one single-photo distractor, as symlinks."""
  for person, count in (("Abdullah_Gul", 4), ("Alvaro_Uribe", 4), ("Aaron_Eckhart", 1)):
    (root / person).mkdir(parents=True)
    for photo in sorted((lfw / person).iterdir())[:count]:
      (root / person / photo.name).symlink_to(photo)


def _command(data_root, workdir, cache):
  return [sys.executable, "-m", "experiments.generate", f"--data_root={data_root}",
          "--dataset=faces", f"--workdir={workdir}", f"--cache_dir={cache}",
          "--min_photos=4", "--n_train=3", "--max_people=2", "--methods=convex_hull",
          "--iters=40", "--nter=3", "--checkpoint_every=4", "--seed=3"]


@pytest.mark.slow
def test_killed_generate_resumes_to_identical_masks(tmp_path, lfw_root):
  data_root = tmp_path / "data"
  _tiny_dataset(data_root / "faces", lfw_root)
  cache = tmp_path / "cache"
  env = _env(tmp_path)
  full = subprocess.run(_command(data_root, tmp_path / "full", cache), cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert full.returncode == 0, full.stderr[-3000:]

  killed = tmp_path / "killed"
  _kill_after_checkpoint(_command(data_root, killed, cache),
                         "progress/convex_hull/*/ckpt_00000/8", env, killed)
  assert not (killed / "masks" / "convex_hull.npz").exists()

  resumed = subprocess.run(_command(data_root, killed, cache), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed at iteration" in resumed.stdout + resumed.stderr
  a = np.load(tmp_path / "full" / "masks" / "convex_hull.npz")["masks"]
  b = np.load(killed / "masks" / "convex_hull.npz")["masks"]
  assert a.shape == (2, 112, 112, 3)
  np.testing.assert_array_equal(a, b)
