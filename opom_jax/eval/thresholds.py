"""Verification thresholds at a fixed false-accept rate, fixed once per target.

A verifier accepts a pair of photos as one person when the cosine similarity
of their embeddings exceeds a threshold. At FAR 1e-3 the threshold is the
similarity above which 0.1% of different-person (impostor) pairs fall. The
LFW pairs file holds only 3000 impostor pairs (3 above the threshold), so the
impostor pairs here are ALL different-person pairs among the images the pairs
file names (~7700 images, ~30 million pairs), scored in chunks.

The threshold depends on the target, its weights, the pairs file, the photos
and their alignment: it is cached as JSON under a name keyed by those.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
from typing import Callable

import numpy as np

from opom_jax import fingerprint
from opom_jax.data import lfw_pairs_faces
from opom_jax.eval import verification
from opom_jax.files import atomic_write_text

FAR = 1e-3
# Rows of the similarity matrix scored at once: CHUNK x images float32 (~30 MB at 7700 images).
CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class Threshold:
  value: float         # accept a pair as one person when cosine > value
  far: float           # share of impostor pairs above value (at most)
  impostor_pairs: int  # different-person pairs the value rests on
  images: int          # embedded images those pairs come from
  fallback_images: int = 0  # of those, centre crops (the detector found no face)


def far_threshold(impostor_scores: np.ndarray, far: float) -> float:
  """The smallest score with at most floor(far * N) of the N scores above it: the
  (floor(far * N) + 1)-th largest, so accepting `score > t` accepts at most that share."""
  scores = np.asarray(impostor_scores, np.float64).ravel()
  if not scores.size:
    raise ValueError("no impostor scores to set a threshold on")
  return float(_top(scores, _allowed(far, scores.size) + 1).min())


def _allowed(far: float, n: int) -> int:
  """How many of n impostor pairs may be accepted at this FAR."""
  if not 0 <= far < 1:
    raise ValueError(f"FAR must lie in [0, 1), got {far}")
  return math.floor(far * n)


def _top(values: np.ndarray, m: int) -> np.ndarray:
  """The m largest values (unordered); all of them when there are fewer."""
  if values.size <= m:
    return values
  return np.partition(values, values.size - m)[values.size - m:]


def impostor_threshold(emb: np.ndarray, people, far: float = FAR, chunk: int = CHUNK) -> Threshold:
  """The FAR threshold over every pair of rows of `emb` (L2-normalised) of different people.

  Only the floor(far * N) + 1 largest scores are kept while scanning the upper
  triangle chunk by chunk, so memory stays bounded for millions of pairs.
  """
  emb = np.asarray(emb, np.float32)
  _, person = np.unique(np.asarray(people), return_inverse=True)
  sizes = np.bincount(person)
  n = len(emb)
  impostors = n * (n - 1) // 2 - int(np.sum(sizes * (sizes - 1) // 2))
  if impostors == 0:
    raise ValueError(f"{n} images of {len(sizes)} people make no different-person pair")
  keep = _allowed(far, impostors) + 1
  best = np.zeros((0,), np.float32)
  for start in range(0, n, chunk):
    rows = slice(start, min(start + chunk, n))
    sims = emb[rows] @ emb.T
    i = np.arange(rows.start, rows.stop)[:, None]
    pick = (np.arange(n)[None, :] > i) & (person[rows, None] != person[None, :])
    best = _top(np.concatenate([best, sims[pick]]), keep)
  return Threshold(float(best.min()), far, impostors, n)


def pairs_file_images(pairs_path) -> list[str]:
  """The image ids a pairs file names, sorted."""
  return verification.read_pairs(pairs_path).images()


def _person(image: str) -> str:
  return image.split("/", 1)[0]


def threshold_path(cache_dir, target_name: str, *, model_root: str, pairs_path, lfw_dir,
                   far: float, max_images: int | None) -> pathlib.Path:
  pairs_digest = hashlib.sha1(pathlib.Path(pairs_path).read_bytes()).hexdigest()[:12]
  key = fingerprint.digest({"target": target_name, "model_root": str(model_root),
                          "pairs": pairs_digest, "lfw_dir": str(lfw_dir), "far": far,
                          "max_images": max_images, "alignment": lfw_pairs_faces.CACHE_METHOD})
  return (pathlib.Path(cache_dir) / "verification_thresholds"
          / f"{target_name.replace(':', '_')}__{key}.json")


def _read(path: pathlib.Path) -> Threshold | None:
  """The cached threshold, or None when missing or not trustworthy."""
  try:
    t = Threshold(**json.loads(path.read_text()))
  except (OSError, ValueError, TypeError):
    return None
  ok = (isinstance(t.value, float) and -1.0 - 1e-5 <= t.value <= 1.0 + 1e-5
        and isinstance(t.impostor_pairs, int) and t.impostor_pairs > 0)
  return t if ok else None


def lfw_threshold(target_name: str, embed: Callable[[np.ndarray], np.ndarray], *, pairs_path,
                  lfw_dir, cache_dir, model_root: str = "", far: float = FAR,
                  max_images: int | None = None, log: Callable[[str], None] = print) -> Threshold:
  """The target's FAR threshold on the LFW images of a pairs file, computed once and cached.

  max_images: only the first (sorted) that many images, for quick checks.
  Crops are aligned once into <cache_dir>/lfw_pairs_crops.npz, shared by targets.
  """
  path = threshold_path(cache_dir, target_name, model_root=model_root, pairs_path=pairs_path,
                        lfw_dir=lfw_dir, far=far, max_images=max_images)
  cached = _read(path)
  if cached is not None:
    return cached
  if path.exists():
    log(f"thresholds: {path} is damaged; recomputing")
  images = pairs_file_images(pairs_path)[:max_images]
  faces = verification.load_pair_faces(images, lfw_dir, pathlib.Path(cache_dir)
                                       / "lfw_pairs_crops.npz", progress=log)
  log(f"thresholds: embedding {len(faces.ids)} LFW images with {target_name}")
  emb = verification.embed_all(embed, faces.crops, progress=log)
  t = dataclasses.replace(impostor_threshold(emb, [_person(i) for i in faces.ids], far),
                          fallback_images=faces.num_fallbacks)
  log(f"thresholds: {target_name} accepts cosine > {t.value:.4f} at FAR {far:g} "
      f"({t.impostor_pairs} impostor pairs of {t.images} images)")
  atomic_write_text(path, json.dumps(dataclasses.asdict(t), indent=1, sort_keys=True))
  return t
