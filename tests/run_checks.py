"""Helpers shared by the run-layer tests: the protocol restated, and a folder of named photos."""
import pathlib

import numpy as np

from opom_jax import paths
from opom_jax.run.config import DataConfig, RunConfig


def protection_at_1(probe, clean, identity, distractors) -> tuple[float, int]:
  """The protocol restated: (share of ordered pairs (i != j) of a person's photos where
  protected photo i does not find clean photo j above every distractor, number of pairs)."""
  misses = pairs = 0
  for i in range(len(probe)):
    for j in range(len(probe)):
      if i != j and identity[i] == identity[j]:
        pairs += 1
        misses += not probe[i] @ clean[j] >= np.max(distractors @ probe[i])
  return misses / pairs, pairs


def named_photos_config(tmp_path: pathlib.Path, **fields) -> RunConfig:
  """A run on a folder of two 4-photo people (file names only: nothing is read)."""
  for person in ("Ann", "Bob"):
    (tmp_path / "faces" / person).mkdir(parents=True)
    for i in range(4):
      (tmp_path / "faces" / person / f"{person}_{i:04d}.jpg").write_bytes(b"")
  return RunConfig(workdir=str(tmp_path / "sweep"), model_root=str(paths.model_root()),
                   data=DataConfig(data_root=str(tmp_path), dataset="faces", n_train=3,
                                   min_photos=4), **fields)
