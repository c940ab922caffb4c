"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) in JAX.

Weights come from the original .dat file (parsed by ``dlib_dat``, no dlib
needed); the forward pass reproduces dlib-bin's compute_face_descriptor to a
max |diff| of ~3e-7 (tests/test_dlib_resnet.py). Layout:

  input  150x150 RGB chip, (x - mean_c) / 256
  stem   conv7x7 s2 (32) -> affine -> relu -> maxpool 3x3 s2
  blocks ares(N):      relu(x + A(c3(relu(A(c3(x))))))
         ares_down(N): relu(A(c3(relu(A(c3_s2(x))))) (+) avgpool2x2_s2(x))
         3x32, down+3x64, down+2x128, down+2x256, down 256
  head   global average pool -> fc 256->128 (no bias), raw (un-normalised)

(+) is dlib's zero-padded add: the output takes the larger of each dimension
and each input is added at the top-left (level1's 3x3 main path sits in a 4x4
output; the skip fills only the first C_in channels).

DFANet (dropout_rate > 0 with rng): base.dropout on the output of the stem
conv and of both convs of every residual block (before their affine), key
fold_in(rng, layer index); rate 0 is the exact deterministic path.

Two entry points:
  load_dlib_resnet -> (params, apply_chip): dlib's own 150x150 chip frame.
  load_dlib        -> (params, apply): the zoo contract (models/base.py): the
                      canonical ArcFace-aligned 112x112 batch, moved into the
                      chip frame by the fixed similarity CANONICAL_TO_CHIP.
