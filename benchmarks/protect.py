r"""Milliseconds per photo to protect a photo with a saved mask, stage by stage.

Stages, each timed per photo: decode (read + EXIF + RGB), detect (dlib HOG
upsample 1 + 68 landmarks), align (similarity fit + 112x112 crop), warp+blend
(`run.protect.mask_photo`: the crop-space mask feathered, carried onto the face's
box of the photo, added, clipped to eps, rounded) and encode (JPEG quality 95, written atomically, no metadata).

Photo sets: LFW (250x250), the CelebA subset (in-the-wild, longest side <= 320)
and >= 1 megapixel photos made by upscaling a few CelebA photos x4 (bicubic).
A large photo is searched for its face on a copy whose longest side is at
most DETECT_SIDE, and the landmarks are mapped back up; the same large photos
are also timed with detection at full resolution (the ratio is printed, and
how far the two sets of landmarks lie apart). The mask is random within eps
(its values do not change the cost), saved and loaded as a user's .npz.

  python -m benchmarks.protect            # 20 LFW, 20 CelebA, 4 large photos
  python -m benchmarks.protect --quick    # 5, 5, 2

Last line: ms_per_photo=<median of the per-photo totals over every photo>.
"""
import argparse
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from opom_jax import paths
from opom_jax.data import align
from opom_jax.run import mask_file, photo_io, protect

DETECT_SIDE = 320   # the CelebA photos' own size: their faces are found at it
UPSCALE = 4
EPS = 8.0
STAGES = ("decode", "detect", "align", "warp+blend", "encode")


def protect_timed(path, mask, eps, out_path, detect_side):
  """Protects one photo file; returns ({stage: ms}, landmarks)."""
  ms = {}
  t = time.perf_counter()

  def lap(stage):
    nonlocal t
    now = time.perf_counter()
    ms[stage] = (now - t) * 1e3
    t = now

  photo = photo_io.read_photo(path)
  lap("decode")
  h, w = photo.shape[:2]
  factor = max(h, w) / detect_side if detect_side and max(h, w) > detect_side else 1.0
  if factor > 1.0:
    small = Image.fromarray(photo).resize((round(w / factor), round(h / factor)),
                                          Image.Resampling.BILINEAR)
    points, _ = align.detect_face(np.asarray(small))
    # Pixel centres: x_small + 0.5 = (x + 0.5) / factor.
    points = (points + 0.5) * factor - 0.5
  else:
    points, _ = align.detect_face(photo)
  lap("detect")
  _, m = align.align_face(photo, points)
  lap("align")
  protected = protect.mask_photo(photo, [m], mask, eps)
  lap("warp+blend")
  photo_io.write_photo(out_path, protected, "jpeg", 95)
  lap("encode")
  return ms, points


def photo_files(root, count):
  """The first photo of each person folder, in name order, until `count`."""
  files = []
  for person in sorted(p for p in root.iterdir() if p.is_dir()):
    photos = sorted(person.iterdir())
    if photos:
      files.append(photos[0])
    if len(files) == count:
      break
  return files


def upscaled(files, folder):
  """Each photo upscaled x4 (bicubic), saved as JPEG 95 in `folder`."""
  out = []
  for f in files:
    with Image.open(f) as im:
      big = im.convert("RGB").resize((im.width * UPSCALE, im.height * UPSCALE),
                                     Image.Resampling.BICUBIC)
    path = pathlib.Path(folder) / f"{f.stem}_x{UPSCALE}.jpg"
    big.save(path, quality=95)
    out.append(path)
  return out


def run_set(name, files, mask, eps, out_dir, detect_side):
  """Per-photo totals (ms) and landmarks; prints the median of each stage."""
  totals, stages, landmarks = [], {s: [] for s in STAGES}, []
  for f in files:
    try:
      ms, points = protect_timed(f, mask, eps, pathlib.Path(out_dir) / "out.jpg", detect_side)
    except align.AlignError:
      continue   # no face: a user's photo would be skipped, not protected
    totals.append(sum(ms.values()))
    landmarks.append(points)
    for s in STAGES:
      stages[s].append(ms[s])
  size = Image.open(files[0]).size
  cells = " ".join(f"{s}={np.median(stages[s]):6.1f}" for s in STAGES)
  print(f"{name:<26} {len(totals):>3} photos ({size[0]}x{size[1]}...)  {cells}  "
        f"total={np.median(totals):6.1f} ms")
  return totals, landmarks


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="Fewer photos.")
  args = parser.parse_args()
  n_small, n_big = (5, 2) if args.quick else (20, 4)
  data = paths.data_root()
  lfw = photo_files(data / "lfw-deepfunneled", n_small)
  celeba = photo_files(data / "celeba-subset", n_small)
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as tmp:
    mask_path = pathlib.Path(tmp) / "mask.npz"
    mask_file.save_mask(mask_path, rng.uniform(-EPS, EPS, mask_file.SHAPE), EPS, {})
    saved = mask_file.load_mask(mask_path)
    big = upscaled(celeba[:n_big], tmp)
    protect_timed(lfw[0], saved.mask, saved.eps, pathlib.Path(tmp) / "warm.jpg", DETECT_SIDE)
    print(f"median ms per stage; detection on a copy of longest side <= {DETECT_SIDE} px")
    all_totals = []
    for name, files in (("lfw", lfw), ("celeba", celeba)):
      totals, _ = run_set(name, files, saved.mask, saved.eps, tmp, DETECT_SIDE)
      all_totals += totals
    big_fast, points_fast = run_set(f"celeba x{UPSCALE}", big, saved.mask, saved.eps, tmp,
                                    DETECT_SIDE)
    all_totals += big_fast
    big_full, points_full = run_set(f"celeba x{UPSCALE} full-res detect", big, saved.mask,
                                    saved.eps, tmp, None)
  apart = np.mean([np.linalg.norm(a - b, axis=1).mean() for a, b in zip(points_fast, points_full)])
  ratio = np.median(big_full) / np.median(big_fast)
  print(f"large photos: full-resolution detection costs {ratio:.1f}x "
        f"the downscaled one; landmarks {apart:.1f} px apart on average")
  print(f"ms_per_photo={np.median(all_totals):.1f}")


if __name__ == "__main__":
  main()
