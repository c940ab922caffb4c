"""Reading and writing videos with PyAV (which bundles its own FFmpeg).

`transcode` decodes every frame, hands it to a function, and encodes what that
returns in H.264 (libx264, CRF 18, yuv420p: visually lossless) or, where the
bundled FFmpeg lacks libx264, MPEG-4 Part 2 at a high bit rate. Audio packets
are copied unchanged, interleaved with the video as they were read. Any lossy
codec erases part of an 8/255 perturbation: a frames folder in PNG keeps it.
"""
from __future__ import annotations

import pathlib
from typing import Callable, Iterator

import numpy as np

from opom_jax.errors import UserError
from opom_jax.files import atomic_write

# Output extension -> FFmpeg muxer.
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
CRF = 18
MPEG4_BIT_RATE = 12_000_000


def _import_av():
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("video needs PyAV: pip install 'av>=14'") from None
  return av


def open_video(path: pathlib.Path, flag: str = "--video"):
  """The opened container (first video stream checked); UserError naming the file."""
  av = _import_av()
  if not path.is_file():
    raise UserError(f"{flag}={path} does not exist" if not path.exists() else
                    f"{flag}={path} is not a file")
  try:
    container = av.open(str(path))
  except (av.error.FFmpegError, OSError, ValueError) as e:
    raise UserError(f"{flag}={path} is not a readable video ({_reason(e)})") from None
  if not container.streams.video:
    container.close()
    raise UserError(f"{flag}={path} has no video stream")
  return container


def frame_count(path: pathlib.Path, flag: str = "--video") -> int:
  """Frames in the video stream: its header's count, else its packets counted (no decoding)."""
  with open_video(path, flag) as container:
    stream = container.streams.video[0]
    if stream.frames:
      return int(stream.frames)
    return sum(1 for p in container.demux(stream) if p.size)


def read_frames(path: pathlib.Path, flag: str = "--video") -> Iterator[np.ndarray]:
  """Every frame of the first video stream as (H, W, 3) uint8 RGB."""
  av = _import_av()
  with open_video(path, flag) as container:
    try:
      for frame in container.decode(container.streams.video[0]):
        yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
      raise UserError(f"{flag}={path} cannot be decoded ({_reason(e)})") from None


def check_output(path: pathlib.Path, source: pathlib.Path, flag: str = "--output"):
  """A writable output path with a known container, not the input itself."""
  if path.suffix.lower() not in CONTAINERS:
    raise UserError(f"{flag}={path} must end in one of {', '.join(CONTAINERS)}")
  if path.exists() and path.resolve() == source.resolve():
    raise UserError(f"{flag}={path} is the input video; choose another file")
  if path.is_dir():
    raise UserError(f"{flag}={path} is a folder; name the video file to write")
  _check_writable(path.parent, flag, path)


def check_output_folder(folder: pathlib.Path, flag: str = "--output"):
  """A folder of output frames that can be created and written."""
  _check_writable(folder, flag, folder, inside=True)


def _check_writable(folder: pathlib.Path, flag: str, path: pathlib.Path, inside: bool = False):
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / (".write_probe" if inside else f".write_probe_{path.name}")
    probe.touch()
    probe.unlink()
  except OSError as e:
    raise UserError(f"{flag}={path} cannot be written: {e.strerror or e}") from None


def video_codec() -> str:
  av = _import_av()
  return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def transcode(source: pathlib.Path, target: pathlib.Path,
              process: Callable[[np.ndarray], np.ndarray], flag: str = "--video") -> dict:
  """Writes `target`: every frame of `source` through `process` (uint8 RGB -> same
  shape), audio copied. Returns {"codec", "audio"}; the file appears whole or not at all."""
  av = _import_av()
  fmt = CONTAINERS[target.suffix.lower()]
  info = {}

  def write(f):
    with open_video(source, flag) as src, av.open(f, "w", format=fmt) as out:
      video = src.streams.video[0]
      audio = src.streams.audio[0] if src.streams.audio else None
      codec = video_codec()
      encoder = out.add_stream(codec, rate=video.average_rate or 30)
      encoder.width, encoder.height = video.codec_context.width, video.codec_context.height
      even = encoder.width % 2 == 0 and encoder.height % 2 == 0
      encoder.pix_fmt = "yuv420p" if even or codec == "mpeg4" else "yuv444p"
      if codec == "libx264":
        encoder.options = {"crf": str(CRF), "preset": "medium"}
      else:
        encoder.bit_rate = MPEG4_BIT_RATE
      copied = out.add_stream_from_template(audio) if audio is not None else None
      info.update(codec=codec, audio=audio is not None)
      streams = [video] + ([audio] if audio is not None else [])
      try:
        for packet in src.demux(*streams):
          if packet.stream.type == "audio":
            if packet.dts is not None:   # the demuxer's empty flush packet carries none
              packet.stream = copied
              out.mux(packet)
            continue
          for frame in packet.decode():
            rgb = process(frame.to_ndarray(format="rgb24"))
            new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            new.pts, new.time_base = frame.pts, frame.time_base
            out.mux(encoder.encode(new))
      except av.error.FFmpegError as e:
        raise UserError(f"{flag}={source} cannot be decoded ({_reason(e)})") from None
      out.mux(encoder.encode(None))

  atomic_write(target, write)
  return info


def streams_of(path: pathlib.Path) -> dict:
  """{"video": frames, "audio": audio streams, "size": (width, height)} of a video file."""
  with open_video(path) as container:
    video = container.streams.video[0]
    return {"video": int(video.frames), "audio": len(container.streams.audio),
            "size": (video.codec_context.width, video.codec_context.height)}


def _reason(e: Exception) -> str:
  return " ".join(str(getattr(e, "strerror", None) or e).split())
