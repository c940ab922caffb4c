r"""Protects one person's face in a video (or a folder of frames) with their OPOM mask.

  python -m experiments.protect_video --video=in.mp4 --output=out.mp4 --mask=~/me_mask.npz
  python -m experiments.protect_video --video=in.mp4 --output=out.mp4 --train_frames=10 \
      --train_photos=~/me --save_mask=~/me_mask.npz
  python -m experiments.protect_video --frames=in_frames/ --output=out_frames/ --mask=me.npz

Video out: H.264 (CRF 18, yuv420p), audio copied; compression weakens the mask.
Frames out: one PNG per input frame, lossless. Frames without a face are kept as they are.
"""
import os

from absl import flags as absl_flags

from experiments import attack_flags
from experiments import flags
from opom_jax import paths
from opom_jax.run import video

attack_flags.default_to_best_setting()  # a person's photos get the best transfer setting

VIDEO = absl_flags.DEFINE_string("video", None, "Input video file (mp4, mov, mkv...).")
FRAMES = absl_flags.DEFINE_string("frames", None, "Input folder of frames (instead of --video).")
OUTPUT = absl_flags.DEFINE_string(
    "output", None, "Output video (.mp4/.mov/.mkv) or, with --frames, output folder.")
METHOD = absl_flags.DEFINE_string("method", "convex_hull", "Loss the mask is learned with.")
MASK = absl_flags.DEFINE_string("mask", "", "A saved mask (.npz) to apply instead of learning one.")
SAVE_MASK = absl_flags.DEFINE_string("save_mask", "", "Also keep the learned mask in this .npz.")
TRAIN_PHOTOS = absl_flags.DEFINE_string("train_photos", "", "Folder of the person's photos to learn from.")
TRAIN_FRAMES = absl_flags.DEFINE_integer(
    "train_frames", 10, "Frames of the input, spread evenly, to learn from (0: photos only).")
DETECT_EVERY = absl_flags.DEFINE_integer(
    "detect_every", 5, "Detect the face every K frames; landmarks are tracked in between.")
MAX_MISSED = absl_flags.DEFINE_integer(
    "max_missed", 10, "Frames a missed detection keeps the last face position.")
UPSAMPLE = absl_flags.DEFINE_integer("upsample", 1, "dlib detector upsampling, 0..3 (more: smaller faces, slower).")
FACE = absl_flags.DEFINE_string("face", "largest", f"Face to protect: {', '.join(video.FACES)}.")

# VideoConfig settings -> this launcher's flags (for one-line errors).
RENAMED = {name: name for name in ("output", "mask", "save_mask", "train_photos", "train_frames",
                                   "detect_every", "max_missed", "upsample", "face")}
RENAMED["attack.loss"] = "method"


def _path(flag) -> str:
  return os.path.expanduser(flag.value or "")


def main(argv):
  del argv
  video.protect_video(video.VideoConfig(
      video=_path(VIDEO), frames=_path(FRAMES), output=_path(OUTPUT),
      attack=attack_flags.attack_config(METHOD.value),
      model_root=str(paths.model_root(flags.MODEL_ROOT.value)),
      surrogates=tuple(attack_flags.SURROGATES.value), seed=attack_flags.SEED.value,
      mask=_path(MASK), save_mask=_path(SAVE_MASK), train_photos=_path(TRAIN_PHOTOS),
      train_frames=TRAIN_FRAMES.value, detect_every=DETECT_EVERY.value,
      max_missed=MAX_MISSED.value, upsample=UPSAMPLE.value, face=FACE.value))


if __name__ == "__main__":
  flags.run(main, renamed=RENAMED)
