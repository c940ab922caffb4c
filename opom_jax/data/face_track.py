"""One face followed through the frames of a video.

dlib's HOG detector costs ~0.1 s on a 640x360 frame (upsampled once), its
68-point landmark predictor ~3 ms. So the face is detected every
`detect_every` frames (or on every frame while there is no track). On the
frames between, the box is moved by the median optical flow (pyramidal
Lucas-Kanade) of a grid of points inside it, and the landmarks are re-fitted
inside the moved box: the predictor alone, fitted in the last box, would
follow a moving face only part of the way. A detection that fails keeps the last track (its box, landmarks and
alignment transform) for up to `max_missed` frames: a face the detector misses
for a frame or two (motion blur, a turned head) stays protected. A scene cut
(consecutive frames differing by more than CUT_DIFFERENCE on average, in grey
levels of an 80-pixel-wide thumbnail) ends the track at once: the face is not
where it was.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import cv2
import numpy as np

from opom_jax.data import align

# Mean absolute grey-level change between thumbnails of consecutive frames:
# within a shot of a 10 s test clip at most ~14, across its cuts ~28-31.
CUT_DIFFERENCE = 20.0
THUMB_WIDTH = 80
FLOW_GRID = 5          # FLOW_GRID x FLOW_GRID points of the box are followed
FLOW_MIN_POINTS = 0.5  # share of them that must be found again, or the track is lost
DETECTED, TRACKED, KEPT = "detected", "tracked", "kept"

# (frame) -> ((5, 2) points, (4,) box) or None when no face is found.
Detect = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray] | None"]
# (frame, box) -> (5, 2) points re-fitted inside the box.
Refine = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Track:
  points: np.ndarray     # (5, 2) float64 template-order landmarks, frame coordinates
  box: np.ndarray        # (4,) left, top, right, bottom
  transform: np.ndarray  # (2, 3) frame -> 112x112 crop
  source: str            # DETECTED, TRACKED (landmarks re-fitted) or KEPT (detection missed)


def dlib_detect(upsample: int = 1, choose: str = "largest") -> Detect:
  def detect(frame):
    try:
      return align.detect_face(frame, upsample, choose)
    except align.AlignError:
      return None
  return detect


def dlib_refine(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
  """The 5 points of dlib's 68-point fit inside `box` (no detection)."""
  import dlib  # pylint: disable=g-import-not-at-top
  _, predictor = align.dlib_models()
  shape = predictor(np.ascontiguousarray(frame), dlib.rectangle(*(int(v) for v in box)))
  return align.five_points(np.array([[p.x, p.y] for p in shape.parts()], np.float64))


class FaceTracker:
  """Call `update(frame)` on consecutive frames; it returns the face's Track or None."""

  def __init__(self, detect_every: int = 5, max_missed: int = 10,
               detect: Detect | None = None, refine: Refine | None = dlib_refine):
    if detect_every < 1 or max_missed < 0:
      raise ValueError(f"FaceTracker: detect_every={detect_every} must be >= 1 and "
                       f"max_missed={max_missed} >= 0")
    self.detect_every, self.max_missed = detect_every, max_missed
    self._detect = detect or dlib_detect()
    self._refine = refine
    self._track: Track | None = None
    self._since_detection = 0
    self._missed = 0
    self._thumb = None
    self._grey = None

  def update(self, frame: np.ndarray) -> Track | None:
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    last_grey, self._grey = self._grey, grey
    if self._scene_cut(grey):
      self._track = None
    if self._track is not None and self._since_detection < self.detect_every:
      tracked = self._follow(frame, last_grey, grey)
      if tracked is not None:
        self._since_detection += 1
        self._track = tracked
        return tracked
    return self._redetect(frame)

  def _redetect(self, frame) -> Track | None:
    found = self._detect(frame)
    if found is not None:
      points, box = found
      self._track = _track(points, np.asarray(box), DETECTED)
      self._since_detection, self._missed = 1, 0
      return self._track
    if self._track is not None and self._missed < self.max_missed:
      self._missed += 1
      self._track = dataclasses.replace(self._track, source=KEPT)
      return self._track
    self._track = None
    return None

  def _scene_cut(self, grey) -> bool:
    h, w = grey.shape
    thumb = cv2.resize(grey, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))),
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    last, self._thumb = self._thumb, thumb
    return (last is not None and last.shape == thumb.shape
            and float(np.abs(thumb - last).mean()) > CUT_DIFFERENCE)

  def _follow(self, frame, last_grey, grey) -> Track | None:
    """The last track moved with the face's optical flow, landmarks re-fitted; None if lost."""
    last = self._track
    if last_grey is None or last_grey.shape != grey.shape:
      return None
    left, top, right, bottom = last.box.astype(np.float32)
    grid = np.stack(np.meshgrid(np.linspace(left, right, FLOW_GRID + 2)[1:-1],
                                np.linspace(top, bottom, FLOW_GRID + 2)[1:-1]), -1)
    grid = grid.reshape(-1, 1, 2).astype(np.float32)
    window = int(max(9, (right - left) // 4)) | 1
    moved, found, _ = cv2.calcOpticalFlowPyrLK(last_grey, grey, grid, None,
                                               winSize=(window, window), maxLevel=3)
    found = found.ravel().astype(bool)
    if found.mean() < FLOW_MIN_POINTS:
      return None
    shift = np.median((moved - grid).reshape(-1, 2)[found], axis=0).astype(np.float64)
    box = last.box + np.rint(np.tile(shift, 2)).astype(last.box.dtype)
    if self._refine is None:
      return _track(last.points + shift, box, TRACKED)
    points = self._refine(frame, box)
    drift = points.mean(axis=0) - (last.points.mean(axis=0) + shift)
    if not np.all(np.isfinite(points)) or np.hypot(*drift) > (right - left) / 2:
      return None   # the fit left the face the flow followed: detect again
    return _track(points, box, TRACKED)


def _track(points, box, source) -> Track:
  points = np.asarray(points, np.float64)
  return Track(points, box, align.umeyama(points, align.ARCFACE_TEMPLATE), source)
