"""IResNet-18/50: shapes, parameter counts, checkpoints, DFANet, torch-twin golden."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax.models.networks import iresnet
from golden import goldens


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


@functools.cache
def _r18():
  """Seeded variables with non-trivial BN statistics and PReLU slopes."""
  return goldens.recipe().iresnet18_variables()


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
  apply = iresnet.iresnet_apply(18)
  graph = lambda **kw: str(jax.make_jaxpr(
      lambda p, v: apply(p, v, **kw))(variables, x))
  # Rate 0, or (the base contract) no key: the clean program itself. Compared
  # as programs, which is cheaper than compiling each one.
  assert graph(dropout_rate=0.0, rng=jax.random.key(1)) == graph() == graph(dropout_rate=0.1)
  assert graph(dropout_rate=0.1, rng=jax.random.key(1)) != graph()
  clean = apply18(variables, x)
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


def test_signed_input_step_moves_the_loss_both_ways(apply18):
  """The input gradient points uphill: +sign(grad) raises the loss, -sign lowers it."""
  apply = iresnet.iresnet_apply(18)
  variables, x = _r18(), _batch()
  target = apply18(variables, _batch(seed=1))

  @jax.jit
  def loss_and_grad(variables, x):
    return jax.value_and_grad(lambda x: jnp.sum((apply(variables, x) - target) ** 2))(x)

  loss, g = loss_and_grad(variables, x)
  assert g.shape == x.shape and np.all(np.isfinite(g))
  step = jnp.sign(g)  # one pixel level, the attack's step size
  up, _ = loss_and_grad(variables, x + step)
  down, _ = loss_and_grad(variables, x - step)
  assert down < loss < up, (down, loss, up)


def test_matches_the_torch_twin_golden(apply18):
  """Same seeded variables and synthetic images as the stored PyTorch twin outputs."""
  golden = goldens.load("iresnet18_twin")
  variables = _r18()
  np.testing.assert_allclose(
      goldens.recipe().param_fingerprint(variables), golden["param_fingerprint"],
      rtol=1e-6, err_msg="the seeded Flax init changed: regenerate the golden")
  images = goldens.images(golden)
  goldens.assert_embeddings_match(apply18(variables, jnp.asarray(images)),
                                  golden["embeddings"])
