"""opom_jax.attack.subspace against cvxpy (CLARABEL, tight tolerances, float64).

Objectives are compared as ||w @ A - y||^2 evaluated in float64 from each
solver's weights, on float32-representable data. Tolerance: 1e-6 relative
with an absolute floor -- 5e-8 for the float32 solver (its weights sum to 1
only to ~1e-7, which moves the point by ~1e-7 and the objective by about
2e-7 * distance, so near-zero optima, e.g. y inside the hull, cannot be
resolved relatively) and 1e-12 in float64.
"""
import functools

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from opom_jax.attack import capped_simplex_qp
from opom_jax.attack import subspace
from opom_jax.registry import UnknownNameError
from opom_jax.runtimes import onnx_runtime

ATOL32, ATOL64, RTOL = 5e-8, 1e-12, 1e-6

_hull = jax.jit(subspace.convex_hull, static_argnames=("iters", "polish"))
_affine = jax.jit(subspace.affine_hull)
# Eager calls compile op by op (slow); tests use jitted entry points, which
# skip the concrete-value bounds check (tested on its own below).
_project = jax.jit(subspace.project, static_argnames=("kind", "iters"))


def cvx_weights(points, y, kind="convex_hull", lower=0.0, upper=1.0):
  points = np.asarray(points, np.float64)
  w = cp.Variable(points.shape[0])
  cons = [cp.sum(w) == 1]
  if kind == "convex_hull":
    cons += [w >= lower, w <= upper]
  prob = cp.Problem(cp.Minimize(cp.sum_squares(points.T @ w - y)), cons)
  prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-13, tol_gap_rel=1e-13,
             tol_feas=1e-13)
  return w.value


def obj(points, w, y):
  w, points, y = (np.asarray(a, np.float64) for a in (w, points, y))
  return np.sum((w @ points - y) ** 2, -1)


def assert_matches_cvxpy(points, y, w, kind="convex_hull", lower=0.0,
                         upper=1.0, atol=ATOL32):
  """w (M, N) are ours for y (M, d); checks feasibility and the objective."""
  w = np.asarray(w, np.float64)
  np.testing.assert_allclose(w.sum(-1), 1, atol=1e-6)
  if kind == "convex_hull":
    assert np.all(w >= lower - 1e-7) and np.all(w <= upper + 1e-7)
  for wi, yi in zip(w, np.asarray(y, np.float64)):
    ref = obj(points, cvx_weights(points, yi, kind, lower, upper), yi)
    ours = obj(points, wi, yi)
    assert abs(ours - ref) <= RTOL * ref + atol, (ours, ref)


def face_like(rng, n, d, m, spread=1.0):
  """L2-normalised identity mean + noise (pairwise cos ~0.5), as float32."""
  mean = rng.standard_normal(d)
  x = mean / np.linalg.norm(mean) + spread * rng.standard_normal((n + m, d)) / np.sqrt(d)
  x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  return x[:n], x[n:]


def hard_samples(rng, a):
  """Samples whose projections sit on faces of the hull, not inside it."""
  d = a.shape[1]
  ys = [2 * a[0] - a[1], 1.5 * a[:2].mean(0) - 0.5 * a[2:].mean(0),
        -a.mean(0) + 0.1 * rng.standard_normal(d) / np.sqrt(d),
        3 * a[2] - a[-1] - a[-2], rng.standard_normal(d) / np.sqrt(d)]
  return np.stack(ys).astype(np.float32)


@pytest.mark.parametrize("lower,upper", [(0.0, 1.0), (0.0, 0.15), (0.05, 0.3)])
def test_convex_hull_matches_cvxpy_face_like(lower, upper):
  rng = np.random.default_rng(0)
  a, ys = face_like(rng, 10, 512, 3)
  ys = np.concatenate([ys, hard_samples(rng, a)])
  proj = _hull(a, np.ones(10, bool), ys, lower=lower, upper=upper)
  assert_matches_cvxpy(a, ys, proj.weights, lower=lower, upper=upper)
  np.testing.assert_allclose(proj.point, np.asarray(proj.weights) @ a, atol=1e-6)
  # The duality gap certifies the objective it reports.
  assert np.all(np.asarray(proj.residual) <= 1e-4 * obj(a, proj.weights, ys))


