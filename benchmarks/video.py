r"""Protecting video: frame-level identification before and after, and throughput.

  python -m benchmarks.video                     # emmov + Hamilton clip + throughput
  python -m benchmarks.video --skip_emmov --repeats=1

Prints aggregate numbers only (never faces), as markdown tables, and a last
line `fps=<median>`: frames per second of protecting the Hamilton clip with a
saved mask (decode, detect/track, warp, blend, H.264 encode, audio copy).
Mask: base rule, eps 8, 16 iterations, foamliu_mbf surrogate, convex hull loss.
"""
import argparse
import dataclasses
import json
import pathlib
import tempfile

import numpy as np

from opom_jax import paths
from opom_jax.attack.config import AttackConfig
from opom_jax.eval import video_eval
from opom_jax.models import zoo
from opom_jax.run import video

SURROGATE = "foamliu_mbf"
TARGET = "w600k_mbf"


def _table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--lfw_distractors", type=int, default=300)
  parser.add_argument("--repeats", type=int, default=3, help="throughput runs (median)")
  parser.add_argument("--skip_emmov", action="store_true")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  data = paths.data_root()
  attack = AttackConfig(loss="convex_hull", rule="base", eps=8.0, iters=16)
  surrogate = zoo.load_surrogate(SURROGATE)
  embedders = [video_eval.Embedder(f"{SURROGATE} (white-box)", zoo.load_target(f"jax:{SURROGATE}").embed),
               video_eval.Embedder(f"{TARGET} (black-box, onnxruntime)", zoo.load_target(TARGET).embed)]
  distractors = video_eval.lfw_distractors(data / "lfw-deepfunneled", args.lfw_distractors)
  print(f"distractors: {len(distractors)} single-photo LFW people", flush=True)

  if not args.skip_emmov:
    rows = video_eval.emmov_identification(data / "video" / "emmov-aligned", surrogate, embedders,
                                           distractors, attack, seed=args.seed)
    print("\nemmov (7 people, 230 protected test frames each; protection@k = share of "
          "(probe i, clean gallery j != i) pairs not identified in the top k)")
    print(_table(["model", "probes", "protection@1", "protection@5", "pairs"],
                 [[r["model"], r["condition"], f"{r['protection@1']:.3f}",
                   f"{r['protection@5']:.3f}", r["pairs"]] for r in rows]))

  clip = data / "video" / "short_hamilton_clip.mp4"
  cfg = video.VideoConfig(output="unused.mp4", attack=attack, surrogates=(SURROGATE,), seed=args.seed)
  with tempfile.TemporaryDirectory() as tmp:
    summary = video_eval.clip_identification(clip, data / "video" / "lin-manuel-miranda.png", cfg,
                                             embedders, distractors, pathlib.Path(tmp))
    fps = video_eval.throughput(clip, dataclasses.replace(cfg, mask=str(pathlib.Path(tmp) / "mask.npz")),
                                args.repeats)
  print(f"\nHamilton clip: {json.dumps({k: v for k, v in summary.items() if k != 'models'})}")
  print(f"(frames of {summary['measured']} with a face found in all three versions, training "
        f"frames excluded: how many rank the clean still first / in the top 5 among it and "
        f"{len(distractors)} LFW distractors)")
  conditions = list(next(iter(summary["models"].values())))
  print(_table(["model"] + [f"{c} top-{k}" for c in conditions for k in video_eval.KS],
               [[m] + [s[c][f"top{k}"] for c in conditions for k in video_eval.KS]
                for m, s in summary["models"].items()]))
  print(f"\nthroughput (saved mask, 640x360): {', '.join(f'{f:.1f}' for f in fps)} fps")
  print(f"fps={np.median(fps):.1f}")


if __name__ == "__main__":
  main()
