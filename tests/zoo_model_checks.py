"""Checks every zoo surrogate must pass, shared by the per-model test files."""
import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import base


def unit(e):
  e = np.asarray(e, np.float64)
  return e / np.linalg.norm(e, axis=1, keepdims=True)


def crops_and_labels(aligned_lfw):
  labels = np.concatenate([[i] * len(v) for i, v in enumerate(aligned_lfw.values())])
  return np.concatenate(list(aligned_lfw.values())), labels


def separation(emb, labels):
  """(pair AUC, mean cosine same person, mean cosine different people)."""
  cos = unit(emb) @ unit(emb).T
  iu = np.triu_indices(len(emb), 1)
  same = (labels[:, None] == labels[None])[iu]
  pos, neg = cos[iu][same], cos[iu][~same]
  auc = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
  return auc, pos.mean(), neg.mean()


def check_gradient_ascends(surrogate, x, clean):
  """The input gradient of the distance to the clean embedding is finite, non-zero, and a
  signed step along it raises the distance (x: (N,112,112,3) float, clean: unit (N, d))."""
  clean = jnp.asarray(clean, jnp.float32)

  def distance(v):
    return jnp.sum(1.0 - jnp.sum(surrogate.embed(v) * clean, -1))

  value_and_grad = jax.jit(jax.value_and_grad(distance))
  start = jnp.asarray(x, jnp.float32) + 0.5   # off the clean point, where the gradient is ~0
  value, grad = value_and_grad(start)
  grad = np.asarray(grad)
  assert np.isfinite(grad).all() and np.abs(grad).max() > 0
  assert value_and_grad(start + 2.0 * np.sign(grad))[0] > value + 1e-4


def count_dropout_sites(surrogate, monkeypatch) -> int:
  calls = []
  real = base.dropout

  def counting(x, rate, rng):
    calls.append(x.shape)
    return real(x, rate, rng)

  monkeypatch.setattr(base, "dropout", counting)
  jax.make_jaxpr(lambda v: surrogate.apply(surrogate.params, v, dropout_rate=0.1,
                                           rng=jax.random.key(0)))(jnp.zeros((1, 112, 112, 3)))
  monkeypatch.undo()
  return len(calls)


def check_dfanet(surrogate, x, clean):
  """Dropout is keyed (same key, same output), perturbs but keeps the face, and rate 0 or
  no key is exactly the deterministic graph."""
  x = jnp.asarray(x, jnp.float32)
  run = jax.jit(lambda v, rng: surrogate.apply(surrogate.params, v, dropout_rate=0.05, rng=rng))
  a, b = np.asarray(run(x, jax.random.key(1))), np.asarray(run(x, jax.random.key(1)))
  c = np.asarray(run(x, jax.random.key(2)))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  cos = np.sum(unit(a) * unit(clean), 1)
  print(f"{surrogate.name}: cos(dropout 0.05, clean) = {cos}")
  assert (cos > 0.3).all() and (cos < 0.9999).all(), cos
  trace = lambda **kw: str(jax.make_jaxpr(lambda v: surrogate.apply(surrogate.params, v, **kw))(x))
  assert trace(dropout_rate=0.0, rng=jax.random.key(1)) == trace() == trace(dropout_rate=0.1)
