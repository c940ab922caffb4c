"""A generate run killed with SIGKILL resumes from its checkpoint and ends with
the same masks as an uninterrupted run (which also shows same seed, same masks)."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent


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


def test_killed_run_resumes_to_identical_masks(tmp_path, lfw_root):
  data_root = tmp_path / "data"
  _tiny_dataset(data_root / "faces", lfw_root)
  cache = tmp_path / "cache"
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         # Later runs reuse the first run's compiled programs.
         "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  full = subprocess.run(_command(data_root, tmp_path / "full", cache), cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert full.returncode == 0, full.stderr[-3000:]

  killed_dir = tmp_path / "killed"
  ckpt = killed_dir / "progress" / "convex_hull" / "ckpt_00000"
  proc = subprocess.Popen(_command(data_root, killed_dir, cache), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if (ckpt / "8").is_dir():  # orbax renames a checkpoint into place once complete
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed_dir / "masks" / "convex_hull.npz").exists()

  resumed = subprocess.run(_command(data_root, killed_dir, cache), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed at iteration" in resumed.stdout + resumed.stderr
  a = np.load(tmp_path / "full" / "masks" / "convex_hull.npz")["masks"]
  b = np.load(killed_dir / "masks" / "convex_hull.npz")["masks"]
  assert a.shape == (2, 112, 112, 3)
  np.testing.assert_array_equal(a, b)
