"""Face detection, 5 landmarks and ArcFace 112x112 alignment.

Reproduces the protocol of the official OPOM figures on LFW: dlib HOG
frontal detector (upsample 1, largest face), dlib 68-point landmarks reduced
to 5 points, a Umeyama similarity onto the ArcFace template (as skimage's
SimilarityTransform / insightface's estimate_norm), and a bilinear
cv2.warpAffine into 112x112 with a black border. This module is the one home
of the ArcFace template and of the similarity fit (`umeyama`).

Every aligned face keeps its 2x3 forward transform M (photo -> crop), so a
crop-space mask can be pasted back onto the original photo (`paste_back`,
`photo_delta`), faded out towards the crop's edge so that no seam shows.
"""
import dataclasses
import functools
import os
import warnings

import cv2
import numpy as np
from PIL import Image

CROP_SIZE = 112
# ArcFace 5-point template in the 112x112 crop, image coordinates (x, y):
# eye with the smaller x, eye with the larger x, nose tip, mouth corners.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963],
     [73.5318, 51.5014],
     [56.0252, 71.7366],
     [41.5493, 92.3655],
     [70.7299, 92.2041]], dtype=np.float64)

# Reasons used in skip reports (align_file / iter_faces).
UNREADABLE = "unreadable image"
NO_FACE = "no face found"

FACE_CHOICES = ("largest", "centre", "all")
# Width (crop pixels) over which a pasted-back change fades to 0 towards the
# crop's edge: a mask ending abruptly would draw the crop square on the photo.
FEATHER = 6


class AlignError(ValueError):
  """A photo that cannot be aligned; `reason` is one of the constants above."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class AlignedFace:
  crop: np.ndarray        # (112, 112, 3) uint8 RGB
  landmarks: np.ndarray   # (5, 2) float64, original photo coordinates
  transform: np.ndarray   # (2, 3) float64, photo -> crop
  box: np.ndarray         # (4,) int64 detection: left, top, right, bottom
  image_size: tuple[int, int]  # (height, width) of the original photo


@functools.cache
def dlib_models():
  """dlib's detector and 68-point predictor, loaded once per process."""
  import dlib  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    # face_recognition_models imports the deprecated pkg_resources.
    warnings.simplefilter("ignore")
    import face_recognition_models  # pylint: disable=g-import-not-at-top
  predictor_file = face_recognition_models.pose_predictor_model_location()
  if not os.path.isfile(predictor_file):
    raise FileNotFoundError(
        f"dlib 68-point model {predictor_file} is missing: reinstall the "
        "pip package face_recognition_models.")
  return (dlib.get_frontal_face_detector(),
          dlib.shape_predictor(predictor_file))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """Reads any PIL-readable photo (JPEG, PNG, greyscale PGM...) as uint8 RGB."""
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), dtype=np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise AlignError(UNREADABLE, f"{path}: {e}") from e


def five_points(shape68: np.ndarray) -> np.ndarray:
  """(68, 2) dlib landmarks -> (5, 2) in template order.

  dlib 36-41 is the subject's right eye, which lies at the smaller x in the
  image, like the template's first point.
  """
  return np.stack([
      shape68[36:42].mean(axis=0),
      shape68[42:48].mean(axis=0),
      shape68[30],
      shape68[48],
      shape68[54],
  ]).astype(np.float64)


def detect_faces(img: np.ndarray, upsample: int = 1, choose: str = "largest",
                 border: float = 0.0):
  """The chosen dlib HOG faces of a uint8 RGB photo -> [((5, 2) points, box)].

  choose: "largest" (the reference's OPOM protocol), "centre" (the face
  nearest the photo centre: LFW's labelled person when a bystander is larger),
  each one face, or "all": every face, largest first (equal areas in dlib's
  order). box is the detection rectangle (left, top, right, bottom).
  border: a black margin of this fraction of the photo's longer side is added
  before detecting, so that a face filling a small photo (AT&T's 92x112) does
  not touch the edge, where the HOG window misses it; points and box are in
  the photo's own coordinates either way.

  Raises AlignError(NO_FACE) when the detector finds nothing.
  """
  if choose not in FACE_CHOICES:
    raise ValueError(f"detect_faces: choose must be one of {FACE_CHOICES}, got {choose!r}")
  img = _as_rgb_uint8(img)
  pad = int(round(border * max(img.shape[:2])))
  if pad:
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
  detector, predictor = dlib_models()
  rects = list(detector(img, upsample))
  if not rects:
    raise AlignError(NO_FACE)
  h, w = img.shape[:2]
  # sorted() is stable: the first of equal areas stays first, as in dlib's order.
  by_area = sorted(rects, key=lambda r: -r.width() * r.height())
  if choose == "largest":
    rects = by_area[:1]
  elif choose == "centre":
    rects = [min(rects, key=lambda r: ((r.left() + r.right()) / 2 - w / 2) ** 2 +
                 ((r.top() + r.bottom()) / 2 - h / 2) ** 2)]
  else:
    rects = by_area
  faces = []
  for rect in rects:
    shape = predictor(img, rect)
    pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64) - pad
    box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.int64) - pad
    faces.append((five_points(pts), box))
  return faces


