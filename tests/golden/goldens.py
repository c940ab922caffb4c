"""Stored PyTorch reference embeddings (written by benchmarks/make_goldens.py).

Each .npz holds the seed and count of the synthetic input images and the
reference's float32 embeddings; the tests rebuild the images with the same
recipe and run the JAX port on them.
"""
import functools
import importlib.util
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE.parent.parent / "benchmarks" / "make_goldens.py"

# Two float32 implementations of the same network (different convolution and
# reduction orders) drift apart by accumulated rounding: float32 eps is 1.2e-7
# and the worst case measured when the goldens were made was 5e-6 of the
# largest embedding value (EdgeFace, 20+ layers). 2e-5 leaves 4x headroom
# while a real wiring slip is orders of magnitude larger (tanh instead of erf
# GELU: 7e-3; a stride-2 conv padded (0, 1) instead of (1, 1): cosine 0.24).
REL_TOL = 2e-5
MIN_COSINE = 0.99999


@functools.cache
def recipe():
  """benchmarks/make_goldens.py as a module (numpy-only at import: no torch needed)."""
  spec = importlib.util.spec_from_file_location("make_goldens", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(name: str) -> dict:
  with np.load(HERE / f"{name}.npz") as data:
    return dict(data)


def images(golden: dict) -> np.ndarray:
  """The synthetic inputs the golden was computed on, checked against its stored sum."""
  x = recipe().synthetic_images(int(golden["image_seed"]), int(golden["n_images"]))
  assert x.astype(np.float64).sum() == golden["image_sum"], (
      "the synthetic image recipe changed: regenerate the goldens")
  return x


def cosines(a, b) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_embeddings_match(got, want):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape and got.dtype == np.float32, (got.shape, got.dtype)
  assert np.all(cosines(got, want) >= MIN_COSINE), cosines(got, want)
  scale = np.abs(want).max()
  np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=REL_TOL)
