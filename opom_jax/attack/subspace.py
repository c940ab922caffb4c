"""Feature-subspace models of one identity: class centre, affine hull, convex hull.

Every function here is pure jax and follows one layout:

  points: (N, d) clean features of one identity, one photo per row, padded to
          a fixed N so that one compiled program serves every identity;
  valid:  (N,) bool, False on padded rows (which always get weight 0);
  y:      (..., d) the features to project (any number of leading sample axes).

and returns a `Projection(weights (..., N), point (..., d), residual (...))`
with `point = weights @ points`. Batches of identities: `jax.vmap` over
(points, valid, y) with the kind and the iteration count fixed, e.g.

  proj = jax.vmap(functools.partial(project, "convex_hull"))(P, V, Y)

or `project_batch("convex_hull", P, V, Y)`, the same answer, which for the
convex hull lays all identities x samples along one vectorised axis (several
times faster on the CPU than vmap).

The projections are never differentiated. The squared distance to a set has,
by the envelope theorem, the same gradient as `||weights @ points - y||^2`
with the optimal weights held fixed, which is how the attack's losses use
`Projection.weights`.

Convex hull: set up here as a QP on the centred Gram matrix, warm-started at
the affine-hull weights, and solved by `capped_simplex_qp.solve` (FISTA,
exact capped-simplex projection, KKT polish; the iteration count and the
residual are explained there). Feasibility of the bounds needs concrete values:
`project` / `convex_hull` call `capped_simplex_qp.check_bounds` when `valid`,
`lower` and `upper` are concrete (outside jit/vmap). Inside jit it is NOT
checked -- call `check_bounds` on the whole batch before jitting; infeasible
bounds there give meaningless weights.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from opom_jax.attack import capped_simplex_qp as qp
from opom_jax.registry import Registry


class Projection(NamedTuple):
  weights: jax.Array   # (..., N), sum 1 over the valid rows, 0 on padding
  point: jax.Array     # (..., d) = weights @ points
  residual: jax.Array  # (...) optimality residual, 0 at the exact optimum


# ---------------------------------------------------------------------------
# Helpers.


def _prepare(points, valid, y):
  points = jnp.asarray(points)
  dtype = jnp.result_type(points.dtype, jnp.float32)
  points = points.astype(dtype)
  y = jnp.asarray(y, dtype)
  if points.ndim != 2:
    raise ValueError(f"subspace: points must be (N, d), got {points.shape}.")
  if valid is None:
    valid = jnp.ones(points.shape[:1], bool)
  valid = jnp.asarray(valid, bool)
  if valid.shape != points.shape[:1]:
    raise ValueError(f"subspace: valid must be ({points.shape[0]},) to match "
                     f"points {points.shape}, got {valid.shape}.")
  if y.shape[-1:] != points.shape[-1:]:
    raise ValueError(f"subspace: y must end in d={points.shape[-1]} to match "
                     f"points {points.shape}, got {y.shape}.")
  # Padded rows may hold anything (even NaN): zero them so they cannot leak.
  points = jnp.where(valid[:, None], points, 0)
  return points, valid, y


def _centre(points, valid):
  v = valid.astype(points.dtype)
  n = jnp.maximum(v.sum(), 1)
  c = v @ points / n
  return c, (points - c) * v[:, None], v / n


def _per_sample(fn, y):
  """Applies fn((d,)) -> Projection to y of shape (..., d)."""
  lead = y.shape[:-1]
  out = jax.vmap(fn)(y.reshape((-1, y.shape[-1])))
  return jax.tree.map(lambda a: a.reshape(lead + a.shape[1:]), out)


def _is_concrete(*xs):
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


# ---------------------------------------------------------------------------
# The three models.


def class_center(points, valid, y) -> Projection:
  """The mean of the valid points (not renormalised); residual is 0."""
  points, valid, y = _prepare(points, valid, y)
  _, _, w = _centre(points, valid)
  p = w @ points
  weights = jnp.broadcast_to(w, y.shape[:-1] + w.shape)
  return Projection(weights, jnp.broadcast_to(p, y.shape),
                    jnp.zeros(y.shape[:-1], points.dtype))


def affine_hull(points, valid, y, *, rtol=None) -> Projection:
  """Closed-form projection onto {w @ points : sum w = 1} (w of any sign).

  Centres the valid points at their mean c and projects y - c onto the span of
  the centred points through a thin SVD; singular values below rtol * s_max
  (default max(N, d) * eps, numpy's matrix_rank rule) are dropped, so duplicate
  or collinear photos give the minimum-norm weights instead of blowing up.
  residual = max_i |<p_i - c, point - y>| over valid rows: the stationarity
  (KKT) residual, 0 when point - y is orthogonal to the hull.
  """
  points, valid, y = _prepare(points, valid, y)
  c, centred, uniform = _centre(points, valid)
  u_mat, s, vt = jnp.linalg.svd(centred, full_matrices=False)  # (N,k),(k,),(k,d)
  if rtol is None:
    rtol = max(points.shape) * jnp.finfo(points.dtype).eps
  keep = s > rtol * s.max()
  inv_s = jnp.where(keep, 1 / jnp.where(keep, s, 1), 0)
  v = valid.astype(points.dtype)

  def one(yi):
    u = u_mat @ (inv_s * (vt @ (yi - c))) * v
    w = u + (1 - u.sum()) * uniform
    p = w @ points
    res = jnp.abs(centred @ (p - yi)).max()
    return Projection(w, p, res)

  return _per_sample(one, y)


def _hull_setup(points, valid):
  """Per-identity quantities of the convex-hull QP (see convex_hull)."""
  dtype = points.dtype
  c, centred, uniform = _centre(points, valid)
  gram = centred @ centred.T
  evals, evecs = jnp.linalg.eigh(gram)
  eps = jnp.finfo(dtype).eps
  lam = jnp.maximum(evals[-1], eps * (1 + jnp.trace(gram)))
  keep = evals > max(points.shape) * eps * lam
  inv_evals = jnp.where(keep, 1 / jnp.where(keep, evals, 1), 0)
  # Warm start: the affine-hull weights (pseudo-inverse on the centred Gram).
  affine = evecs @ jnp.diag(inv_evals) @ evecs.T
  return dict(c=c, centred=centred, uniform=uniform, gram=gram, lam=lam,
              affine=affine)


def convex_hull_batch(points, valid, y, *, lower=0.0, upper=1.0,
                      iters: int = qp.DEFAULT_ITERS, restart: bool = True,
                      polish: bool = True) -> Projection:
  """convex_hull for I identities at once: points (I, N, d), valid (I, N),
  y (I, ..., d); lower/upper scalars, (N,) or (I, N).

  Same result as vmapping convex_hull, but all I x M problems share the last
  axis of the FISTA loop, which the CPU vectorises over (several times faster
  than vmap, whose inner axis is only the M samples of one identity).
  """
  points = jnp.asarray(points)
  dtype = jnp.result_type(points.dtype, jnp.float32)
  points = points.astype(dtype)
  if points.ndim != 3:
    raise ValueError(f"subspace.convex_hull_batch: points must be (I, N, d), "
                     f"got {points.shape}.")
  n_id, n, d = points.shape
  valid = (jnp.ones((n_id, n), bool) if valid is None
           else jnp.asarray(valid, bool))
  y = jnp.asarray(y, dtype)
  if valid.shape != (n_id, n) or y.shape[:1] + y.shape[-1:] != (n_id, d):
    raise ValueError(f"subspace.convex_hull_batch: need valid (I, N) = "
                     f"{(n_id, n)} and y (I, ..., d) with d={d}; got valid "
                     f"{valid.shape}, y {y.shape}.")
  if _is_concrete(valid, lower, upper):
    qp.check_bounds(valid, lower, upper)
  lower = jnp.broadcast_to(jnp.asarray(lower, dtype), (n_id, n))
  upper = jnp.broadcast_to(jnp.asarray(upper, dtype), (n_id, n))
  points = jnp.where(valid[..., None], points, 0)
  lead = y.shape[1:-1]
  y = y.reshape((n_id, -1, d))
  st = jax.vmap(_hull_setup)(points, valid)

  # On {sum w = 1}: ||w @ points - y||^2 = w'Gw - 2b'w + const, b = C (y - c).
  b = jnp.einsum("ind,imd->imn", st["centred"], y - st["c"][:, None])
  u = jnp.einsum("ink,imk->imn", st["affine"], b) * valid[:, None].astype(dtype)
  w0 = u + (1 - u.sum(-1, keepdims=True)) * st["uniform"][:, None]
  w, gap = qp.solve(st["gram"], b, w0, st["lam"], lower, upper, valid,
                         iters=iters, restart=restart, polish=polish)
  point = jnp.einsum("imn,ind->imd", w, points)
  return Projection(w.reshape((n_id,) + lead + (n,)),
                    point.reshape((n_id,) + lead + (d,)),
                    gap.reshape((n_id,) + lead))


def convex_hull(points, valid, y, *, lower=0.0, upper=1.0,
                iters: int = qp.DEFAULT_ITERS, restart: bool = True,
                polish: bool = True) -> Projection:
  """Projection onto {w @ points : sum w = 1, lower <= w <= upper}.

  upper < 1 gives the reduced convex hull. lower/upper are scalars or (N,).
  Solved by FISTA with a fixed `iters` and an exact capped-simplex projection,
  warm-started at the (projected) affine-hull weights, then (polish=True) an
  exact KKT solve on the face FISTA has found, kept only where it is feasible
  and lowers the objective. Works on the centred Gram matrix: on
  {sum w = 1} the objective is w'Gw - 2b'w + const with G = C C',
  b = C (y - c), C the centred points, so the step 1/L uses
  L = 2 lambda_max(G) -- the curvature along the feasible set, never more
  than 2 lambda_max(A A'). residual is the Frank-Wolfe duality gap
  max_s <grad f(w), w - s>, an upper bound on f(w) - min f.
  For many identities prefer convex_hull_batch (same answer, faster on CPU).
  """
  points, valid, y = _prepare(points, valid, y)
  lower = jnp.asarray(lower)
  upper = jnp.asarray(upper)
  out = convex_hull_batch(points[None], valid[None], y[None],
                          lower=lower[None] if lower.ndim else lower,
                          upper=upper[None] if upper.ndim else upper,
                          iters=iters, restart=restart, polish=polish)
  return jax.tree.map(lambda a: a[0], out)


PROJECTIONS: Registry[Callable[..., Projection]] = Registry("subspace model", {
    "class_center": class_center,
    "affine_hull": affine_hull,
    "convex_hull": convex_hull,
})


def project(kind: str, points, valid, y, *, lower=0.0, upper=1.0,
            iters: int = qp.DEFAULT_ITERS) -> Projection:
  """Projects y (..., d) onto the `kind` model of points (N, d) / valid (N,).

  kind is one of PROJECTIONS; lower/upper/iters only affect "convex_hull".
  The projection is never differentiated (its inputs are wrapped in
  stop_gradient): hold `weights` fixed and differentiate
  ||weights @ points - y||^2 instead (see the module docstring).
  """
  fn = PROJECTIONS.get(kind)
  points, y = jax.lax.stop_gradient((points, y))
  if kind == "convex_hull":
    return fn(points, valid, y, lower=lower, upper=upper, iters=iters)
  return fn(points, valid, y)


def project_batch(kind: str, points, valid, y, *, lower=0.0, upper=1.0,
                  iters: int = qp.DEFAULT_ITERS) -> Projection:
  """project() for I identities: points (I, N, d), valid (I, N), y (I, ..., d).

  Equal to jax.vmap of project; for "convex_hull" it uses convex_hull_batch,
  which lays all I x M problems along one vectorised axis. Not differentiated,
  like project.
  """
  fn = PROJECTIONS.get(kind)
  points, y = jax.lax.stop_gradient((points, y))
  if kind == "convex_hull":
    return convex_hull_batch(points, valid, y, lower=lower, upper=upper,
                             iters=iters)
  return jax.vmap(fn)(points, valid, y)
