"""HSE faceres (MobileNet v1 at 224x224, 1024-d descriptor) from its TF.js graph model.

Weights: ``hse_faceres_tfjs/faceres.json`` + ``faceres.bin`` (float16-quantised
weights), read by `tfjs_import`; the face descriptor is the output of node
``global_pooling/Mean`` (the age / gender heads after it are not run).

Input adaptation (canonical (N,112,112,3) RGB 0..255 ArcFace crop -> the
graph's (N,224,224,3) input), chosen by measuring same / different person
separation on aligned LFW crops (see `PAD`):
  * the 112 crop is padded by `PAD` pixels on each side with its edge pixels
    (its authors' crop is looser than ArcFace's), then resized
    bilinearly to 224x224;
  * caffe-style: RGB -> BGR, minus the ImageNet means (103.939, 116.779,
    123.68), no scaling. Fed RGB (same means, reversed) instead, the 1000 pairs
    below drop from 97.40% to 95.60% (AUC 0.9965 -> 0.9917).

DFANet: MobileNet v1 has no residual blocks; its unit is the depthwise-
separable block (3x3 depthwise, then 1x1 pointwise), closed by the pointwise
convolution. Dropout goes after the stem convolution and after every pointwise
convolution (every ``Conv2D`` node: 1 + 13 sites), before the folded BatchNorm.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import base
from opom_jax.models.importers import tfjs_import

FILE = "hse_faceres_tfjs/faceres.json"
DESCRIPTOR = "global_pooling/Mean"
EMB_DIM = 1024
SIZE = 224
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
# Edge padding of the 112 crop before resizing, each side. On 1000 LFW pairs
# (100 per fold; 10-fold accuracy, pair AUC, mean cosine same / different):
# pad 0: 97.20%, 0.9958, 0.705 / 0.358; pad 8: 97.40%, 0.9965, 0.706 / 0.361;
# pad 16: 97.10%, 0.9964, 0.705 / 0.367.
PAD = 8


def preprocess(x, pad: int = PAD, bgr: bool = True):
  """Canonical (N,112,112,3) RGB 0..255 -> (N,224,224,3) caffe-style input."""
  x = jnp.asarray(x, jnp.float32)
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  x = jax.image.resize(x, (x.shape[0], SIZE, SIZE, 3), "bilinear", antialias=False)
  return x[..., ::-1] - CAFFE_MEAN_BGR if bgr else x - CAFFE_MEAN_BGR[::-1]


def _is_conv2d(node: tfjs_import.Node) -> bool:
  return node.op == "Conv2D"


def load_hse_faceres(path, *, pad: int = PAD, bgr: bool = True) -> tuple[dict, base.ApplyFn]:
  """faceres.json (its .bin beside it) -> (params, apply): canonical crops in, raw 1024-d out."""
  params, graph = tfjs_import.parse_tfjs(path, (DESCRIPTOR,), dropout_at=_is_conv2d)
  apply_graph = tfjs_import.make_apply(graph)

  def apply(params, x, *, dropout_rate: float = 0.0, rng=None):
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4 or x.shape[1:] != (112, 112, 3):
      raise ValueError(f"hse_faceres: expected (N, 112, 112, 3) RGB 0..255, got {x.shape}")
    return apply_graph(params, preprocess(x, pad, bgr), dropout_rate=dropout_rate, rng=rng)

  return params, apply

