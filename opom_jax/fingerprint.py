"""Short, stable names for settings and arrays: the keys of every cache and artefact."""
from __future__ import annotations

import hashlib
import json

import numpy as np


def digest(settings) -> str:
  """Short, stable hash of a JSON-able settings dict."""
  text = json.dumps(settings, sort_keys=True)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def array_digest(*arrays) -> str:
  """Hash of arrays' shapes, dtypes and bytes: identifies the inputs themselves."""
  h = hashlib.sha1()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.shape}{a.dtype.str}".encode())
    h.update(a.data)
  return h.hexdigest()[:12]
