"""IResNet-18/50: shapes, parameter counts, checkpoints, DFANet, torch twin."""
import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax.models.networks import iresnet

REPO = pathlib.Path(__file__).resolve().parent.parent


def _expected_param_count(layers, widths=(64, 128, 256, 512), emb=512):
  """Learnable parameters of insightface's IResNet, counted layer by layer."""
  bn = lambda c: 2 * c  # scale + bias
  n = 3 * 64 * 9 + bn(64) + 64  # stem conv3x3, BN, PReLU
  cin = 64
  for width, blocks in zip(widths, layers):
    for i in range(blocks):
      n += bn(cin) + cin * width * 9 + bn(width) + width
      n += width * width * 9 + bn(width)
      if i == 0:  # every stage starts with stride 2: 1x1 conv + BN shortcut
        n += cin * width + bn(width)
      cin = width
  return n + bn(512) + 512 * 7 * 7 * emb + emb + bn(emb)


def _perturb(variables, seed):
  """Non-trivial BN statistics, BN affine and PReLU slopes (init has 1s, 0s).

  numpy, not jax.random: one jitted sampler per leaf would take a minute to
  compile. Kernels are already random and stay as they are.
  """
  rs = np.random.default_rng(seed)

  def jitter(leaf):
    if leaf.ndim != 1:
      return leaf
    # Multiplicative noise keeps variances and scales positive.
    leaf = np.asarray(leaf) * rs.uniform(0.7, 1.3, leaf.shape)
    return jnp.asarray(leaf + 0.05 * rs.normal(size=leaf.shape), jnp.float32)

  variables = jax.tree.map(jitter, variables)
  variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])
  return variables


@functools.cache
def _r18():
  return _perturb(iresnet.init_iresnet(18, jax.random.key(7)), seed=8)


def _batch(n=2, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, 112, 112, 3),
                            maxval=255.0)


@pytest.fixture(scope="module")
def apply18():
  return jax.jit(iresnet.iresnet_apply(18),
                 static_argnames="dropout_rate")


def test_output_shape_and_dtype(apply18):
  y = apply18(_r18(), _batch())
  assert y.shape == (2, 512) and y.dtype == jnp.float32
  assert np.all(np.isfinite(y))
  # Different images, different embeddings.
  assert not np.allclose(y[0], y[1])


@pytest.mark.parametrize("depth, known", [(18, 24_025_600), (50, 43_590_848)])
def test_param_count_matches_insightface(depth, known):
  shapes = jax.eval_shape(functools.partial(iresnet.init_iresnet, depth),
                          jax.random.key(0))
  assert iresnet.param_count(shapes) == _expected_param_count(
      iresnet.LAYERS[depth]) == known


def test_rejects_wrong_input_shape():
  with pytest.raises(ValueError, match="112, 112, 3"):
    iresnet.iresnet_apply(18)(_r18(), jnp.zeros((1, 96, 112, 3)))
  with pytest.raises(ValueError, match="depth"):
    iresnet.iresnet_apply(34)


def test_orbax_round_trip(tmp_path, apply18):
  variables = _r18()
  iresnet.save_iresnet(variables, tmp_path / "r18")
  restored, apply = iresnet.load_iresnet(18, tmp_path / "r18")
  assert callable(apply)
  assert jax.tree.structure(restored) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  x = _batch()
  np.testing.assert_array_equal(apply18(restored, x), apply18(variables, x))
  with pytest.raises(FileNotFoundError, match="no orbax checkpoint"):
    iresnet.load_iresnet(18, tmp_path / "missing")


def test_dfanet_dropout(apply18):
  variables, x = _r18(), _batch()
  clean = apply18(variables, x)
  np.testing.assert_array_equal(
      apply18(variables, x, dropout_rate=0.0, rng=jax.random.key(1)), clean)
  # The base contract: no key, no dropout.
  np.testing.assert_array_equal(apply18(variables, x, dropout_rate=0.1), clean)
  a = apply18(variables, x, dropout_rate=0.1, rng=jax.random.key(1))
  b = apply18(variables, x, dropout_rate=0.1, rng=jax.random.key(1))
  c = apply18(variables, x, dropout_rate=0.1, rng=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, clean, atol=1e-3)
  assert not np.allclose(a, c, atol=1e-3)
  # p = 0.1 perturbs the surrogate, it does not replace it.
  cos = jnp.sum(a * clean, -1) / (
      jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(clean, axis=-1))
  assert np.all(cos > 0.5), cos


def test_input_gradient_finite(apply18):
  apply = iresnet.iresnet_apply(18)
  variables, x = _r18(), _batch()
  target = apply18(variables, _batch(seed=1))

  @jax.jit
  def grad(variables, x):
    loss = lambda x: jnp.sum((apply(variables, x) - target) ** 2)
    return jax.grad(loss)(x)

  g = grad(variables, x)
  assert g.shape == x.shape
  assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_torch_twin_matches_flax(apply18):
  pytest.importorskip("torch")
  spec = importlib.util.spec_from_file_location(
      "torch_reference", REPO / "benchmarks" / "torch_reference.py")
  ref = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref)
  import torch

  variables, x = _r18(), _batch(2)
  model = ref.build_torch_iresnet(18, variables)
  assert sum(p.numel() for p in model.parameters()) == iresnet.param_count(
      variables)
  with torch.no_grad():
    y_torch = model(ref.canonical_to_torch(np.asarray(x))).numpy()
  y_flax = np.asarray(apply18(variables, x))
  scale = np.abs(y_flax).max()
  np.testing.assert_allclose(y_torch / scale, y_flax / scale, atol=1e-4)
  # The twin's DFANet switch really drops.
  model.set_dropout_rate(0.1)
  with torch.no_grad():
    y_drop = model(ref.canonical_to_torch(np.asarray(x))).numpy()
  assert not np.allclose(y_drop, y_torch, atol=1e-3)
