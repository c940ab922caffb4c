"""Protecting a video: frames in and out, face tracking, one-line errors for bad files.

Real inputs: the first frames of the Hamilton clip, cut (video and audio
packets copied) into a temporary file. The mask is a saved random +-eps mask,
so no model is loaded and nothing is learned here.
"""
import collections
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from opom_jax import paths
from opom_jax.data import align
from opom_jax.data import face_track
from opom_jax.errors import UserError
from opom_jax.run import mask_file
from opom_jax.run import protect
from opom_jax.run import video
from opom_jax.run import video_io

REPO = pathlib.Path(__file__).resolve().parent.parent
EPS = 8.0
CLIP_FRAMES = 20
# The clip's first shot: one face (the singer), ~44 pixels wide, which dlib's
# detector (upsampled once) finds on every one of the first 20 frames but frame 1.
FACE_FRAMES = (0, 2, 3, 4, 5, 6, 7)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> pathlib.Path:
  """The first CLIP_FRAMES frames of the Hamilton clip with their audio, packets copied."""
  import av  # pylint: disable=g-import-not-at-top
  source = paths.data_root() / "video" / "short_hamilton_clip.mp4"
  assert source.is_file(), f"{source} is missing: set OPOM_DATA_ROOT"
  target = tmp_path_factory.mktemp("clip") / "clip.mp4"
  with av.open(str(source)) as src, av.open(str(target), "w") as out:
    v_in, a_in = src.streams.video[0], src.streams.audio[0]
    v_out, a_out = out.add_stream_from_template(v_in), out.add_stream_from_template(a_in)
    end = None   # presentation time (s) after the last kept video frame
    kept = 0
    for packet in src.demux(v_in, a_in):
      if packet.dts is None:
        continue
      if packet.stream is v_in and kept < CLIP_FRAMES:
        kept += 1
        end = max(end or 0, float((packet.pts + packet.duration) * v_in.time_base))
        packet.stream = v_out
        out.mux(packet)
      elif packet.stream is a_in and end is not None and packet.pts * a_in.time_base < end:
        packet.stream = a_out
        out.mux(packet)
  return target


@pytest.fixture(scope="module")
def saved_mask(tmp_path_factory) -> pathlib.Path:
  rng = np.random.default_rng(0)
  mask = rng.choice([-EPS, EPS], size=mask_file.SHAPE).astype(np.float32)
  return mask_file.save_mask(tmp_path_factory.mktemp("mask") / "mask.npz", mask, EPS, {"test": 1})


@pytest.fixture(scope="module")
def clip_frames(clip) -> list[np.ndarray]:
  return list(video_io.read_frames(clip))


def _outside(frame_shape, transform) -> np.ndarray:
  """(H, W) True where the crop of `transform` cannot reach."""
  x0, y0, x1, y1 = align.face_footprint(transform, frame_shape[:2])
  outside = np.ones(frame_shape[:2], bool)
  outside[y0:y1, x0:x1] = False
  return outside


def test_protect_frame_changes_the_face_by_at_most_eps_and_nothing_else(clip_frames, saved_mask):
  frame = clip_frames[0]
  mask = mask_file.load_mask(saved_mask).mask
  points, _ = align.detect_face(frame)
  transform = align.umeyama(points, align.ARCFACE_TEMPLATE)
  out = protect.mask_photo(frame, [transform], mask, EPS)
  change = out.astype(np.int16) - frame
  assert out.shape == frame.shape and out.dtype == np.uint8
  assert np.abs(change).max() <= EPS
  assert not change[_outside(frame.shape, transform)].any()
  # The face itself changes: its crop differs from the clean crop by a good part of eps.
  clean_crop = align.align_face(frame, points)[0].astype(np.float32)
  protected_crop = align.align_face(out, points)[0].astype(np.float32)
  assert np.abs(protected_crop - clean_crop)[20:92, 20:92].mean() > EPS / 4


def test_video_in_and_out_keeps_frames_size_and_audio(clip, clip_frames, saved_mask, tmp_path):
  out = tmp_path / "protected.mp4"
  result = video.protect_video(video.VideoConfig(
      video=str(clip), output=str(out), mask=str(saved_mask), detect_every=5), log=lambda _: None)
  before, after = video_io.streams_of(clip), video_io.streams_of(out)
  assert before["audio"] == 1 and after["audio"] == 1
  assert after["size"] == before["size"] == (640, 360)
  protected = list(video_io.read_frames(out))
  assert len(protected) == len(clip_frames) == CLIP_FRAMES == result.frames
  assert video.NO_FACE not in result.counts and result.codec == "libx264"
  # The background keeps only codec error; the face carries the mask, well above it.
  points, _ = align.detect_face(clip_frames[0])
  transform = align.umeyama(points, align.ARCFACE_TEMPLATE)
  outside = _outside(clip_frames[0].shape, transform)
  change = np.abs(protected[0].astype(np.float32) - clip_frames[0])
  face = align.align_face(protected[0], points)[0].astype(np.float32)
  clean_face = align.align_face(clip_frames[0], points)[0].astype(np.float32)
  background_error = change[outside].mean()
  assert background_error < 2.0
  assert np.abs(face - clean_face)[20:92, 20:92].mean() > 2 * background_error