def detect_face(img: np.ndarray, upsample: int = 1, choose: str = "largest"):
  """One face ("largest" or "centre", see detect_faces) -> ((5, 2) points, box)."""
  if choose == "all":
    raise ValueError("detect_face finds one face; use detect_faces(choose='all')")
  return detect_faces(img, upsample, choose)[0]


def detect_landmarks(img: np.ndarray, upsample: int = 1) -> np.ndarray:
  """(5, 2) template-order points of the largest face; AlignError if none."""
  return detect_face(img, upsample)[0]


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity src -> dst (Umeyama 1991), as a 2x3 matrix.

  Rotation (no reflection), uniform scale and translation; the same algorithm
  as skimage's SimilarityTransform.estimate, which insightface's estimate_norm
  uses.
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  num, dim = src.shape
  src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
  src_demean, dst_demean = src - src_mean, dst - dst_mean
  a = dst_demean.T @ src_demean / num
  d = np.ones((dim,), dtype=np.float64)
  if np.linalg.det(a) < 0:
    d[dim - 1] = -1
  t = np.eye(dim + 1, dtype=np.float64)
  u, s, v = np.linalg.svd(a)
  rank = np.linalg.matrix_rank(a)
  if rank == 0:
    raise ValueError("umeyama: degenerate source points (all identical).")
  if rank == dim - 1:
    if np.linalg.det(u) * np.linalg.det(v) > 0:
      t[:dim, :dim] = u @ v
    else:
      s_last = d[dim - 1]
      d[dim - 1] = -1
      t[:dim, :dim] = u @ np.diag(d) @ v
      d[dim - 1] = s_last
  else:
    t[:dim, :dim] = u @ np.diag(d) @ v
  scale = 1.0 / src_demean.var(axis=0).sum() * (s @ d)
  t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean.T)
  t[:dim, :dim] *= scale
  return t[:2, :]


def align_face(img: np.ndarray, points: np.ndarray):
  """Warps a photo so that its 5 points land on the ArcFace template.

  Returns (crop (112, 112, 3) uint8, M (2, 3) float64 photo -> crop).
  """
  img = _as_rgb_uint8(img)
  points = np.asarray(points, np.float64)
  if points.shape != (5, 2):
    raise ValueError(f"align_face: expected (5, 2) points, got {points.shape}")
  m = umeyama(points, ARCFACE_TEMPLATE)
  crop = cv2.warpAffine(img, m, (CROP_SIZE, CROP_SIZE), borderValue=0.0)
  return crop, m


def align_faces(img: np.ndarray, upsample: int = 1, choose: str = "largest",
                border: float = 0.0) -> list[AlignedFace]:
  """Detect + landmarks + align the chosen faces (see detect_faces) of one uint8 RGB photo."""
  img = _as_rgb_uint8(img)
  faces = []
  for points, box in detect_faces(img, upsample, choose, border):
    crop, m = align_face(img, points)
    faces.append(AlignedFace(crop=crop, landmarks=points, transform=m, box=box,
                             image_size=(img.shape[0], img.shape[1])))
  return faces


def align_image(img: np.ndarray, upsample: int = 1, choose: str = "largest",
                border: float = 0.0) -> AlignedFace:
  """Detect + landmarks + align one face of a uint8 RGB photo (raises AlignError)."""
  if choose == "all":
    raise ValueError("align_image aligns one face; use align_faces(choose='all')")
  return align_faces(img, upsample, choose, border)[0]


