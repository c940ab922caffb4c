"""The TF.js graph-model importer: against TF.js itself and an independent numpy forward.

References:
  * tests/golden/hse_faceres_tfjs.npz: HSE faceres run by TensorFlow.js
    (pure-JS CPU backend) on seeded noise (benchmarks/tfjs_golden.py made it);
  * `_numpy_forward`: a second, separate reading of the graph written here in
    numpy (own weight decoding, im2col convolutions, own 'SAME' padding).
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax import paths
from opom_jax.models.importers import tfjs_import

MODEL = "hse_faceres_tfjs/faceres.json"
OUTPUTS = ("global_pooling/Mean", "age_pred/Softmax", "gender_pred/Sigmoid")
GOLDEN = pathlib.Path(__file__).parent / "golden" / "hse_faceres_tfjs.npz"


def mulberry32_noise(seed: int, shape) -> np.ndarray:
  """floor(256 u) - 128 for the first prod(shape) draws u of mulberry32(seed) (tfjs_golden.js)."""
  n = int(np.prod(shape))
  with np.errstate(over="ignore"):
    # mulberry32's state after draw i is seed + i * 0x6D2B79F5, so every draw is independent.
    a = np.uint32(seed) + np.arange(1, n + 1, dtype=np.uint32) * np.uint32(0x6D2B79F5)
    t = (a ^ (a >> np.uint32(15))) * (a | np.uint32(1))
    t = (t + (t ^ (t >> np.uint32(7))) * (t | np.uint32(61))) ^ t
    u = (t ^ (t >> np.uint32(14))).astype(np.float64) / 2.0**32
  return (np.floor(256 * u) - 128).astype(np.float32).reshape(shape)


# ------------------------------------------------------- independent numpy forward

def _np_weights(model_json: pathlib.Path) -> dict:
  spec = json.loads(model_json.read_text())
  out = {}
  for group in spec["weightsManifest"]:
    buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
    pos = 0
    for w in group["weights"]:
      count = int(np.prod(w["shape"]))
      kind = (w.get("quantization") or {}).get("dtype", w["dtype"])
      dtype = {"float16": "<f2", "float32": "<f4", "int32": "<i4"}[kind]
      arr = np.frombuffer(buf[pos:pos + count * np.dtype(dtype).itemsize], dtype)
      pos += arr.nbytes
      out[w["name"]] = arr.reshape(w["shape"]).astype(np.float32 if kind != "int32" else np.int32)
  return out


def _same_pads(size, k, s):
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _patches(x, kh, kw, s, pads):
  """(N,H,W,C) -> (N,Ho,Wo,kh,kw,C) windows after zero padding."""
  (pt, pb), (pl, pr) = pads
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = (xp.shape[1] - kh) // s + 1, (xp.shape[2] - kw) // s + 1
  idx_h = (np.arange(ho) * s)[:, None] + np.arange(kh)[None]   # (Ho, kh)
  idx_w = (np.arange(wo) * s)[:, None] + np.arange(kw)[None]   # (Wo, kw)
  return xp[:, idx_h[:, None, :, None], idx_w[None, :, None, :], :]


def _np_conv(x, w, node, depthwise):
  attr = node["attr"]
  s = int(attr["strides"]["list"]["i"][1])
  assert attr["padding"]["s"] == "U0FNRQ=="   # 'SAME', the only padding this graph uses
  kh, kw = w.shape[:2]
  pads = (_same_pads(x.shape[1], kh, s), _same_pads(x.shape[2], kw, s))
  cols = _patches(x, kh, kw, s, pads)
  if depthwise:   # (kh, kw, C, 1)
    return np.einsum("nhwijc,ijc->nhwc", cols, w[..., 0])
  return np.einsum("nhwijc,ijcd->nhwd", cols, w)


def _numpy_forward(model_json: pathlib.Path, x: np.ndarray, outputs) -> list[np.ndarray]:
  spec = json.loads(model_json.read_text())
  env = dict(_np_weights(model_json))
  for node in spec["modelTopology"]["node"]:
    op, name = node["op"], node["name"]
    args = [env[i] for i in node.get("input", [])]
    if op == "Const":
      continue
    if op == "Placeholder":
      env[name] = x
    elif op == "Conv2D":
      env[name] = _np_conv(args[0], args[1], node, depthwise=False)
    elif op == "DepthwiseConv2dNative":
      env[name] = _np_conv(args[0], args[1], node, depthwise=True)
    elif op == "Add":
      env[name] = args[0] + args[1]
    elif op == "Mul":
      env[name] = args[0] * args[1]
    elif op == "Relu":
      env[name] = np.maximum(args[0], 0)
    elif op == "Minimum":
      env[name] = np.minimum(args[0], args[1])
    elif op == "Maximum":
      env[name] = np.maximum(args[0], args[1])
    elif op == "Mean":
      env[name] = args[0].mean(axis=tuple(args[1]))
    elif op == "_FusedMatMul":   # BiasAdd, then Relu where listed
      y = args[0] @ args[1] + args[2]
      env[name] = np.maximum(y, 0) if len(node["attr"]["fused_ops"]["list"]["s"]) == 2 else y
    elif op == "Sigmoid":
      env[name] = 1 / (1 + np.exp(-args[0]))
    elif op == "Softmax":
      e = np.exp(args[0] - args[0].max(-1, keepdims=True))
      env[name] = e / e.sum(-1, keepdims=True)
    else:
      raise AssertionError(f"reference has no op {op}")
  return [env[o] for o in outputs]


# ------------------------------------------------------------------------ tests

@pytest.fixture(scope="module")
def faceres():
  params, graph = tfjs_import.parse_tfjs(paths.model_file(MODEL), OUTPUTS)
  return params, jax.jit(tfjs_import.make_apply(graph)), graph


def test_weights_decode_float16_and_graph_shape(faceres):
  params, _, graph = faceres
  # 27 conv layers (1 stem + 13 depthwise + 13 pointwise), each with a folded-BN shift
  # and a relu6 pair of scalars, plus 3 dense layers (kernel, bias).
  assert sum(v.ndim == 4 for v in params.values()) == 27
  assert params["feats/kernel"].shape == (1024, 256) and params["feats/kernel"].dtype == jnp.float32
  # float16 storage: every weight is exactly a half-precision value.
  w = np.asarray(params["conv_pw_13/convolution/merged_input"])
  np.testing.assert_array_equal(w.astype(np.float16).astype(np.float32), w)
  assert graph.static["global_pooling/Mean/reduction_indices"].tolist() == [1, 2]


def test_matches_tfjs_golden(faceres):
  params, apply, _ = faceres
  golden = np.load(GOLDEN)
  x = mulberry32_noise(int(golden["seed"]), (int(golden["batch"]), 224, 224, 3))
  ys = apply(params, x)
  for name, y in zip(OUTPUTS, ys):
    ref = golden[name.replace("/", "__")]
    assert y.shape == ref.shape
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(),
                               err_msg=name)
  assert np.abs(golden["global_pooling__Mean"]).max() > 0.1   # a live descriptor, not zeros


def test_matches_numpy_forward(faceres):
  params, apply, _ = faceres
  x = np.random.default_rng(7).uniform(-120, 150, (2, 224, 224, 3)).astype(np.float32)
  refs = _numpy_forward(paths.model_file(MODEL), x, OUTPUTS)
  for name, y, ref in zip(OUTPUTS, apply(params, x), refs):
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(),
                               err_msg=name)


# ----------------------------------------------------- a tiny synthetic graph model

def _tiny_model(tmp_path, ops_extra=(), shard_bytes_cut=0):
  """x -> conv 3x3 s2 (stem) -> *0.5 -> + conv 1x1 (residual) -> mean, weights in float16/uint8."""
  rng = np.random.default_rng(0)
  w1 = rng.normal(size=(3, 3, 2, 4)).astype(np.float16)
  w2 = rng.integers(0, 256, size=(1, 1, 4, 4)).astype(np.uint8)
  half = np.float16(0.5)
  data = w1.tobytes() + w2.tobytes() + half.tobytes() + np.array([1, 2], "<i4").tobytes()
  (tmp_path / "w.bin").write_bytes(data[:len(data) - shard_bytes_cut])
  attr = {"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": {"s": "U0FNRQ=="},
          "data_format": {"s": "TkhXQw=="}}
  unit = {"strides": {"list": {"i": ["1", "1", "1", "1"]}}, "padding": {"s": "VkFMSUQ="}}
  nodes = [
      {"name": "x", "op": "Placeholder"},
      {"name": "w1", "op": "Const"}, {"name": "w2", "op": "Const"},
      {"name": "half", "op": "Const"}, {"name": "axes", "op": "Const"},
      {"name": "c1", "op": "Conv2D", "input": ["x", "w1"], "attr": attr},
      {"name": "c2", "op": "Conv2D", "input": ["c1:0", "w2"], "attr": unit},
      {"name": "s2", "op": "Mul", "input": ["c2", "half"]},
      {"name": "res", "op": "AddV2", "input": ["c1", "s2", "^c2"]},
      {"name": "out", "op": "Mean", "input": ["res", "axes"], "attr": {"keep_dims": {"b": False}}},
      *ops_extra,
  ]
  q16 = {"dtype": "float16", "original_dtype": "float32"}
  manifest = [{"paths": ["w.bin"], "weights": [
      {"name": "w1", "shape": [3, 3, 2, 4], "dtype": "float32", "quantization": q16},
      {"name": "w2", "shape": [1, 1, 4, 4], "dtype": "float32",
       "quantization": {"dtype": "uint8", "scale": 0.01, "min": -1.0, "original_dtype": "float32"}},
      {"name": "half", "shape": [], "dtype": "float32", "quantization": q16},
      {"name": "axes", "shape": [2], "dtype": "int32"}]}]
  path = tmp_path / "model.json"
  path.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": nodes},
                              "weightsManifest": manifest}))
  return path, w1.astype(np.float32), -1.0 + 0.01 * w2.astype(np.float32)


def test_tiny_model_decoding_padding_and_residual_dropout_sites(tmp_path):
  path, w1, w2 = _tiny_model(tmp_path)
  params, graph = tfjs_import.parse_tfjs(path, ("out",))
  np.testing.assert_array_equal(np.asarray(params["w1"]), w1)
  np.testing.assert_allclose(np.asarray(params["w2"]), w2, rtol=1e-6)
  # Both convs are sites: c1 reads the input (stem), c2 reaches the residual AddV2 via a Mul.
  assert graph.dropout_nodes == frozenset({5, 6})
  x = np.random.default_rng(1).normal(size=(2, 7, 7, 2)).astype(np.float32)
  c1 = _np_conv(x, w1, {"attr": {"strides": {"list": {"i": ["1", "2", "2", "1"]}},
                                 "padding": {"s": "U0FNRQ=="}}}, depthwise=False)
  ref = (c1 + 0.5 * np.einsum("nhwc,cd->nhwd", c1, w2[0, 0])).mean(axis=(1, 2))
  apply = tfjs_import.make_apply(graph)
  np.testing.assert_allclose(np.asarray(apply(params, x)), ref, rtol=1e-5, atol=1e-5)
  dropped = apply(params, x, dropout_rate=0.5, rng=jax.random.key(0))
  assert not np.allclose(np.asarray(dropped), ref)


def test_tiny_model_errors_name_the_file(tmp_path):
  path, _, _ = _tiny_model(tmp_path, shard_bytes_cut=4)
  with pytest.raises(ValueError, match=f"{path}.*w.bin"):
    tfjs_import.parse_tfjs(path, ("out",))
  path, _, _ = _tiny_model(tmp_path, ops_extra=[{"name": "odd", "op": "Erf", "input": ["out"]}])
  with pytest.raises(NotImplementedError, match=f"{path}.*Erf"):
    tfjs_import.parse_tfjs(path, ("odd",))
  with pytest.raises(ValueError, match="no op node named"):
    tfjs_import.parse_tfjs(path, ("nope",))
