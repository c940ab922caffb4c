"""dlib's own face-recognition pipeline (dlib-bin), used as a black-box target.

A real system that receives the canonical 112x112 photo would find the face
itself, so embed() runs dlib end to end on each crop:

  1. paste the crop in the middle of a black 224x224 canvas: the HOG detector
     scans windows of ~80 px with a margin, and a face that fills a 112 crop
     edge to edge is often missed without room around it;
  2. HOG detector (upsample 1, then 2 if nothing is found), largest face;
  3. 5-point shape predictor, dlib.get_face_chip(canvas, shape, 150, 0.25);
  4. face_recognition_model_v1.compute_face_descriptor(chip), L2-normalised.

If the detector finds no face, the crop is still embedded rather than dropped
(a privacy evaluation must not count a missed detection as protection it did
not earn): we build a dlib.full_object_detection from the mean canonical-frame
positions of dlib's 5 landmarks (dlib_resnet.CANONICAL_DLIB5, derived with the
fixed canonical -> chip warp) and continue at step 3. Each fallback is
counted in ``num_fallbacks`` (and ``num_detected`` counts the rest), so an
evaluation can report how often it happened. dlib points are integers, so the
fallback landmarks are rounded to the nearest pixel.
"""
from __future__ import annotations

import os
import warnings

import dlib
import numpy as np

from opom_jax.models import base
from opom_jax.models.networks import dlib_resnet

CANVAS = 224
CROP = base.CANONICAL_SHAPE[0]   # side of the canonical crop
UPSAMPLES = (1, 2)


def model_files():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
    import face_recognition_models  # pylint: disable=g-import-not-at-top
  return (face_recognition_models.pose_predictor_five_point_model_location(),
          face_recognition_models.face_recognition_model_location())


class DlibTarget:
  """embed(uint8 (N, 112, 112, 3) RGB canonical crops) -> (N, 128) float32."""

  emb_dim = dlib_resnet.EMB_DIM

  def __init__(self, predictor_path: str | os.PathLike | None = None,
               model_path: str | os.PathLike | None = None, name: str = "dlib"):
    default_predictor, default_model = model_files()
    predictor_path = os.fspath(predictor_path or default_predictor)
    model_path = os.fspath(model_path or default_model)
    for p in (predictor_path, model_path):
      if not os.path.isfile(p):
        raise FileNotFoundError(f"dlib model file {p} not found")
    self.name = name
    self._detector = dlib.get_frontal_face_detector()
    self._predictor = dlib.shape_predictor(predictor_path)
    self._facerec = dlib.face_recognition_model_v1(model_path)
    off = (CANVAS - CROP) // 2
    self._offset = off
    pts = dlib.points()
    for x, y in dlib_resnet.CANONICAL_DLIB5:
      pts.append(dlib.point(int(round(x + off)), int(round(y + off))))
    self._fallback_parts = pts
    self._fallback_rect = dlib.rectangle(
        off, off, off + CROP - 1, off + CROP - 1)
    self.num_detected = 0
    self.num_fallbacks = 0

  def reset_counters(self):
    self.num_detected = self.num_fallbacks = 0

  def _shape(self, canvas: np.ndarray):
    for upsample in UPSAMPLES:
      rects = self._detector(canvas, upsample)
      if len(rects):  # pylint: disable=g-explicit-length-test
        rect = max(rects, key=lambda r: r.width() * r.height())
        self.num_detected += 1
        return self._predictor(canvas, rect)
    self.num_fallbacks += 1
    return dlib.full_object_detection(self._fallback_rect, self._fallback_parts)

  def chip(self, image: np.ndarray) -> np.ndarray:
    """One canonical uint8 crop -> dlib's 150x150 uint8 chip (steps 1-3)."""
    s, off = CROP, self._offset
    canvas = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    canvas[off:off + s, off:off + s] = image
    return dlib.get_face_chip(canvas, self._shape(canvas),
                              dlib_resnet.CHIP_SIZE, dlib_resnet.CHIP_PADDING)

  def embed(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    s = CROP
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (s, s, 3):
      raise ValueError(f"{self.name}: embed expects uint8 (N, {s}, {s}, 3) RGB "
                       f"canonical crops, got {images.dtype} {images.shape}")
    embs = np.empty((len(images), self.emb_dim), np.float32)
    for i, img in enumerate(images):
      chip = self.chip(np.ascontiguousarray(img))
      embs[i] = np.asarray(self._facerec.compute_face_descriptor(chip), np.float32)
    return base.l2_normalize_np(embs)


def dlib_runtime(model_root=None) -> DlibTarget:
  """dlib HOG + 5-point + ResNet pipeline on canonical crops (black box).

  dlib's weights come from the face-recognition-models package, not the
  model root; the argument keeps the registry's one factory signature.
  """
  del model_root
  return DlibTarget()