def align_file(path: str | os.PathLike, upsample: int = 1, border: float = 0.0) -> AlignedFace:
  """Reads and aligns one photo file (raises AlignError with a reason); see detect_faces."""
  return align_image(read_rgb(path), upsample, border=border)


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Maps (K, 2) points through a 2x3 affine matrix."""
  points = np.asarray(points, np.float64)
  return points @ np.asarray(m, np.float64)[:, :2].T + np.asarray(m)[:, 2]


def feather_alpha() -> np.ndarray:
  """(112, 112) float32 weight: 1 inside, falling smoothly to 0 on the crop's edge pixels."""
  edge = np.minimum(np.arange(CROP_SIZE), CROP_SIZE - 1 - np.arange(CROP_SIZE))
  t = np.clip(edge / FEATHER, 0.0, 1.0)
  ramp = t * t * (3 - 2 * t)   # smoothstep: no kink where the fade starts
  return np.outer(ramp, ramp).astype(np.float32)


def face_footprint(m: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
  """(x0, y0, x1, y1): the photo pixels a crop of transform M can touch, clipped to the photo."""
  inverse = cv2.invertAffineTransform(np.asarray(m, np.float64))
  corners = apply_transform(inverse, [[-1, -1], [CROP_SIZE, -1], [-1, CROP_SIZE],
                                      [CROP_SIZE, CROP_SIZE]])
  h, w = image_size
  x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [w, h])
  x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 1, 0, [w, h])
  return int(x0), int(y0), int(x1), int(y1)


def photo_delta(delta: np.ndarray, m: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
  """A crop-space float change (112, 112, 3) -> the same change on the photo (H, W, 3) float32.

  The change is faded to 0 at the crop's edge (`feather_alpha`) and warped
  with the inverse of M (bilinear): nothing outside the crop's footprint
  changes and no seam marks its edge. Only the footprint's bounding box is
  warped: the warp costs the face's size, not the photo's.
  """
  delta = np.asarray(delta, np.float32) * feather_alpha()[..., None]
  m = np.asarray(m, np.float64)
  out = np.zeros((*image_size, delta.shape[-1]), np.float32)
  x0, y0, x1, y1 = face_footprint(m, image_size)
  if x1 <= x0 or y1 <= y0:
    return out
  # Photo pixel (x + x0, y + y0) of the box maps to the crop as M (x + x0, y + y0, 1).
  m_box = m.copy()
  m_box[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
  out[y0:y1, x0:x1] = cv2.warpAffine(
      delta, m_box, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
      borderValue=0.0).reshape(y1 - y0, x1 - x0, -1)
  return out


def paste_back(original: np.ndarray, crop_or_delta: np.ndarray,
               m: np.ndarray) -> np.ndarray:
  """Carries a crop-space change back into the original photo.

  `crop_or_delta` is either a protected crop (uint8, e.g. clip(crop + mask))
  or a float delta in crop space (112, 112, 3). The delta is feathered and
  warped with the inverse of M (`photo_delta`), so only the face region
  changes.
  Returns the protected photo as uint8, same shape as `original`.
  """
  original = _as_rgb_uint8(original)
  m = np.asarray(m, np.float64)
  if crop_or_delta.shape != (CROP_SIZE, CROP_SIZE, 3):
    raise ValueError("paste_back: expected a (112, 112, 3) crop or delta, got "
                     f"{crop_or_delta.shape}")
  if crop_or_delta.dtype == np.uint8:
    # The crop the mask was added to is the clean re-alignment of the photo;
    # the delta also carries the uint8 truncation the user saw in the crop.
    clean = cv2.warpAffine(original, m, (CROP_SIZE, CROP_SIZE), borderValue=0.0)
    delta = crop_or_delta.astype(np.float32) - clean.astype(np.float32)
  else:
    delta = np.asarray(crop_or_delta, np.float32)
  out = original.astype(np.float32) + photo_delta(delta, m, original.shape[:2])
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _as_rgb_uint8(img: np.ndarray) -> np.ndarray:
  img = np.asarray(img)
  if img.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got dtype {img.dtype}")
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  if img.ndim != 3 or img.shape[-1] != 3:
    raise ValueError(f"expected an (H, W, 3) RGB image, got {img.shape}")
  return np.ascontiguousarray(img)
