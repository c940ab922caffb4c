"""Face recognisers that take a whole photo: they find and align the face themselves.

A protected photo meets a real system as a full picture, not as the crop the
mask was learned on. Each pipeline here detects the face (dlib HOG, upsample
1, largest face), finds landmarks, aligns, and embeds:

  "dlib_resnet": dlib's own pipeline: 5-point shape predictor, get_face_chip(150,
      0.25), its ResNet descriptor;
  any zoo target name (e.g. "w600k_mbf", "jax:foamliu_mbf"): our 68-point
      landmarks -> ArcFace 112x112 alignment (data.align), then the model.

When the detector misses the face, the photo is still embedded from the face's
known place (the clean photo's landmarks, mapped through the transformation):
a privacy evaluation must not count a missed detection as protection it did
not earn. Each result says whether the face was detected.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from opom_jax.data import align
from opom_jax.models import zoo
from opom_jax.models.base import l2_normalize_np
from opom_jax.models.networks import dlib_resnet

DLIB = "dlib_resnet"   # the zoo name of dlib's ResNet; here its whole pipeline


@dataclasses.dataclass(frozen=True)
class FacePlace:
  """Where a face is in a photo: ArcFace 5 points and the detection box, photo coordinates."""
  points: np.ndarray   # (5, 2)
  box: np.ndarray      # (4,) left, top, right, bottom

  def moved(self, m: np.ndarray) -> "FacePlace":
    """The same face after the photo was resized/cropped by the 2x3 affine m."""
    corners = align.apply_transform(m, self.box.reshape(2, 2))
    return FacePlace(align.apply_transform(m, self.points), np.rint(corners).reshape(4).astype(int))


def find_face(photo: np.ndarray) -> FacePlace | None:
  try:
    points, box = align.detect_face(photo)
  except align.AlignError:
    return None
  return FacePlace(points, box)


@functools.cache
def _dlib_models():
  import dlib  # pylint: disable=g-import-not-at-top
  from opom_jax.runtimes import dlib_runtime  # pylint: disable=g-import-not-at-top
  predictor, model = dlib_runtime.model_files()
  return dlib.shape_predictor(predictor), dlib.face_recognition_model_v1(model)


def dlib_descriptor(photo: np.ndarray, place: FacePlace) -> np.ndarray:
  """dlib's 128-d descriptor of the face in `place` (its box drives dlib's 5-point predictor)."""
  import dlib  # pylint: disable=g-import-not-at-top
  predictor, facerec = _dlib_models()
  photo = np.ascontiguousarray(photo)
  rect = dlib.rectangle(*(int(v) for v in place.box))
  chip = dlib.get_face_chip(photo, predictor(photo, rect), dlib_resnet.CHIP_SIZE,
                            dlib_resnet.CHIP_PADDING)
  return np.asarray(facerec.compute_face_descriptor(chip), np.float32)


class PhotoRecognisers:
  """embed(photos, fallback places) -> {target: (N, d) L2-normalised}, detected (N,) bool.

  One detection per photo serves every target; the zoo models embed the
  aligned crops in one batch.
  """

  def __init__(self, targets, model_root=None):
    self.targets = tuple(targets)
    self._models = {t: zoo.load_target(t, model_root) for t in self.targets if t != DLIB}

  def embed(self, photos, fallbacks) -> tuple[dict[str, np.ndarray], np.ndarray]:
    places, detected = [], []
    for photo, fallback in zip(photos, fallbacks):
      found = find_face(photo)
      detected.append(found is not None)
      places.append(found or fallback)
    feats = {}
    if DLIB in self.targets:
      feats[DLIB] = l2_normalize_np(
          np.stack([dlib_descriptor(p, f) for p, f in zip(photos, places)]))
    if self._models:
      crops = np.stack([align.align_face(p, f.points)[0] for p, f in zip(photos, places)])
      for name, model in self._models.items():
        feats[name] = np.asarray(model.embed(crops), np.float32)
    return feats, np.asarray(detected)


class CropRecognisers:
  """embed(aligned 112x112 crops) -> {target: (N, d)}: the same targets shown the crop itself.

  dlib's runtime still runs its own detector and chip on the crop.
  """

  def __init__(self, targets, model_root=None):
    self._models = {t: zoo.load_target(t, model_root) for t in targets}

  def embed(self, crops) -> dict[str, np.ndarray]:
    crops = np.asarray(crops, np.uint8)
    return {name: np.asarray(model.embed(crops), np.float32)
            for name, model in self._models.items()}
