"""The JAX import of the y1 MobileFaceNet .tflite against LiteRT itself."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax import paths
from opom_jax.models.importers import tflite_import
from opom_jax.models.networks import y1_mobilefacenet
from opom_jax.runtimes import litert_runtime

N_FACES = 16


@pytest.fixture(scope="module")
def faces(aligned_lfw):
  """Real ArcFace-aligned LFW faces (3 people x 6 photos), the first N_FACES."""
  return np.concatenate(list(aligned_lfw.values()))[:N_FACES]


@pytest.fixture(scope="module")
def y1():
  params, apply = y1_mobilefacenet.load_y1()
  return params, jax.jit(apply, static_argnames="dropout_rate")


def _unit(v):
  return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_op_list():
  ops = tflite_import.op_list(paths.model_file(y1_mobilefacenet.Y1_FILE))
  assert len(ops) == 213
  assert collections.Counter(ops) == {
      "ADD": 45, "MUL": 34, "MAXIMUM": 33, "MINIMUM": 33, "CONV_2D": 32,
      "PAD": 17, "DEPTHWISE_CONV_2D": 17, "SUB": 1, "FULLY_CONNECTED": 1}


def test_matches_litert(faces, y1):
  params, apply = y1
  ref = litert_runtime.y1_runtime().embed(faces)
  emb = np.asarray(apply(params, jnp.asarray(faces, jnp.float32)))
  assert emb.shape == (N_FACES, 128)
  got = _unit(emb)
  cos = np.sum(got * ref, axis=1)
  print(f"y1 JAX vs LiteRT: min cos {cos.min():.8f}, "
        f"max |diff| {np.abs(got - ref).max():.2e}")
  assert cos.min() >= 0.9999
  assert np.abs(got - ref).max() < 1e-3
  # Different people must not collapse onto one embedding.
  off = (ref @ ref.T)[~np.eye(N_FACES, dtype=bool)]
  assert off.max() < 0.9
  # Batched and one-at-a-time agree (the export fixes batch 1).
  one = np.asarray(apply(params, jnp.asarray(faces[3:4], jnp.float32)))
  np.testing.assert_allclose(one[0], emb[3], rtol=1e-4, atol=1e-4)


def test_input_gradient(faces, y1):
  params, apply = y1
  x = jnp.asarray(faces[:2], jnp.float32)
  target = jnp.asarray(_unit(np.asarray(apply(params, x)))[::-1])

  def loss(x):
    e = apply(params, x)
    return jnp.sum(e / jnp.linalg.norm(e, axis=1, keepdims=True) * target)

  g = np.asarray(jax.grad(loss)(x))
  assert g.shape == x.shape
  assert np.all(np.isfinite(g))
  assert np.abs(g).max() > 0
  assert np.mean(g != 0) > 0.5  # the whole face matters, not a few pixels


def test_dropout(faces, y1):
  params, apply = y1
  x = jnp.asarray(faces[:2], jnp.float32)
  clean = np.asarray(apply(params, x))
  k1, k2 = jax.random.key(1), jax.random.key(2)
  a = np.asarray(apply(params, x, dropout_rate=0.1, rng=k1))
  a_again = np.asarray(apply(params, x, dropout_rate=0.1, rng=k1))
  b = np.asarray(apply(params, x, dropout_rate=0.1, rng=k2))
  zero = np.asarray(apply(params, x, dropout_rate=0.0, rng=k1))
  np.testing.assert_array_equal(a, a_again)
  np.testing.assert_array_equal(zero, clean)
  assert not np.allclose(a, clean, atol=1e-3)
  assert not np.allclose(a, b, atol=1e-3)
  # Less dropout stays closer to the clean surrogate (the residual sites keep
  # about 0.69 cosine at 0.1; see the tflite_import docstring).
  light = np.asarray(apply(params, x, dropout_rate=0.01, rng=k1))
  cos_light = np.sum(_unit(light) * _unit(clean), axis=1)
  cos_heavy = np.sum(_unit(a) * _unit(clean), axis=1)
  print(f"dropout cos to clean: rate 0.01 {cos_light}, rate 0.1 {cos_heavy}")
  assert np.all(cos_light > 0.8)
  assert np.all(cos_light > cos_heavy)
  # An empty dropout_ops set turns DFANet off whatever the rate.
  params_g, apply_graph = tflite_import.load_tflite(
      paths.model_file(y1_mobilefacenet.Y1_FILE), dropout_ops=())
  (none,) = jax.jit(apply_graph, static_argnames="dropout_rate")(
      params_g, x, dropout_rate=0.1, rng=k1)
  np.testing.assert_allclose(np.asarray(none), clean, rtol=1e-6, atol=1e-6)


def test_same_padding_puts_extra_on_bottom_right():
  assert tflite_import._same_pads(112, 3, 2, 1) == (0, 1)
  assert tflite_import._same_pads(113, 3, 2, 1) == (1, 1)
  assert tflite_import._same_pads(7, 7, 1, 1) == (3, 3)
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 2))  # OHWI
  opts = dict(strideH=2, strideW=2, dilationHFactor=1, dilationWFactor=1,
              fusedActivationFunction=0)
  same = tflite_import._conv_2d([x, w, None], dict(opts, padding=0))
  valid = tflite_import._conv_2d(
      [jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))), w, None],
      dict(opts, padding=1))
  np.testing.assert_allclose(same, valid, rtol=1e-6, atol=1e-6)


def test_depthwise_multiplier_layout():
  # y1 only uses multiplier 1; check the c * M + m channel order on M = 2
  # against a direct loop.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
  w = rng.normal(size=(1, 3, 3, 6)).astype(np.float32)
  b = rng.normal(size=(6,)).astype(np.float32)
  opts = dict(strideH=1, strideW=1, dilationHFactor=1, dilationWFactor=1,
              depthMultiplier=2, padding=1, fusedActivationFunction=3)
  got = np.asarray(tflite_import._depthwise_conv_2d([x, w, b], opts))
  want = np.zeros((2, 3, 3, 6), np.float32)
  for c in range(3):
    for m in range(2):
      o = c * 2 + m
      for i in range(3):
        for j in range(3):
          want[:, i, j, o] = np.sum(x[:, i:i + 3, j:j + 3, c] * w[0, :, :, o],
                                    axis=(1, 2)) + b[o]
  np.testing.assert_allclose(got, np.clip(want, 0, 6), rtol=1e-5, atol=1e-5)


def test_runtime_rejects_float_input(faces):
  runtime = litert_runtime.y1_runtime()
  with pytest.raises(ValueError, match="uint8"):
    runtime.embed(faces.astype(np.float32))
  out = runtime.embed(faces[:2])
  assert out.dtype == np.float32 and out.shape == (2, 128)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
