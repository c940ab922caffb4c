"""Reads PyTorch state_dict checkpoints into numpy arrays without PyTorch.

A .pt/.ckpt file is a pickle, and a plain unpickler runs whatever code the
file names. `_RestrictedUnpickler` resolves only the nine globals that plain
tensor / dynamically-quantised state_dicts need (see
``shared/notes/torch-checkpoints.md``) to inert stand-ins, and refuses every
other global with `UnsafeCheckpointError` before anything is called.

Two containers are understood:
  * zip ("new", torch >= 1.6): ``<root>/data.pkl`` plus one member
    ``<root>/data/<key>`` per storage;
  * legacy stream (torch < 1.6): magic, protocol and sys-info pickles, the
    main pickle, a pickle listing the storage keys, then per key an int64
    element count followed by the raw bytes.

Public API:
  load_state_dict(path) -> dict[str, np.ndarray]
  read_checkpoint(path) -> the unpickled object, tensors as numpy arrays and
                           quantised tensors as `QTensor`
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The checkpoint names a global outside the allow-list; nothing was run."""


class CheckpointFormatError(ValueError):
  """The file is not a checkpoint layout this reader understands."""


def _refuse_build(self, state):
  # BUILD on a shared stand-in would let a file rewrite the allow-list itself.
  raise UnsafeCheckpointError(
      f"refusing to set state {state!r} on {type(self).__name__}: a plain state_dict never does.")


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageType:
  name: str
  dtype: np.dtype
  __setstate__ = _refuse_build


@dataclasses.dataclass(frozen=True, slots=True)
class _Marker:
  """Stand-in for a bare torch value such as ``torch.qint8``."""
  name: str
  __setstate__ = _refuse_build


class _Rebuild:
  """A rebuild function behind an object that BUILD cannot modify."""
  __slots__ = ("fn",)
  __setstate__ = _refuse_build

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, *args):
    return self.fn(*args)


QINT8 = _Marker("torch.qint8")
PER_TENSOR_AFFINE = _Marker("torch.per_tensor_affine")


@dataclasses.dataclass
class QTensor:
  """A per-tensor-affine quantised tensor: value = (int_repr - zero_point) * scale."""
  int_repr: np.ndarray
  scale: float
  zero_point: int

  def dequantize(self) -> np.ndarray:
    # float64 arithmetic then one rounding, so the result is the nearest float32.
    q = self.int_repr.astype(np.float64) - self.zero_point
    return (q * self.scale).astype(np.float32)


class _Storage:
  """Raw bytes of one storage; filled in after unpickling in the legacy format."""
  __setstate__ = _refuse_build

  def __init__(self, stype: _StorageType, key: str, numel: int):
    self.stype, self.key, self.numel = stype, key, numel
    self.array: np.ndarray | None = None

  def fill(self, raw: bytes, where: str):
    itemsize = self.stype.dtype.itemsize
    if len(raw) != self.numel * itemsize:
      raise CheckpointFormatError(
          f"{where}: storage {self.key} holds {len(raw)} bytes, expected "
          f"{self.numel} x {itemsize} ({self.stype.name}).")
    self.array = np.frombuffer(raw, dtype=self.stype.dtype.newbyteorder("<"))


@dataclasses.dataclass
class _PendingTensor:
  """A tensor whose storage bytes may not be read yet (legacy format)."""
  storage: _Storage
  offset: int
  size: tuple
  stride: tuple

  def materialise(self) -> np.ndarray:
    data = self.storage.array
    if data is None:
      raise CheckpointFormatError(f"storage {self.storage.key} was never read.")
    size, stride = tuple(self.size), tuple(self.stride)
    numel = int(np.prod(size, dtype=np.int64))
    if numel == 0:
      return np.zeros(size, data.dtype.newbyteorder("="))
    last = self.offset + sum((n - 1) * s for n, s in zip(size, stride))
    if self.offset < 0 or last >= data.size:
      raise CheckpointFormatError(
          f"tensor of size {size}, stride {stride}, offset {self.offset} runs "
          f"past storage {self.storage.key} of {data.size} elements.")
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=size,
        strides=[s * data.itemsize for s in stride], writeable=False)
    # np.array, not ascontiguousarray: the latter turns 0-d scalars into 1-d.
    return np.array(view, dtype=data.dtype.newbyteorder("="), order="C")