"""
from __future__ import annotations

import dataclasses
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import base
from opom_jax.models import ops
from opom_jax.models.importers import dlib_dat

CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMB_DIM = 128

# Canonical (ArcFace 112x112 crop) pixel -> dlib chip pixel (150x150, padding
# 0.25), x' = A @ [x, y, 1]: scale 1.482, rotation 0.47 deg. Derived by
# benchmarks/derive_dlib_chip_warp.py on 50 LFW photos: per photo, dlib HOG +
# the 68-point predictor give the ArcFace 5 points (photo -> canonical
# similarity, Umeyama), HOG + the 5-point predictor give dlib's chip mapping
# (get_face_chip_details(shape, 150, 0.25) -> its exact photo -> chip affine);
# dlib's 5 landmarks, expressed in canonical coordinates, were then fitted by
# one least-squares similarity onto their chip-pixel positions, all photos
# together (250 point pairs; residual rms 2.6 px, i.e. the face-to-face spread
# of the two landmark sets). The chip's bottom ~17 rows fall below the 112 crop
# and are zeros. Fitting onto dlib's template points instead of the chip pixels
# dlib actually samples would differ by <= 1.4 px (its 150/149 rect scaling).
CANONICAL_TO_CHIP = np.array(
    [[1.4822204, -0.0122301, -8.48965094],
     [0.0122301, 1.4822204, -32.73203123]], dtype=np.float64)
# Mean canonical-frame position of dlib's 5-point landmarks (in dlib's order:
# outer and inner corner of the eye at the larger x, outer and inner corner of
# the other eye, nose base) over the same photos; used by
# runtimes/dlib_runtime.py when the HOG detector misses a tight crop.
CANONICAL_DLIB5 = np.array(
    [[80.65513099, 53.0554053],
     [66.68177912, 53.45484904],
     [30.50915674, 53.15133791],
     [44.83837205, 53.51228759],
     [56.3211875, 79.55273616]], dtype=np.float64)
# dlib's own 5-point template (get_face_chip_details), in [0, 1] before padding.
DLIB5_TEMPLATE = np.array(
    [[.8595674595992, .2134981538014], [.6460604764104, .2289674387677],
     [.1205750620789, .2137274526848], [.3340850613712, .2290642403242],
     [.4901123135679, .6277975316475]], dtype=np.float64)


def dlib5_template_in_chip() -> np.ndarray:
  """DLIB5_TEMPLATE in chip pixels (150x150, padding 0.25), where dlib aims."""
  return (CHIP_PADDING + DLIB5_TEMPLATE) / (1 + 2 * CHIP_PADDING) * CHIP_SIZE


def default_model_path() -> str:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
    try:
      import face_recognition_models  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise FileNotFoundError(
          "dlib_face_recognition_resnet_model_v1.dat not given and the pip "
          "package face-recognition-models is not installed; pass path=.") from e
  return face_recognition_models.face_recognition_model_location()


@dataclasses.dataclass(frozen=True)
class _Arch:
  """Static layout read from the file (not part of the params pytree)."""
  means_rgb: tuple[float, float, float]
  stem_stride: int
  stem_pad: int
  pool: tuple[int, int]               # max pool window, stride
  blocks: tuple[tuple[int, bool], ...]  # (channels, downsample)


# ------------------------------------------------------------------------------
# File -> params.


def _conv_params(layer: dlib_dat.Layer):
  # OIHW cross-correlation kernels -> HWIO, lax.conv's default orientation.
  return {"w": jnp.asarray(layer.arrays["w_oihw"].transpose(2, 3, 1, 0)),
          "b": jnp.asarray(layer.arrays["b"])}


def _affine_params(layer: dlib_dat.Layer):
  return {"gamma": jnp.asarray(layer.arrays["gamma"]),
          "beta": jnp.asarray(layer.arrays["beta"])}


def _expect(cond, path, msg):
  if not cond:
    raise dlib_dat.DlibFormatError(f"{path}: unexpected network layout: {msg}")


def params_from_net(net: dlib_dat.DlibNet, path: str = "<dlib net>"):
  """Groups dlib's flat layer list into {stem, blocks[], fc} plus the layout."""
  kinds = [layer.kind for layer in net.layers]
  _expect(kinds[:4] == ["con", "affine", "relu", "max_pool"], path, f"stem {kinds[:4]}")
  _expect(kinds[-2:] == ["avg_pool", "fc"], path, f"head {kinds[-2:]}")
  _expect(net.layers[-2].fields["nr"] == 0, path, "head pool is not global")
  _expect(net.input_size == (CHIP_SIZE, CHIP_SIZE), path, f"input {net.input_size}")
  stem_conv = net.layers[0]
  pool = net.layers[3].fields
  _expect(pool["pad_y"] == 0 and pool["nr"] == pool["nc"], path, f"max pool {pool}")
  params = {"stem": {"conv": _conv_params(stem_conv),
                     "affine": _affine_params(net.layers[1])},
            "blocks": [],
            "fc": jnp.asarray(net.layers[-1].arrays["w"])}
  blocks = []
  body = net.layers[4:-2]
  i = 0
  while i < len(body):
    down = i + 5 < len(body) and body[i + 5].kind == "avg_pool"
    n = 8 if down else 7
    group = body[i:i + n]
    want = ["con", "affine", "relu", "con", "affine"] + (
        ["avg_pool"] if down else []) + ["add_prev", "relu"]
    _expect([l.kind for l in group] == want, path,
            f"block at layer {4 + i}: {[l.kind for l in group]}")
    c1, c2 = group[0].fields, group[3].fields
    stride = 2 if down else 1
    _expect(c1["stride_y"] == stride and c2["stride_y"] == 1 and c2["pad_y"] == 1
            and c1["pad_y"] == (0 if down else 1) and c1["nr"] == 3, path,
            f"block at layer {4 + i}: convs {c1}, {c2}")
    if down:
      _expect(group[5].fields["nr"] == 2 and group[5].fields["stride_y"] == 2,
              path, f"skip pool {group[5].fields}")
    params["blocks"].append({
        "conv1": _conv_params(group[0]), "affine1": _affine_params(group[1]),
        "conv2": _conv_params(group[3]), "affine2": _affine_params(group[4])})
    blocks.append((c1["num_filters"], down))
    i += n
  arch = _Arch(means_rgb=tuple(float(m) for m in net.input_means_rgb),
               stem_stride=stem_conv.fields["stride_y"],
               stem_pad=stem_conv.fields["pad_y"],
               pool=(pool["nr"], pool["stride_y"]),
               blocks=tuple(blocks))
  return params, arch


# ------------------------------------------------------------------------------
# Forward pass (NHWC).


def _conv(x, p, stride, pad):
  return ops.conv2d(x, p["w"], (stride, stride), ((pad, pad), (pad, pad))) + p["b"]


def _affine(x, p):
  return x * p["gamma"] + p["beta"]


def _zero_padded_add(a, b):
  """dlib's add_prev: output takes the max of each dim, inputs at top-left."""
  shape = [max(s, t) for s, t in zip(a.shape, b.shape)]
  pad = lambda v: jnp.pad(v, [(0, s - t) for s, t in zip(shape, v.shape)])
  return pad(a) + pad(b)