def test_float64():
  rng = np.random.default_rng(1)
  a, ys = face_like(rng, 8, 64, 2)
  ys = np.concatenate([ys, hard_samples(rng, a)]).astype(np.float64)
  a = a.astype(np.float64)
  with jax.enable_x64(True):
    proj = _hull(a, np.ones(8, bool), ys, upper=0.3)
    aff = _affine(a, np.ones(8, bool), ys)
    assert proj.weights.dtype == jnp.float64 and aff.point.dtype == jnp.float64
  assert_matches_cvxpy(a, ys, proj.weights, upper=0.3, atol=ATOL64)
  assert_matches_cvxpy(a, ys, aff.weights, kind="affine_hull", atol=ATOL64)


def test_residual_flags_non_convergence():
  rng = np.random.default_rng(2)
  a, _ = face_like(rng, 10, 128, 0)
  ys = hard_samples(rng, a)
  loose = _hull(a, np.ones(10, bool), ys, iters=0, polish=False)
  tight = _hull(a, np.ones(10, bool), ys)
  excess = obj(a, loose.weights, ys) - obj(a, tight.weights, ys)
  assert excess.max() > 1e-4  # the warm start alone is not the answer
  # The gap is an upper bound on the excess objective, and it falls.
  assert np.all(np.asarray(loose.residual) >= excess - 1e-6)
  assert np.asarray(loose.residual).max() > 100 * np.asarray(tight.residual).max()


def test_affine_hull_matches_closed_form_and_cvxpy():
  rng = np.random.default_rng(3)
  a, ys = face_like(rng, 10, 512, 3)
  ys = np.concatenate([ys, hard_samples(rng, a)])
  proj = _affine(a, np.ones(10, bool), ys)
  assert_matches_cvxpy(a, ys, proj.weights, kind="affine_hull")
  assert np.asarray(proj.weights).min() < 0  # sign really is free
  # Residual orthogonal to the hull's directions.
  r = np.asarray(proj.point, np.float64) - ys
  assert np.abs(r @ (a[1:] - a[0]).T.astype(np.float64)).max() < 1e-5


def test_class_center():
  rng = np.random.default_rng(4)
  a, ys = face_like(rng, 6, 32, 2)
  valid = np.array([1, 1, 0, 1, 1, 1], bool)
  proj = subspace.class_center(a, valid, ys)
  np.testing.assert_allclose(proj.point[0], a[valid].mean(0), atol=1e-6)
  np.testing.assert_allclose(proj.weights[1], valid / 5.0, atol=1e-7)
  assert proj.weights.shape == (2, 6) and proj.residual.shape == (2,)


@pytest.mark.parametrize("kind", sorted(subspace.PROJECTIONS))
def test_padding_gives_the_unpadded_answer(kind):
  rng = np.random.default_rng(5)
  a, ys = face_like(rng, 7, 64, 2)
  ys = np.concatenate([ys, hard_samples(rng, a)])
  padded = np.concatenate([a[:3], np.full((2, 64), np.nan, np.float32), a[3:],
                           rng.standard_normal((3, 64)).astype(np.float32)])
  valid = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0], bool)
  ref = _project(kind, a, np.ones(7, bool), ys, upper=0.4)
  got = _project(kind, padded, valid, ys, upper=0.4)
  assert np.all(np.asarray(got.weights)[:, ~valid] == 0)
  np.testing.assert_allclose(np.asarray(got.weights)[:, valid], ref.weights, atol=2e-5)
  np.testing.assert_allclose(got.point, ref.point, atol=2e-6)
  assert np.all(np.isfinite(got.residual))


@pytest.mark.parametrize("kind", sorted(subspace.PROJECTIONS))
def test_one_photo(kind):
  a = np.random.default_rng(6).standard_normal((1, 16)).astype(np.float32)
  y = np.ones((2, 16), np.float32)
  proj = _project(kind, a, np.ones(1, bool), y)
  np.testing.assert_allclose(proj.weights, 1.0)
  np.testing.assert_allclose(proj.point, np.repeat(a, 2, 0))