@dataclasses.dataclass
class _PendingQTensor:
  tensor: _PendingTensor
  scale: float
  zero_point: int


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _PendingTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_qtensor(storage, offset, size, stride, qparams, requires_grad=False,
                     backward_hooks=None):
  del requires_grad, backward_hooks
  if not isinstance(qparams, tuple) or not qparams or qparams[0] is not PER_TENSOR_AFFINE:
    raise CheckpointFormatError(
        f"only per_tensor_affine quantisation is supported, got qparams {qparams!r}.")
  _, scale, zero_point = qparams
  return _PendingQTensor(_PendingTensor(storage, int(offset), tuple(size), tuple(stride)),
                         float(scale), int(zero_point))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


# The complete allow-list: (module, name) -> inert stand-in.
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Rebuild(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_qtensor"): _Rebuild(_rebuild_qtensor),
    ("torch._utils", "_rebuild_parameter"): _Rebuild(_rebuild_parameter),
    ("torch", "FloatStorage"): _StorageType("FloatStorage", np.dtype(np.float32)),
    ("torch", "LongStorage"): _StorageType("LongStorage", np.dtype(np.int64)),
    ("torch", "QInt8Storage"): _StorageType("QInt8Storage", np.dtype(np.int8)),
    ("torch", "qint8"): QINT8,
    ("torch", "per_tensor_affine"): PER_TENSOR_AFFINE,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that only ever returns the stand-ins in `_ALLOWED`."""

  def __init__(self, file, where: str, storage_bytes=None):
    super().__init__(file)
    self._where = where
    self._storage_bytes = storage_bytes  # key -> bytes, or None (filled later)
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f"{self._where}: refusing to load global '{module}.{name}'; only plain "
          "tensor state_dicts are allowed (torch._utils rebuild functions, "
          "Float/Long/QInt8 storages, qint8, per_tensor_affine, OrderedDict)."
      ) from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
      raise CheckpointFormatError(f"{self._where}: unexpected persistent id {pid!r}.")
    _, stype, key, _location, numel = pid[:5]
    if len(pid) == 6 and pid[5] is not None:
      raise CheckpointFormatError(
          f"{self._where}: storage views are not supported (persistent id {pid!r}).")
    if not isinstance(stype, _StorageType):
      raise CheckpointFormatError(f"{self._where}: {stype!r} is not a storage class.")
    key = str(key)
    storage = self.storages.get(key)
    if storage is None:
      storage = self.storages[key] = _Storage(stype, key, int(numel))
      if self._storage_bytes is not None:
        storage.fill(self._storage_bytes(key), self._where)
    elif storage.stype != stype:
      raise CheckpointFormatError(
          f"{self._where}: storage {key} is typed both {storage.stype.name} and {stype.name}.")
    return storage


def _materialise(obj):
  if isinstance(obj, _PendingTensor):
    return obj.materialise()
  if isinstance(obj, _PendingQTensor):
    return QTensor(obj.tensor.materialise(), obj.scale, obj.zero_point)
  if isinstance(obj, collections.OrderedDict):
    out = collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    out.__dict__.update(obj.__dict__)  # keeps the state_dict's _metadata
    return out
  if isinstance(obj, dict):
    return {k: _materialise(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


def _read_zip(path: str):
  with zipfile.ZipFile(path) as zf:
    pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise CheckpointFormatError(
          f"{path}: expected one data.pkl in the zip archive, found {pickles}.")
    root = pickles[0][:-len("data.pkl")]
    names = set(zf.namelist())
    if root + "byteorder" in names and zf.read(root + "byteorder").strip() != b"little":
      raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported.")

    def storage_bytes(key):
      member = f"{root}data/{key}"
      if member not in names:
        raise CheckpointFormatError(f"{path}: missing storage member {member}.")
      return zf.read(member)

    unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pickles[0])), path, storage_bytes)
    return _materialise(unpickler.load())


def _read_legacy(path: str):
  with open(path, "rb") as f:
    stream = io.BytesIO(f.read())

  def header():
    return _RestrictedUnpickler(stream, path).load()

  try:
    magic = header()
  except UnsafeCheckpointError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise CheckpointFormatError(
        f"{path}: neither a torch zip archive nor a legacy torch checkpoint ({e}).") from e
  if magic != _LEGACY_MAGIC:
    raise CheckpointFormatError(f"{path}: not a zip archive and no legacy torch magic number.")
  protocol = header()
  if protocol != _LEGACY_PROTOCOL:
    raise CheckpointFormatError(f"{path}: legacy protocol {protocol}, expected {_LEGACY_PROTOCOL}.")
  sys_info = header()
  if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
    raise CheckpointFormatError(f"{path}: big-endian or unknown sys info {sys_info!r}.")
  unpickler = _RestrictedUnpickler(stream, path)
  obj = unpickler.load()
  keys = header()
  if not isinstance(keys, list) or set(map(str, keys)) != set(unpickler.storages):
    raise CheckpointFormatError(
        f"{path}: the storage key list does not match the storages the pickle uses.")
  for key in keys:
    storage = unpickler.storages[str(key)]
    (numel,) = struct.unpack("<q", stream.read(8))
    if numel != storage.numel:
      raise CheckpointFormatError(
          f"{path}: storage {key} has {numel} elements on disk, {storage.numel} in the pickle.")
    storage.fill(stream.read(numel * storage.stype.dtype.itemsize), path)
  if stream.read(1):
    raise CheckpointFormatError(f"{path}: trailing bytes after the last storage record.")
  return _materialise(obj)


def read_checkpoint(path: str | os.PathLike) -> Any:
  """Unpickles `path` safely; tensors become numpy arrays, qint8 ones `QTensor`."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist.")
  if zipfile.is_zipfile(path):
    return _read_zip(path)
  return _read_legacy(path)