def _forward(arch: _Arch, params, chips, dropout_rate, rng):
  """chips: (N, 150, 150, 3) float RGB 0..255 -> (N, 128) raw descriptors."""
  x = jnp.asarray(chips, jnp.float32)
  if x.ndim != 4 or x.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
    raise ValueError(f"dlib ResNet: expected (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) "
                     f"RGB chips, got {x.shape}")
  x = (x - jnp.asarray(arch.means_rgb, jnp.float32)) / 256.0

  def drop(v, layer_id):
    if dropout_rate <= 0.0 or rng is None:
      return v
    return base.dropout(v, dropout_rate, jax.random.fold_in(rng, layer_id))

  stem = params["stem"]
  x = drop(_conv(x, stem["conv"], arch.stem_stride, arch.stem_pad), 0)
  x = jax.nn.relu(_affine(x, stem["affine"]))
  k, s = arch.pool
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")

  for i, ((_, down), p) in enumerate(zip(arch.blocks, params["blocks"])):
    stride, pad = (2, 0) if down else (1, 1)
    y = drop(_conv(x, p["conv1"], stride, pad), 2 * i + 1)
    y = jax.nn.relu(_affine(y, p["affine1"]))
    y = drop(_conv(y, p["conv2"], 1, 1), 2 * i + 2)
    y = _affine(y, p["affine2"])
    if down:
      x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1),
                                "VALID") * 0.25
    x = jax.nn.relu(_zero_padded_add(y, x))

  x = jnp.mean(x, axis=(1, 2))
  return jnp.dot(x, params["fc"], precision=ops.PRECISION)


# ------------------------------------------------------------------------------
# Fixed differentiable warp canonical (112) -> chip (150).


def warp_affine_bilinear(images, dst_to_src, out_hw):
  """Bilinear resampling of (N, H, W, C) images, zeros outside.

  ``dst_to_src`` (2, 3) maps an output pixel (x, y, 1) to source coordinates;
  pixel centres are at integer coordinates (dlib's and OpenCV's convention).
  The sampling grid is fixed (numpy), so the result is linear and
  differentiable in ``images``.
  """
  images = jnp.asarray(images, jnp.float32)
  _, h, w, c = images.shape
  oh, ow = out_hw
  m = np.asarray(dst_to_src, np.float64)
  ys, xs = np.mgrid[0:oh, 0:ow].astype(np.float64)
  sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
  sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
  x0, y0 = np.floor(sx), np.floor(sy)
  fx, fy = sx - x0, sy - y0
  idx, wts = [], []
  for dy, dx, wt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                     (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
    xi, yi = x0 + dx, y0 + dy
    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    idx.append((np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)).astype(np.int32))
    wts.append(np.where(inside, wt, 0.0).astype(np.float32))
  idx = jnp.asarray(np.stack(idx).reshape(4, -1))
  wts = jnp.asarray(np.stack(wts).reshape(4, -1, 1))
  flat = images.reshape(images.shape[0], h * w, c)
  out = sum(flat[:, idx[k]] * wts[k] for k in range(4))
  return out.reshape(images.shape[0], oh, ow, c)


def chip_to_canonical_matrix() -> np.ndarray:
  full = np.vstack([CANONICAL_TO_CHIP, [0.0, 0.0, 1.0]])
  return np.linalg.inv(full)[:2]


def canonical_to_chip(x):
  """(N, 112, 112, 3) canonical batch -> (N, 150, 150, 3) dlib chips (float)."""
  x = jnp.asarray(x, jnp.float32)
  base.check_canonical(x, "dlib ResNet")
  return warp_affine_bilinear(x, chip_to_canonical_matrix(), (CHIP_SIZE, CHIP_SIZE))


# ------------------------------------------------------------------------------
# Loaders.


def load_dlib_resnet(path: str | os.PathLike | None = None):
  """-> (params, apply_chip); apply_chip(params, chips, *, dropout_rate, rng).

  chips: (N, 150, 150, 3) float RGB 0..255 dlib face chips
  (dlib.get_face_chip(img, shape, 150, 0.25)); returns the raw 128-d
  descriptor, as dlib's compute_face_descriptor (not L2-normalised).
  """
  path = os.fspath(path) if path is not None else default_model_path()
  if not os.path.isfile(path):
    raise FileNotFoundError(f"dlib ResNet weights {path} not found")
  params, arch = params_from_net(dlib_dat.read_dlib_dnn(path), path)

  def apply_chip(params, chips, *, dropout_rate=0.0, rng=None):
    return _forward(arch, params, chips, dropout_rate, rng)

  return params, apply_chip


def load_dlib(path: str | os.PathLike | None = None):
  """Zoo contract (models/base.py): canonical 112x112 batch -> raw 128-d."""
  params, apply_chip = load_dlib_resnet(path)

  def apply(params, x, *, dropout_rate=0.0, rng=None):
    return apply_chip(params, canonical_to_chip(x), dropout_rate=dropout_rate, rng=rng)

  return params, apply


def surrogate(path=None) -> base.Surrogate:
  params, apply = load_dlib(path)
  return base.Surrogate("dlib_resnet", params, apply, EMB_DIM)