def test_duplicate_and_collinear_photos():
  rng = np.random.default_rng(7)
  a, ys = face_like(rng, 5, 64, 2)
  ys = np.concatenate([ys, hard_samples(rng, a)])
  dup = np.concatenate([a, a[:2], a[:1]])                     # 8 rows, rank 5
  line = np.stack([a[0] + t * (a[1] - a[0]) for t in (0, 0.3, 0.7, 1, 1.6)])
  for pts in (dup, line.astype(np.float32)):
    valid = np.ones(len(pts), bool)
    hull = _hull(pts, valid, ys)
    aff = _affine(pts, valid, ys)
    assert np.all(np.isfinite(hull.weights)) and np.all(np.isfinite(aff.weights))
    assert np.abs(np.asarray(aff.weights)).max() < 10  # minimum-norm, no blow-up
    assert_matches_cvxpy(pts, ys, hull.weights)
  assert_matches_cvxpy(dup, ys, _affine(dup, np.ones(8, bool), ys).weights,
                       kind="affine_hull")
  # float32 rounding makes the "line" 5-dimensional with extents ~1e-8; the
  # rank tolerance treats it as the line itself (cvxpy would chase those
  # directions with weights ~1e7), so the oracle is the projection onto it.
  a0, u = line[0].astype(np.float64), (line[3] - line[0]).astype(np.float64)
  u /= np.linalg.norm(u)
  on_line = a0 + ((ys - a0) @ u)[:, None] * u
  np.testing.assert_allclose(aff.point, on_line, atol=1e-5)


def test_point_inside_hull_has_distance_zero():
  rng = np.random.default_rng(8)
  a, _ = face_like(rng, 6, 32, 0)
  w = rng.dirichlet(np.ones(6), size=3).astype(np.float32)
  ys = w @ a
  proj = _hull(a, np.ones(6, bool), ys)
  assert obj(a, proj.weights, ys).max() < ATOL32
  assert np.abs(np.asarray(proj.point) - ys).max() < 1e-5
  aff = _affine(a, None, ys)
  assert obj(a, aff.weights, ys).max() < ATOL32


def test_infeasible_bounds_raise():
  a = np.eye(4, 8, dtype=np.float32)
  valid = np.array([1, 1, 1, 0], bool)
  y = np.zeros(8, np.float32)
  with pytest.raises(ValueError, match="upper"):
    subspace.project("convex_hull", a, valid, y, upper=0.3)  # 3 * 0.3 < 1
  with pytest.raises(ValueError, match="lower"):
    subspace.convex_hull(a, valid, y, lower=0.4)  # 3 * 0.4 > 1
  with pytest.raises(UnknownNameError, match="unknown subspace model 'hull'"):
    subspace.project("hull", a, valid, y)
  with pytest.raises(UnknownNameError, match="unknown subspace model"):
    subspace.project_batch("hull", a[None], valid[None], y[None])
  capped_simplex_qp.check_bounds(valid, 0.0, 1 / 3)  # exactly 1: feasible


def test_capped_simplex_projection_is_exact():
  rng = np.random.default_rng(9)
  for _ in range(5):
    v = rng.standard_normal(7) * 2
    lo, hi = np.full(7, 0.02), np.full(7, 0.3)
    got = np.asarray(capped_simplex_qp.project_capped_simplex(
        jnp.asarray(v, jnp.float32), jnp.asarray(lo, jnp.float32),
        jnp.asarray(hi, jnp.float32)))
    x = cp.Variable(7)
    cp.Problem(cp.Minimize(cp.sum_squares(x - v)),
               [cp.sum(x) == 1, x >= lo, x <= hi]).solve(
                   solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_feas=1e-12)
    np.testing.assert_allclose(got, x.value, atol=1e-6)


