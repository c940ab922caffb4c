"""Reader for dlib's serialised DNN files (``dlib::serialize``), no dlib needed.

Only the subset used by ``dlib_face_recognition_resnet_model_v1.dat`` is
supported: integers, dlib's portable floats, strings, bools, tensors and the
layer records of `_LAYER_READERS` below (con, affine, relu, max/avg pool, add_prev,
fc, plus tags and skips). The file is
read front to back and must be consumed to its last byte, so a format
misunderstanding fails loudly instead of producing shifted weights.

File order (each wrapper writes its version, then its subnetwork, then its own
record): loss header, one version integer per wrapper (outermost first), the
input record, then every layer record in forward order.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np


class DlibFormatError(ValueError):
  pass


@dataclasses.dataclass
class Layer:
  """One layer record; ``arrays`` holds float32 numpy arrays, ``fields`` ints/floats."""
  kind: str
  fields: dict[str, Any]
  arrays: dict[str, np.ndarray]


@dataclasses.dataclass
class DlibNet:
  loss: str
  loss_fields: dict[str, float]
  input_means_rgb: tuple[float, float, float]
  input_size: tuple[int, int]
  layers: list[Layer]
  num_wrappers: int  # version integers read: add_layers plus tag/skip layers


class _Reader:
  """Cursor over the file bytes; every read names the offset on failure."""

  def __init__(self, data: bytes, path: str):
    self.data = data
    self.pos = 0
    self.path = path

  def fail(self, msg: str):
    raise DlibFormatError(f"{self.path}: byte {self.pos}: {msg}")

  def take(self, n: int) -> bytes:
    if self.pos + n > len(self.data):
      self.fail(f"wanted {n} bytes, file ends at {len(self.data)}")
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def integer(self, signed: bool = True) -> int:
    # Control byte: low nibble = byte count, bit 7 = sign; then magnitude LE.
    ctrl = self.take(1)[0]
    if not signed:
      ctrl &= 0x8F
    n = ctrl & 0x0F
    if n < 1 or n > 8 or (ctrl & 0x70):
      self.pos -= 1
      self.fail(f"bad integer control byte 0x{ctrl:02x}")
    value = int.from_bytes(self.take(n), "little")
    return -value if ctrl & 0x80 else value

  def unsigned(self) -> int:
    return self.integer(signed=False)

  def real(self) -> float:
    # Mantissa first, then exponent (serialize.h's comment says otherwise).
    mantissa = self.integer()
    exponent = self.integer()
    if exponent in (32000, 32001, 32002):
      return (float("inf"), float("-inf"), float("nan"))[exponent - 32000]
    return float(mantissa) * 2.0**exponent

  def string(self) -> str:
    n = self.unsigned()
    return self.take(n).decode("ascii")

  def boolean(self) -> bool:
    b = self.take(1)
    if b not in (b"0", b"1"):
      self.pos -= 1
      self.fail(f"bad bool byte {b!r}")
    return b == b"1"

  def dims4(self) -> tuple[int, int, int, int]:
    return tuple(self.integer() for _ in range(4))

  def tensor(self) -> np.ndarray:
    version = self.integer()
    if version != 2:
      self.fail(f"tensor version {version}, expected 2")
    dims = self.dims4()
    count = int(np.prod(dims))
    raw = self.take(4 * count)
    return np.frombuffer(raw, dtype="<f4").reshape(dims).astype(np.float32)

  def alias_tensor(self) -> tuple[int, int, int, int]:
    version = self.integer()
    if version != 1:
      self.fail(f"alias_tensor version {version}, expected 1")
    return self.dims4()


def _read_con(r: _Reader) -> Layer:
  params = r.tensor()
  f = {k: r.integer() for k in
       ("num_filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
  wshape = r.alias_tensor()  # (F, C, kh, kw)
  bshape = r.alias_tensor()  # (1, F, 1, 1)
  for _ in range(4):  # learning-rate / weight-decay multipliers
    r.real()
  nw = int(np.prod(wshape))
  flat = params.reshape(-1)
  if flat.size != nw + bshape[1] or wshape[0] != f["num_filters"]:
    r.fail(f"con_4 params {flat.size} do not match filters {wshape} + bias {bshape}")
  return Layer("con", f, {"w_oihw": flat[:nw].reshape(wshape), "b": flat[nw:].copy()})


def _read_affine(r: _Reader) -> Layer:
  params = r.tensor().reshape(-1)
  gshape = r.alias_tensor()
  r.alias_tensor()  # beta, same shape
  mode = r.integer()
  k = gshape[1]
  if mode != 0 or params.size != 2 * k:
    r.fail(f"affine_ mode {mode} / size {params.size}; expected per-channel 2*{k}")
  return Layer("affine", {"channels": k}, {"gamma": params[:k].copy(), "beta": params[k:].copy()})


def _read_pool(kind: str):
  def read(r: _Reader) -> Layer:
    f = {k: r.integer() for k in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
    return Layer(kind, f, {})
  return read


def _read_fc(r: _Reader) -> Layer:
  n_out = r.unsigned()
  n_in = r.unsigned()
  params = r.tensor()
  wshape = r.alias_tensor()
  bshape = r.alias_tensor()
  bias_mode = r.integer()
  for _ in range(4):
    r.real()
  if bias_mode != 1 or int(np.prod(bshape)) != 0:
    r.fail(f"fc_2 with bias (mode {bias_mode}) is not supported")
  w = params.reshape(-1)[:int(np.prod(wshape))].reshape(n_in, n_out)
  return Layer("fc", {"n_in": n_in, "n_out": n_out}, {"w": w.copy()})


_LAYER_READERS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": lambda r: Layer("relu", {}, {}),
    "max_pool_2": _read_pool("max_pool"),
    "avg_pool_2": _read_pool("avg_pool"),
    "add_prev_": lambda r: Layer("add_prev", {}, {}),
    "fc_2": _read_fc,
}


def _read_add_layer_trailer(r: _Reader):
  for _ in range(3):  # setup-called, gradient-stale, gradient-disabled flags
    r.boolean()
  for _ in range(3):  # x_grad, cached_output, params_grad: empty in a saved net
    t = r.tensor()
    if t.size:
      r.fail("non-empty gradient/cache tensor in a layer trailer")


def read_dlib_dnn(path: str | os.PathLike) -> DlibNet:
  """Parses a dlib DNN .dat file (loss_metric + input_rgb_image_sized nets)."""
  path = os.fspath(path)
  with open(path, "rb") as fh:
    r = _Reader(fh.read(), path)

  if r.integer() != 1:
    r.fail("expected loss-layer version 1")
  loss = r.string()
  if loss != "loss_metric_2":
    r.fail(f"loss {loss!r} not supported (expected 'loss_metric_2')")
  loss_fields = {"margin": r.real(), "distance_threshold": r.real()}

  # Versions: 2 = add_layer, 1 = tag/skip, 3 = innermost add_layer (ends the run).
  versions = []
  while True:
    v = r.integer()
    versions.append(v)
    if v == 3:
      break
    if v not in (1, 2):
      r.fail(f"unexpected wrapper version {v}")

  kind = r.string()
  if kind != "input_rgb_image_sized":
    r.fail(f"input layer {kind!r} not supported")
  means = (r.real(), r.real(), r.real())
  size = (r.unsigned(), r.unsigned())

  layers = []
  num_add_layers = sum(v in (2, 3) for v in versions)
  for i in range(num_add_layers):
    kind = r.string()
    if kind not in _LAYER_READERS:
      r.fail(f"layer type {kind!r} not supported")
    layers.append(_LAYER_READERS[kind](r))
    _read_add_layer_trailer(r)
    if i == 0:  # the innermost add_layer also stores sample_expansion_factor
      factor = r.unsigned()
      if factor != 1:
        r.fail(f"sample_expansion_factor {factor}, expected 1")
  if r.pos != len(r.data):
    r.fail(f"{len(r.data) - r.pos} trailing bytes after the last layer")
  return DlibNet(loss, loss_fields, means, size, layers, len(versions))


def param_count(net: DlibNet) -> int:
  return sum(a.size for layer in net.layers for a in layer.arrays.values())
