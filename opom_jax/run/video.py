"""Protect one person's face in a video (or a folder of frames) with their mask.

The face is followed frame to frame (data.face_track), the person's universal
mask is warped from the 112x112 crop onto each frame through the frame's
alignment transform, faded out at the crop's edge, so only the face region
changes, by at most eps. Frames without a face are written unchanged and
counted. The mask is a saved one (--mask) or learned from the person's photos
and/or a few frames of the video itself. Videos are re-encoded (run.video_io):
H.264 at CRF 18 keeps most, but not all, of an 8/255 mask; frames folders are
written as PNG, losslessly.
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import time

import numpy as np

from opom_jax.attack.config import AttackConfig
from opom_jax.data import align
from opom_jax.data import face_track
from opom_jax.data.splits import PHOTO_EXTENSIONS
from opom_jax.errors import UserError
from opom_jax.run import config as config_lib
from opom_jax.run import mask_file
from opom_jax.run import photo_io
from opom_jax.run import video_io
from opom_jax.run.learn import learn_person_mask
from opom_jax.run.log import progress_log
from opom_jax.run.protect import mask_photo
from opom_jax.settings import Choice, Range, Required, setting

FACES = ("largest", "centre")
PROGRESS_SECONDS = 5.0
NO_FACE = "no face"


@dataclasses.dataclass(frozen=True)
class VideoConfig:
  """Protecting the face of one person in a video file or a folder of frames."""
  video: str = ""              # input video file, or
  frames: str = ""             # input folder of frames (output: a folder of PNGs)
  output: str = setting("", Required())
  attack: AttackConfig = AttackConfig()
  model_root: str = ""
  surrogates: tuple[str, ...] = setting(("foamliu_mbf",), config_lib.SURROGATES)
  seed: int = setting(0, config_lib.SEED)
  mask: str = ""               # a saved mask (.npz) to apply instead of learning one
  save_mask: str = ""          # where to keep the learned mask (.npz)
  train_photos: str = ""       # a folder of the person's photos to learn from
  train_frames: int = setting(10, Range(0))   # frames of the input, spread evenly, to learn from
  detect_every: int = setting(5, Range(1))    # detect the face every K frames, track between
  max_missed: int = setting(10, Range(0))     # keep the last track this many missed detections
  upsample: int = setting(1, Range(0, 3))     # dlib detector upsampling (1: faces from ~40 px)
  face: str = setting("largest", Choice(lambda: FACES, "face choice"))


@dataclasses.dataclass(frozen=True)
class VideoResult:
  output: str
  frames: int
  counts: dict[str, int]   # detected / tracked / kept / no face
  fps: float               # frames per second of the protecting pass (decode to encode)
  codec: str               # "png" for a frames folder
  audio: bool
  mask_path: str


def frame_protector(mask: np.ndarray, eps: float, tracker: face_track.FaceTracker,
                    counts: collections.Counter):
  """(frame) -> protected frame, following the face with `tracker`; counts each frame's source."""
  def process(frame):
    track = tracker.update(frame)
    counts[track.source if track else NO_FACE] += 1
    return frame if track is None else mask_photo(frame, [track.transform], mask, eps)
  return process


def protect_video(cfg: VideoConfig, log=None) -> VideoResult:
  """Writes the protected video (or frames folder) cfg.output; checks every user
  input (settings, files, output) before any model is loaded or face detected."""
  log = log or progress_log
  cfg = config_lib.validate(cfg)
  source, output = _check_paths(cfg)
  saved = _check_mask_options(cfg)
  if saved:
    mask, eps, settings = saved.mask, saved.eps, saved.settings
  else:
    crops = _training_crops(cfg, source, log)
    mask, eps, settings = learn_mask(cfg, crops, log)
  if cfg.save_mask:
    mask_file.save_mask(pathlib.Path(cfg.save_mask).expanduser(), mask, eps, settings)

  counts = collections.Counter()
  tracker = face_track.FaceTracker(cfg.detect_every, cfg.max_missed,
                                   face_track.dlib_detect(cfg.upsample, cfg.face))
  process = _with_progress(frame_protector(mask, eps, tracker, counts), log)
  start = time.perf_counter()
  if cfg.frames:
    info = {"codec": "png", "audio": False}
    for path, frame in _frames_folder(source):
      photo_io.write_photo(output / f"{path.stem}.png", process(frame))
  else:
    info = video_io.transcode(source, output, process)
    if info["codec"] != "libx264":
      log(f"warning: this PyAV has no libx264; encoded with {info['codec']}")
  seconds = time.perf_counter() - start
  frames = sum(counts.values())
  fps = frames / max(seconds, 1e-9)
  log(f"done: {frames} frames in {seconds:.1f}s ({fps:.1f} fps) -> {output}; "
      f"face detected {counts[face_track.DETECTED]}, tracked {counts[face_track.TRACKED]}, "
      f"kept through a missed detection {counts[face_track.KEPT]}, "
      f"no face (written unchanged) {counts[NO_FACE]}; codec {info['codec']}"
      + ("" if cfg.frames else f", audio {'copied' if info['audio'] else 'none in the input'}")
      + ("" if cfg.frames else "; lossy compression weakens the mask"))
  return VideoResult(str(output), frames, dict(counts), fps, info["codec"], info["audio"],
                     cfg.mask or cfg.save_mask)


