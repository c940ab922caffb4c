r"""What a bfloat16 surrogate forward does to the masks: float32 vs bfloat16 on real LFW people.

Learns the same people's masks twice through the library's generate and
evaluate, with the surrogate's forward in float32 and in bfloat16
(RunConfig.compute_dtype: bfloat16 operands, float32 accumulation, loss and
update), then reports how far apart the masks are and the protection each
gives. Both runs share the aligned crops and the targets' cached features;
masks stored by an earlier run with the same flags are reused (then the
seconds do not measure learning).

  python -m benchmarks.bf16_effect --cache_dir /tmp/opom_tfds            # 3 people, 16 iterations
  python -m benchmarks.bf16_effect --cache_dir /tmp/opom_tfds --iters 2  # smoke run

Per dtype: seconds to learn the masks and protect@1 per target; then the masks'
mean |difference| (pixel values), the share of pixels whose sign differs and
the largest difference. Last line:
bf16_effect mean_abs_diff=<x> sign_differs=<share> protect1_float32=<a> protect1_bfloat16=<b>
(protect@1 against --target).
"""
import argparse
import os
import time

import numpy as np

from opom_jax import paths
from opom_jax.attack import AttackConfig
from opom_jax.models import base
from opom_jax.run import config as config_lib
from opom_jax.run import evaluate
from opom_jax.run import faces as faces_lib
from opom_jax.run import generate


def _config(args, dtype: str) -> config_lib.RunConfig:
  data = config_lib.DataConfig(
      data_root=str(paths.data_root(args.data_root)), cache_dir=os.path.abspath(args.cache_dir),
      max_people=args.people, n_train=args.n_train, max_test=args.max_test,
      max_distractors=args.max_distractors)
  attack = AttackConfig(loss=args.method, rule="base", eps=8.0, step_size=1.0, iters=args.iters,
                        nter=min(5, args.iters))
  # overwrite: a rerun with other flags measures again rather than refusing.
  return config_lib.validate(config_lib.RunConfig(
      workdir=os.path.abspath(os.path.join(args.workdir, dtype)), data=data, attack=attack,
      model_root=str(paths.model_root(args.model_root)), surrogates=(args.surrogate,),
      methods=(args.method,), targets=(args.target,), compute_dtype=dtype,
      people_per_batch=args.people, overwrite=True, verification=False))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/bf16_effect")
  parser.add_argument("--cache_dir", default="runs/aligned_cache")
  parser.add_argument("--data_root", default=None)
  parser.add_argument("--model_root", default=None)
  parser.add_argument("--people", type=int, default=3)
  parser.add_argument("--n_train", type=int, default=10)
  parser.add_argument("--max_test", type=int, default=10)
  parser.add_argument("--max_distractors", type=int, default=500)
  parser.add_argument("--iters", type=int, default=16)
  parser.add_argument("--method", default="convex_hull")
  parser.add_argument("--surrogate", default="foamliu_mbf")
  parser.add_argument("--target", default="w600k_mbf")
  args = parser.parse_args()

  configs = {dtype: _config(args, dtype) for dtype in base.COMPUTE_DTYPES}
  faces = faces_lib.load_faces(configs[base.FLOAT32])  # the data settings are the same
  masks, protection = {}, {}
  for dtype, cfg in configs.items():
    t0 = time.perf_counter()
    masks[dtype] = generate.generate(cfg, faces=faces)[args.method]
    seconds = time.perf_counter() - t0
    rows = [r for r in evaluate.evaluate(cfg, faces=faces) if r["method"] == args.method]
    protection[dtype] = {r["target"]: r["protect@1"] for r in rows}
    print(f"{dtype}: masks in {seconds:.1f}s; protect@1 "
          + ", ".join(f"{t} {p:.3f}" for t, p in protection[dtype].items()))

  a, b = masks[base.FLOAT32], masks[base.BFLOAT16]
  diff = np.abs(a - b)
  sign_differs = float(np.mean(np.sign(a) != np.sign(b)))
  print(f"masks ({a.shape[0]} people): mean |diff| {diff.mean():.4f}, max |diff| {diff.max():.2f}, "
        f"mean |mask| float32 {np.abs(a).mean():.3f} bfloat16 {np.abs(b).mean():.3f}, "
        f"sign differs at {sign_differs:.4f} of pixels")
  print(f"bf16_effect mean_abs_diff={diff.mean():.4f} sign_differs={sign_differs:.4f} "
        f"protect1_float32={protection[base.FLOAT32][args.target]:.3f} "
        f"protect1_bfloat16={protection[base.BFLOAT16][args.target]:.3f}")


if __name__ == "__main__":
  main()