_STATE_DICT_KEYS = ("state_dict", "net_state_dict", "model_state_dict", "model")


def _find_state_dict(obj, path):
  def is_state_dict(d):
    return isinstance(d, dict) and d and all(isinstance(k, str) for k in d) and all(
        isinstance(v, (np.ndarray, QTensor, tuple, _Marker)) for v in d.values())

  if is_state_dict(obj):
    return obj
  if isinstance(obj, dict):
    for key in _STATE_DICT_KEYS:
      if is_state_dict(obj.get(key)):
        return obj[key]
  raise CheckpointFormatError(
      f"{path}: no state_dict found (top level, or under one of {_STATE_DICT_KEYS}).")


def _unpack(raw: dict, path) -> dict[str, np.ndarray]:
  """Flattens quantised Linear layers into plain float `.weight` / `.bias`."""
  out = {}
  packed_suffix = "._packed_params._packed_params"
  for key, value in raw.items():
    if key.endswith(packed_suffix):
      layer = key[:-len(packed_suffix)]
      weight, bias = value
      if not isinstance(weight, QTensor):
        raise CheckpointFormatError(f"{path}: {key} does not hold a quantised weight.")
      out[layer + ".weight"] = weight.dequantize()
      if bias is not None:
        out[layer + ".bias"] = np.asarray(bias, np.float32)
    elif key.endswith("._packed_params.dtype"):
      if value is not QINT8:
        raise CheckpointFormatError(f"{path}: {key} is {value!r}, only qint8 is supported.")
    elif (key.endswith(".scale") or key.endswith(".zero_point")) and (
        key.rsplit(".", 1)[0] + packed_suffix in raw):
      continue  # output qparams of a dynamic quantised Linear: unused
    elif isinstance(value, QTensor):
      out[key] = value.dequantize()
    elif isinstance(value, np.ndarray):
      out[key] = value
    else:
      raise CheckpointFormatError(f"{path}: {key} holds {type(value).__name__}, not a tensor.")
  return out


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The checkpoint's state_dict as numpy arrays in torch layouts.

  qint8 weights are dequantised per tensor to float32; a dynamically quantised
  Linear ``L`` (keys ``L.scale``, ``L.zero_point``, ``L._packed_params.*``)
  becomes ``L.weight`` (out, in) and ``L.bias`` (out,).
  """
  return _unpack(_find_state_dict(read_checkpoint(path), path), path)


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """torch conv weight (O, I/groups, kh, kw) -> lax HWIO (kh, kw, I/groups, O)."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def dense_kernel(w: np.ndarray) -> np.ndarray:
  """torch Linear weight (out, in) -> (in, out), for ``x @ kernel``."""
  return np.ascontiguousarray(w.T)


def conv_params(sd: dict[str, np.ndarray], prefix: str = "") -> dict[str, jax.Array]:
  """A conv-net state_dict as float32 JAX params: keys without `prefix`, 4-d conv
  kernels in HWIO, BatchNorm's `num_batches_tracked` counters dropped."""
  return {key[len(prefix):]: jnp.asarray(conv_kernel(v) if v.ndim == 4 else v, jnp.float32)
          for key, v in sd.items() if not key.endswith(".num_batches_tracked")}