def test_frames_folder_is_protected_losslessly(clip_frames, saved_mask, tmp_path):
  from opom_jax.run import photo_io  # pylint: disable=g-import-not-at-top
  frames_in = tmp_path / "in"
  blank = np.full_like(clip_frames[0], 255)   # a scene cut to a frame without a face
  faces = [clip_frames[i] for i in FACE_FRAMES[:3]]
  for i, frame in enumerate(faces + [blank]):
    photo_io.write_photo(frames_in / f"f{i:03d}.png", frame)
  result = video.protect_video(video.VideoConfig(
      frames=str(frames_in), output=str(tmp_path / "out"), mask=str(saved_mask),
      detect_every=1), log=lambda _: None)
  assert result.counts == {face_track.DETECTED: 3, video.NO_FACE: 1}
  outs = sorted((tmp_path / "out").iterdir())
  assert [p.name for p in outs] == ["f000.png", "f001.png", "f002.png", "f003.png"]
  for frame, path in zip(faces, outs):
    out = photo_io.read_photo(path)
    transform = align.umeyama(align.detect_face(frame)[0], align.ARCFACE_TEMPLATE)
    change = out.astype(np.int16) - frame
    assert np.abs(change).max() <= EPS and change.any()
    assert not change[_outside(frame.shape, transform)].any()
  assert np.array_equal(photo_io.read_photo(outs[3]), blank)


def _stub_detect(points, fails):
  """Finds the same face on every call except the call numbers in `fails`."""
  calls = collections.Counter()

  def detect(frame):
    del frame
    calls["n"] += 1
    return None if calls["n"] in fails else (points, np.array([10, 10, 60, 60]))
  return detect


def test_missed_detection_keeps_the_neighbours_track_for_max_missed_frames():
  points = align.ARCFACE_TEMPLATE + [5.0, 7.0]
  frame = np.zeros((120, 160, 3), np.uint8)
  tracker = face_track.FaceTracker(detect_every=1, max_missed=2, refine=None,
                                   detect=_stub_detect(points, fails={2, 3, 4}))
  first = tracker.update(frame)
  kept = [tracker.update(frame) for _ in range(2)]
  assert first.source == face_track.DETECTED
  for track in kept:
    assert track.source == face_track.KEPT
    np.testing.assert_array_equal(track.transform, first.transform)
  assert tracker.update(frame) is None          # a third miss: the track is gone
  assert tracker.update(frame).source == face_track.DETECTED


def test_scene_cut_ends_the_track_at_once():
  points = align.ARCFACE_TEMPLATE + [5.0, 7.0]
  tracker = face_track.FaceTracker(detect_every=1, max_missed=5, refine=None,
                                   detect=_stub_detect(points, fails={2}))
  assert tracker.update(np.zeros((90, 160, 3), np.uint8)) is not None
  assert tracker.update(np.full((90, 160, 3), 200, np.uint8)) is None


def test_landmarks_follow_the_face_between_detections(clip_frames):
  # One face moving 8 pixels left per frame: the tracked points must move with it.
  frames = [np.roll(clip_frames[FACE_FRAMES[1]], -8 * k, axis=1) for k in range(3)]
  tracker = face_track.FaceTracker(detect_every=3)
  tracks = [tracker.update(f) for f in frames]
  assert [t.source for t in tracks] == ["detected", "tracked", "tracked"]
  eye_distance = np.linalg.norm(tracks[0].points[1] - tracks[0].points[0])
  for frame, track in zip(frames, tracks):
    detected, _ = align.detect_face(frame)
    assert np.abs(track.points - detected).max() < 0.25 * eye_distance


@pytest.mark.parametrize("problem", ["missing", "not_a_video", "unwritable"])
def test_bad_files_are_one_line_user_errors_naming_the_file(problem, clip, saved_mask, tmp_path):
  source, output = clip, tmp_path / "out.mp4"
  if problem == "missing":
    source = tmp_path / "nowhere.mp4"
  elif problem == "not_a_video":
    source = tmp_path / "notes.mp4"
    source.write_text("not a video\n")
  else:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    output = blocker / "out.mp4"
  named = output if problem == "unwritable" else source
  with pytest.raises(UserError) as e:
    video.protect_video(video.VideoConfig(video=str(source), output=str(output),
                                          mask=str(saved_mask)), log=lambda _: None)
  assert str(named) in str(e.value) and "\n" not in str(e.value)
  assert not output.exists()


def test_launcher_prints_one_error_line(tmp_path):
  missing = tmp_path / "nowhere.mp4"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.protect_video", f"--video={missing}",
       f"--output={tmp_path / 'out.mp4'}", "--train_frames=0"],
      cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ})
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
