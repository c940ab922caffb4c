"""The ONNX importer against onnxruntime on real LFW faces.

Faces: two photos each of eight LFW people, aligned to the ArcFace template
(dlib landmarks + similarity warp), as the pipeline feeds the models.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax import paths
from opom_jax.data import align
from opom_jax.models import base
from opom_jax.models.importers import onnx_import
from opom_jax.models.networks import onnx_mobilefacenets
from opom_jax.runtimes import onnx_runtime

PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld",
          "Gerhard_Schroeder", "Ariel_Sharon", "Hugo_Chavez", "Junichiro_Koizumi")


@pytest.fixture(scope="module")
def faces(lfw_root):
  crops = [align.align_file(lfw_root / person / f"{person}_{k:04d}.jpg").crop
           for person in PEOPLE for k in (1, 2)]
  return np.stack(crops)   # (16, 112, 112, 3) uint8


@pytest.fixture(scope="module")
def foamliu():
  return onnx_mobilefacenets.load_foamliu()


@pytest.fixture(scope="module")
def w600k():
  return onnx_mobilefacenets.load_w600k()


def _embed_fn(apply):
  return jax.jit(lambda p, x: base.l2_normalize(apply(p, x)))


def test_foamliu_matches_onnxruntime_batched(faces, foamliu):
  params, apply = foamliu
  ours = np.asarray(_embed_fn(apply)(params, faces.astype(np.float32)))
  target = onnx_runtime.foamliu_runtime()
  theirs = target.embed(faces)
  assert ours.shape == theirs.shape == (16, 128)
  assert np.abs(ours - theirs).max() <= 1e-4
  # The in-memory dynamic-batch edit changes nothing per image.
  one_by_one = onnx_runtime.foamliu_runtime(one_image_per_run=True).embed(faces[:3])
  np.testing.assert_allclose(theirs[:3], one_by_one, atol=1e-5)


def test_batched_runtime_embeds_in_chunks_with_the_same_result(faces, monkeypatch):
  target = onnx_runtime.foamliu_runtime()
  whole = target.embed(faces)
  calls = []
  run = target.session.run
  monkeypatch.setattr(onnx_runtime, "BATCH", 5)
  monkeypatch.setattr(target, "session", type("Counting", (), {
      "run": staticmethod(lambda out, feed: calls.append(len(feed[target.input_name])) or run(out, feed))})())
  chunked = target.embed(faces)
  assert calls == [5, 5, 5, 1]  # 16 photos, at most BATCH per run
  np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_w600k_is_dequantised_float_graph():
  ops = onnx_import.op_list(paths.model_file(onnx_mobilefacenets.W600K_FILE))
  assert "FusedConv" in ops and "FusedMatMul" in ops
  assert not {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "Cast"} & set(ops)


def test_w600k_close_to_onnxruntime_one_image_per_run(faces, w600k):
  params, apply = w600k
  ours = np.asarray(_embed_fn(apply)(params, faces.astype(np.float32)))
  theirs = onnx_runtime.w600k_runtime().embed(faces)
  assert ours.shape == theirs.shape == (16, 512)
  cos = np.sum(ours * theirs, axis=1)
  print(f"w600k JAX vs onnxruntime cosine: min {cos.min():.4f} mean {cos.mean():.4f}")
  assert cos.min() >= 0.99
  # Sanity that the agreement is about identity: same person scores above others.
  sim = ours @ ours.T
  assert np.mean([sim[2 * i, 2 * i + 1] for i in range(8)]) > sim[::2, ::2][~np.eye(8, dtype=bool)].mean() + 0.3


def test_runtime_rejects_non_uint8(faces):
  target = onnx_runtime.foamliu_runtime()
  with pytest.raises(ValueError, match="uint8"):
    target.embed(faces.astype(np.float32))


@pytest.mark.parametrize("model,dim", [("foamliu", 128), ("w600k", 512)])
def test_gradient_wrt_input_is_finite_and_ascends(faces, model, dim, request):
  params, apply = request.getfixturevalue(model)
  x = jnp.asarray(faces[:2], jnp.float32)
  direction = jax.random.normal(jax.random.PRNGKey(0), (2, dim))
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda x: jnp.sum(base.l2_normalize(apply(params, x)) * direction)))
  value, grad = value_and_grad(x)
  grad = np.asarray(grad)
  assert np.isfinite(grad).all() and np.abs(grad).max() > 0
  # A one-pixel signed step along the gradient must raise the objective.
  assert value_and_grad(x + np.sign(grad))[0] > value + 1e-3


def test_dropout_is_keyed_and_rate_zero_is_exact(faces, foamliu):
  params, apply = foamliu
  x = jnp.asarray(faces[:2], jnp.float32)
  drop = jax.jit(lambda x, rate, rng: apply(params, x, dropout_rate=rate, rng=rng),
                 static_argnums=1)
  key = jax.random.PRNGKey(3)
  clean = np.asarray(jax.jit(lambda x: apply(params, x))(x))
  a, b = np.asarray(drop(x, 0.1, key)), np.asarray(drop(x, 0.1, key))
  c = np.asarray(drop(x, 0.1, jax.random.PRNGKey(4)))
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - clean).max() > 1e-2 and np.abs(a - c).max() > 1e-2
  np.testing.assert_array_equal(np.asarray(drop(x, 0.0, key)), clean)


def test_w600k_literal_quantised_mode_tracks_onnxruntime(faces):
  # dequantize=False runs DynamicQuantizeLinear / ConvInteger / MatMulInteger as
  # written; only rounding ties (XLA's division is not IEEE-exact) separate it
  # from onnxruntime, whose int8 chain then amplifies them.
  params, apply = onnx_mobilefacenets.load_w600k(dequantize=False)
  embed = _embed_fn(apply)
  ours = np.concatenate([np.asarray(embed(params, faces[i:i + 1].astype(np.float32)))
                         for i in range(3)])
  theirs = onnx_runtime.w600k_runtime().embed(faces[:3])
  assert np.sum(ours * theirs, axis=1).min() >= 0.99
  with pytest.raises(ValueError, match="dequantize=True"):
    apply(params, faces[:1].astype(np.float32), dropout_rate=0.1, rng=jax.random.PRNGKey(0))