def test_distance_gradient_with_weights_held_fixed():
  """The attack's losses differentiate ||w* @ A - y||^2 with w* held fixed."""
  rng = np.random.default_rng(10)
  a, _ = face_like(rng, 6, 24, 0)
  y = hard_samples(rng, a)[:2].astype(np.float64)
  a = a.astype(np.float64)

  def loss(yy):
    w = subspace.project("convex_hull", a, None, yy).weights
    return jnp.sum((w @ a - yy) ** 2, -1).mean()

  with jax.enable_x64(True):
    grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(y)))
    w = np.asarray(_project("convex_hull", a, np.ones(6, bool), y).weights)
  # Envelope theorem: the gradient of the mean is 2 (y - A'w*) / M.
  np.testing.assert_allclose(grad, 2 * (y - w @ a) / 2, atol=1e-9)
  # ... and it is the gradient of the true distance (cvxpy), by central
  # differences along random directions.
  true = lambda yy: np.mean([obj(a, cvx_weights(a, yi), yi) for yi in yy])
  h = 1e-4
  for _ in range(3):
    e = rng.standard_normal(y.shape)
    fd = (true(y + h * e) - true(y - h * e)) / (2 * h)
    np.testing.assert_allclose(np.sum(grad * e), fd, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", sorted(subspace.PROJECTIONS))
def test_vmap_over_identities_equals_loop(kind):
  rng = np.random.default_rng(11)
  pts, ys, valid = [], [], []
  for k in (3, 6, 5):
    a, y = face_like(rng, k, 32, 2)
    pts.append(np.concatenate([a, np.zeros((6 - k, 32), np.float32)]))
    ys.append(np.concatenate([y, hard_samples(rng, a)[:2]]))
    valid.append(np.arange(6) < k)
  pts, ys, valid = np.stack(pts), np.stack(ys), np.stack(valid)
  batched = jax.jit(jax.vmap(functools.partial(subspace.project, kind)))(pts, valid, ys)
  fast = jax.jit(functools.partial(subspace.project_batch, kind))(pts, valid, ys)
  for i in range(3):
    one = _project(kind, pts[i], valid[i], ys[i])
    for got in (batched, fast):
      np.testing.assert_allclose(got.weights[i], one.weights, atol=1e-5)
      np.testing.assert_allclose(got.point[i], one.point, atol=1e-6)


# Property-based: one compiled program (8 points x 16 dims, padded) for all.
_N, _D = 8, 16
_hull_padded = jax.jit(subspace.convex_hull)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, _N), d=st.integers(1, _D), seed=st.integers(0, 2**31),
       shrink=st.floats(0.0, 1.0), low_frac=st.floats(0.0, 1.0))
def test_convex_hull_property(n, d, seed, shrink, low_frac):
  rng = np.random.default_rng(seed)
  a = rng.standard_normal((n, d)).astype(np.float32)
  ys = (rng.standard_normal((3, d)) * 1.5).astype(np.float32)
  upper = 1 / n + shrink * (1 - 1 / n)
  lower = low_frac / n
  pts = np.zeros((_N, _D), np.float32)
  pts[:n, :d] = a
  yp = np.zeros((3, _D), np.float32)
  yp[:, :d] = ys
  valid = np.arange(_N) < n
  capped_simplex_qp.check_bounds(valid, lower, upper)
  proj = _hull_padded(pts, valid, yp, lower=lower, upper=upper)
  w = np.asarray(proj.weights)
  assert np.all(w[:, n:] == 0)
  scale = 1 + np.abs(a).max() ** 2  # objectives here are O(d), not O(1)
  assert_matches_cvxpy(a, ys, w[:, :n], lower=lower, upper=upper,
                       atol=ATOL32 * scale * d)


def _lfw_embeddings(lfw_root):
  files = sorted((lfw_root / "Abdullah_Gul").iterdir())[:12]
  files += sorted((lfw_root / "Alvaro_Uribe").iterdir())[:2]
  # Naive: a central crop resized to 112x112, no alignment; good enough to
  # get real-network embeddings with realistic geometry.
  imgs = np.stack([np.asarray(Image.open(f).convert("RGB").crop(
      (50, 50, 200, 200)).resize((112, 112))) for f in files])
  return onnx_runtime.foamliu_runtime().embed(imgs)


def test_real_face_embeddings(lfw_root):
  emb = _lfw_embeddings(lfw_root)
  a, ys = emb[:10], emb[10:]        # 10 photos; 2 more of him, 2 of someone else
  cos = (a @ a.T)[np.triu_indices(10, 1)]
  assert 0.2 < np.median(cos) < 0.95  # really one person's photos
  ys = np.concatenate([ys, hard_samples(np.random.default_rng(12), a)])
  for lower, upper in ((0.0, 1.0), (0.0, 0.2)):
    proj = _hull(a, np.ones(10, bool), ys, lower=lower, upper=upper)
    assert_matches_cvxpy(a, ys, proj.weights, lower=lower, upper=upper)
  assert_matches_cvxpy(a, ys, _affine(a, np.ones(10, bool), ys).weights,
                       kind="affine_hull")
