"""The attack's losses: formulas, padding, the convex-hull warm-up, and envelope gradients (cvxpy oracle)."""
import functools

import cvxpy as cp
import jax
import numpy as np
import pytest

from opom_jax.attack import losses


@pytest.fixture(autouse=True, scope="module")
def float64():
  """Finite differences against cvxpy need float64; restored for the other test modules."""
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@functools.cache
def _value_and_grad(name):
  """Compiled once per loss: the hull solvers' loops run op by op for tens of seconds otherwise."""
  return jax.jit(jax.value_and_grad(losses.LOSSES.get(name)))


def _features(seed, n=6, d=24):
  rng = np.random.default_rng(seed)
  centre = rng.normal(size=d)
  clean = centre + 0.7 * rng.normal(size=(n, d))
  adv = clean + 0.8 * rng.normal(size=(n, d))
  return adv, clean


def _hull_distance_cvxpy(points, y, affine=False):
  w = cp.Variable(len(points))
  cons = [cp.sum(w) == 1] + ([] if affine else [w >= 0])
  prob = cp.Problem(cp.Minimize(cp.sum_squares(points.T @ w - y)), cons)
  prob.solve(solver=cp.CLARABEL)
  return prob.value


def test_formulas_match_the_reference_definitions():
  adv, clean = _features(0)
  valid = np.ones(len(adv), bool)
  y, c = _unit(adv), _unit(clean)
  n, d = y.shape
  assert losses.fi_uap(adv, clean, valid, 0) == pytest.approx(np.mean((y - c) ** 2))
  assert losses.fi_uap_plus(adv, clean, valid, 0) == pytest.approx(-np.mean(y @ c.T))
  assert losses.class_center(adv, clean, valid, 0) == pytest.approx(np.mean((y - c.mean(0)) ** 2))


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_padded_photos_change_nothing(name):
  adv, clean = _features(1)
  valid = np.ones(len(adv), bool)
  rng = np.random.default_rng(5)
  pad_adv = np.concatenate([adv, rng.normal(size=(3, adv.shape[1]))])
  pad_clean = np.concatenate([clean, rng.normal(size=(3, adv.shape[1]))])
  pad_valid = np.concatenate([valid, np.zeros(3, bool)])
  step = 7  # past the convex hull's warm-up
  value, grad = _value_and_grad(name)(adv, clean, valid, step)
  pvalue, pgrad = _value_and_grad(name)(pad_adv, pad_clean, pad_valid, step)
  np.testing.assert_allclose(pvalue, value, rtol=1e-6)
  np.testing.assert_allclose(pgrad[:len(adv)], grad, rtol=1e-5, atol=1e-10)
  np.testing.assert_array_equal(pgrad[len(adv):], 0.0)


def test_convex_hull_warms_up_with_the_class_centre():
  adv, clean = _features(2)
  valid = np.ones(len(adv), bool)
  cc = losses.class_center(adv, clean, valid, 0)
  hull = _value_and_grad("convex_hull")  # nter=5 by default; the step is traced
  assert hull(adv, clean, valid, 4)[0] == pytest.approx(cc)
  after, _ = hull(adv, clean, valid, 5)
  # The hull contains the centre, so the distance to it is smaller.
  assert after < cc - 1e-6


@pytest.mark.parametrize("name,affine", [("convex_hull", False), ("affine_hull", True)])
def test_hull_loss_is_the_true_distance_and_its_gradient(name, affine):
  adv, clean = _features(3, n=5, d=12)
  valid = np.ones(len(adv), bool)
  fn = lambda a: losses.LOSSES.get(name)(a, clean, valid, 10, nter=0)
  c = _unit(clean)

  def true_loss(a):
    y = _unit(a)
    return np.mean([_hull_distance_cvxpy(c, yi, affine) for yi in y]) / y.shape[1]

  value, grad = jax.jit(jax.value_and_grad(fn))(adv)
  assert value == pytest.approx(true_loss(adv), rel=1e-6, abs=1e-12)
  grad = np.asarray(grad)
  rng = np.random.default_rng(4)
  for _ in range(3):  # directional derivatives against finite differences of the cvxpy distance
    direction = rng.normal(size=adv.shape)
    h = 1e-4
    fd = (true_loss(adv + h * direction) - true_loss(adv - h * direction)) / (2 * h)
    assert np.sum(grad * direction) == pytest.approx(fd, rel=2e-3, abs=1e-8)


def test_unknown_loss_names_the_choices():
  with pytest.raises(KeyError, match="convex_hull"):
    losses.LOSSES.get("convex")


def test_reduced_convex_hull_is_the_distance_to_the_capped_hull():
  """Weights capped at reduced_upper (cvxpy oracle): farther than the full hull, not the same."""
  adv, clean = _features(5, n=5, d=12)
  valid = np.ones(len(adv), bool)
  c, y = _unit(clean), _unit(adv)

  def capped_distance(yi, cap):
    w = cp.Variable(len(c))
    cp.Problem(cp.Minimize(cp.sum_squares(c.T @ w - yi)),
               [cp.sum(w) == 1, w >= 0, w <= cap]).solve()
    return np.sum((c.T @ w.value - yi) ** 2)

  reduced = losses.LOSSES.get("reduced_convex_hull")(adv, clean, valid, 10, nter=0,
                                                     reduced_upper=0.3)
  full = losses.LOSSES.get("convex_hull")(adv, clean, valid, 10, nter=0)
  expected = np.mean([capped_distance(yi, 0.3) for yi in y]) / y.shape[1]
  assert float(reduced) == pytest.approx(expected, rel=1e-5)
  assert float(reduced) > float(full) * 1.01