def learn_mask(cfg: VideoConfig, crops: list[np.ndarray], log) -> tuple[np.ndarray, float, dict]:
  """The mask learned from the aligned face crops with cfg's attack and surrogates."""
  log(f"learning the mask from {len(crops)} face crops")
  mask = learn_person_mask(crops, cfg.attack, cfg.surrogates, cfg.model_root, seed=cfg.seed, log=log)
  settings = {"attack": dataclasses.asdict(cfg.attack), "surrogates": list(cfg.surrogates),
              "seed": cfg.seed, "video": cfg.video or cfg.frames, "train_photos": cfg.train_photos,
              "trained_on": len(crops)}
  return mask, float(cfg.attack.eps), settings


def _check_paths(cfg: VideoConfig) -> tuple[pathlib.Path, pathlib.Path]:
  if bool(cfg.video) == bool(cfg.frames):
    raise UserError("give exactly one of --video (a video file) and --frames (a folder of frames)")
  output = pathlib.Path(cfg.output).expanduser()
  if cfg.video:
    source = pathlib.Path(cfg.video).expanduser()
    video_io.open_video(source).close()
    video_io.check_output(output, source)
    return source, output
  source = pathlib.Path(cfg.frames).expanduser()
  if not source.is_dir():
    raise UserError(f"--frames={source} is not a folder of frames")
  files = _frame_files(source)
  if not files:
    raise UserError(f"--frames={source} has no image files ({', '.join(sorted(PHOTO_EXTENSIONS))})")
  stems = collections.Counter(p.stem for p in files)
  clash = sorted(stem for stem, n in stems.items() if n > 1)
  if clash:
    raise UserError(f"--frames={source} has frames whose outputs would collide "
                    f"(same name, other extension): {clash[:3]}")
  if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
    raise UserError(f"--output={output} is inside --frames={source}; choose another folder")
  if output.exists() and not output.is_dir():
    raise UserError(f"--output={output} is a file; --frames writes a folder of PNG frames")
  video_io.check_output_folder(output)
  return source, output


def _check_mask_options(cfg: VideoConfig) -> mask_file.SavedMask | None:
  saved = mask_file.from_options(cfg.mask, cfg.save_mask)
  if saved is not None:
    return saved
  if not cfg.train_photos and cfg.train_frames == 0:
    raise UserError("no mask to apply: give --mask, or learn one from --train_photos "
                    "and/or --train_frames > 0")
  if cfg.train_photos and not pathlib.Path(cfg.train_photos).expanduser().is_dir():
    raise UserError(f"--train_photos={cfg.train_photos} is not a folder of photos")
  return None


def _training_crops(cfg: VideoConfig, source: pathlib.Path, log) -> list[np.ndarray]:
  """Aligned crops of the --train_photos and of --train_frames frames spread over the input."""
  crops = []
  if cfg.train_photos:
    folder = pathlib.Path(cfg.train_photos).expanduser()
    for path in _frame_files(folder):
      try:
        crops.append(align.align_image(photo_io.read_photo(path), cfg.upsample, cfg.face).crop)
      except align.AlignError as e:
        log(f"skipped training photo {path}: {e.reason}")
  if cfg.train_frames:
    frames = (f for _, f in _frames_folder(source)) if cfg.frames else video_io.read_frames(source)
    count = len(_frame_files(source)) if cfg.frames else video_io.frame_count(source)
    wanted = set(np.linspace(0, count - 1, min(cfg.train_frames, count)).round().astype(int))
    for index, frame in enumerate(frames):
      if index in wanted:
        try:
          crops.append(align.align_image(frame, cfg.upsample, cfg.face).crop)
        except align.AlignError:
          pass
      if index >= max(wanted):
        break
  if not crops:
    raise UserError("no face found in the training photos or frames; nothing to learn a mask from")
  return crops


def _frame_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".")
                and p.suffix.lower() in PHOTO_EXTENSIONS)


def _frames_folder(folder: pathlib.Path):
  """(path, uint8 RGB) of each frame file in name order; an unreadable one is a UserError."""
  for path in _frame_files(folder):
    try:
      yield path, photo_io.read_photo(path)
    except align.AlignError as e:
      raise UserError(f"--frames={folder}: {path.name} is not a readable frame ({e.reason})") from None


def _with_progress(process, log):
  """`process`, logging frames done and frames per second every few seconds."""
  start = last = time.perf_counter()
  done = 0

  def wrapped(frame):
    nonlocal done, last
    out = process(frame)
    done += 1
    now = time.perf_counter()
    if now - last >= PROGRESS_SECONDS:
      last = now
      log(f"{done} frames, {done / (now - start):.1f} fps")
    return out
  return wrapped
