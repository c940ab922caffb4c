"""Shared real inputs: a few LFW people aligned once per test session."""
import pathlib

import numpy as np
import pytest

from opom_jax import paths

LFW_PEOPLE = ("Abdullah_Gul", "Alvaro_Uribe", "Angelina_Jolie")


@pytest.fixture(scope="session")
def lfw_root() -> pathlib.Path:
  """The shared LFW copy; a missing one fails the tests that need it, never skips them."""
  root = paths.data_root() / "lfw-deepfunneled"
  assert root.is_dir(), f"LFW not found at {root}: set OPOM_DATA_ROOT"
  return root


@pytest.fixture(scope="session")
def aligned_lfw(lfw_root):
  """{person: (K, 112, 112, 3) uint8} for the first 6 detected photos of 3 people."""
  from opom_jax.data import align  # pylint: disable=g-import-not-at-top
  out = {}
  for person in LFW_PEOPLE:
    crops = []
    for photo in sorted((lfw_root / person).iterdir()):
      try:
        crops.append(align.align_file(photo).crop)
      except align.AlignError:
        continue
      if len(crops) == 6:
        break
    out[person] = np.stack(crops)
  return out


@pytest.fixture(scope="session")
def foamliu():
  from opom_jax.models import zoo  # pylint: disable=g-import-not-at-top
  return zoo.load_surrogate("foamliu_mbf")
