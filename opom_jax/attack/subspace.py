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

The squared distance to a set has, by the envelope theorem, the same gradient
as `||weights @ points - y||^2` with the optimal weights held fixed; the
attack's losses use `distance_sq`, which does exactly that.

Convex hull: FISTA (accelerated projected gradient, step 1/L, adaptive
restart) over {sum w = 1, lower <= w <= upper} with an exact projection onto
that capped simplex, then an exact KKT "polish" on the face FISTA found. The
default `CONVEX_HULL_ITERS = 30` was chosen on L2-normalised face-like
embeddings (N = 10, d = 512, pairwise cosine 0.3-0.8; samples from the same
identity, other identities, random affine mixtures and far extrapolations;
upper = 1, 0.2, 0.15) and on real MobileFaceNet embeddings of LFW photos
(d = 128): with the polish the objective matched the high-accuracy cvxpy
(CLARABEL) optimum to 1e-7 relative from 20 iterations on in the hardest
case (extrapolations; 10 sufficed elsewhere; without the polish 100 were
needed), so 30 leaves a margin. `residual` (a Frank-Wolfe duality gap, an upper bound on
objective - optimum; it is first-order in the weight error, so it is loose)
lets a caller check convergence on its own data.

Feasibility of the bounds needs concrete values: `project` / `convex_hull`
call `check_bounds` when `valid`, `lower` and `upper` are concrete (outside
jit/vmap). Inside jit it is NOT checked -- call `check_bounds` on the whole
batch before jitting; infeasible bounds there give meaningless weights.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CONVEX_HULL_ITERS = 30


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


def check_bounds(valid, lower=0.0, upper=1.0):
  """Raises ValueError unless sum(lower) <= 1 <= sum(upper) over valid rows.

  `valid` may be (N,) or a batch (..., N); lower/upper broadcast against it.
  Needs concrete values (call it outside jit on the whole data set).
  """
  valid = np.asarray(valid, bool)
  lower = np.broadcast_to(np.asarray(lower, np.float64), valid.shape)
  upper = np.broadcast_to(np.asarray(upper, np.float64), valid.shape)
  n = valid.sum(-1)
  if np.any(n == 0):
    raise ValueError("subspace.convex_hull: an identity has no valid points "
                     "(valid is all False).")
  if np.any((lower > upper) & valid):
    raise ValueError(f"subspace.convex_hull: lower > upper "
                     f"(lower={lower.max()}, upper={upper.min()}).")
  lo = np.where(valid, lower, 0).sum(-1)
  hi = np.where(valid, upper, 0).sum(-1)
  # A little slack so that e.g. upper = 1/N stays feasible after rounding.
  slack = 1e-9 * np.maximum(n, 1)
  if np.any(hi < 1 - slack):
    i = np.unravel_index(np.argmin(hi), hi.shape)
    raise ValueError(
        f"subspace.convex_hull: infeasible bounds: N_valid * upper < 1 "
        f"(N_valid={n[i]}, upper sums to {hi[i]:.6g} < 1). Raise upper to at "
        f"least 1/N_valid = {1 / n[i]:.6g}.")
  if np.any(lo > 1 + slack):
    i = np.unravel_index(np.argmax(lo), lo.shape)
    raise ValueError(
        f"subspace.convex_hull: infeasible bounds: N_valid * lower > 1 "
        f"(N_valid={n[i]}, lower sums to {lo[i]:.6g} > 1). Lower it to at "
        f"most 1/N_valid = {1 / n[i]:.6g}.")


def _project_columns(v, lo, hi):
  """Exact projection of every column of v (N, M) onto the capped simplex.

  w = clip(v - tau, lower, upper) with the scalar tau solving sum(w) = 1. The
  sum is piecewise linear in tau with kinks at v - lower and v - upper, so we
  evaluate it at all 2N kinks (O(N^2), no sort, static shapes), bracket the
  root between two neighbouring kinks and solve the linear piece in closed
  form. Samples are the last axis so that the CPU vectorises over them;
  lo, hi are (N, M) or (N, 1).
  """
  kinks = jnp.concatenate([v - lo, v - hi])                           # (2N, M)
  sums = jnp.clip(v[None] - kinks[:, None], lo[None], hi[None]).sum(1)  # (2N, M)
  inf = jnp.asarray(jnp.inf, v.dtype)
  above = sums >= 1  # the sum decreases in tau: the root is right of these
  k_min, k_max = kinks.min(0), kinks.max(0)
  span = k_max - k_min + 1
  t_lo = jnp.where(above.any(0), jnp.where(above, kinks, -inf).max(0), k_min - span)
  t_hi = jnp.where((~above).any(0), jnp.where(above, inf, kinks).min(0), k_max + span)
  mid = 0.5 * (t_lo + t_hi)
  at_upper = v - mid >= hi
  at_lower = ~at_upper & (v - mid <= lo)
  free = ~(at_upper | at_lower)
  n_free = free.sum(0)
  fixed = (jnp.where(at_upper, hi, 0) + jnp.where(at_lower, lo, 0)).sum(0)
  tau = (jnp.where(free, v, 0).sum(0) + fixed - 1) / jnp.maximum(n_free, 1)
  tau = jnp.where(n_free > 0, jnp.clip(tau, t_lo, t_hi), mid)
  return jnp.clip(v - tau, lo, hi)


def project_capped_simplex(v, lower, upper):
  """Exact Euclidean projection of v (N,) onto {sum w = 1, lower <= w <= upper}.

  lower/upper are (N,); entries with lower = upper = 0 (padding) stay 0.
  Assumes sum(lower) <= 1 <= sum(upper).
  """
  return _project_columns(v[:, None], lower[:, None], upper[:, None])[:, 0]


def _linear_min_capped_simplex(g, lower, upper):
  """argmin_s <g, s> over {sum s = 1, lower <= s <= upper}: fill cheapest first."""
  order = jnp.argsort(g)
  cap = (upper - lower)[order]
  budget = 1 - lower.sum()
  take = jnp.clip(budget - (jnp.cumsum(cap) - cap), 0, cap)
  return lower + jnp.zeros_like(g).at[order].set(take)


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


def _polish(gram, b, w, lower, upper, valid):
  """Exact minimiser on the face of the constraint set that w lies on.

  Coordinates strictly between their bounds are free; the others stay at the
  bound the (exact) projection put them on. The equality-constrained QP on
  the free ones is one (N+1) x (N+1) KKT solve, like OSQP's polishing.
  Returns the candidate and whether it is feasible and finite; it may still
  be worse than w (wrong face), so the caller compares objectives.
  """
  n = w.shape[0]
  free = valid & (w > lower) & (w < upper)
  fixed = jnp.where(free, 0, w)
  both = free[:, None] & free[None, :]
  eye = jnp.eye(n, dtype=w.dtype)
  top = jnp.where(both, gram, jnp.where(free[:, None], 0, eye))
  col = free.astype(w.dtype)
  kkt = jnp.block([[top, col[:, None]], [col[None, :], jnp.zeros((1, 1), w.dtype)]])
  rhs = jnp.concatenate([jnp.where(free, b - gram @ fixed, 0),
                         (1 - fixed.sum())[None]])
  sol = jnp.linalg.solve(kkt, rhs)[:n]
  cand = jnp.where(free, sol, fixed)
  tol = 16 * jnp.finfo(w.dtype).eps
  ok = (jnp.all(jnp.isfinite(cand)) & jnp.all(cand >= lower - tol)
        & jnp.all(cand <= upper + tol))
  return jnp.clip(cand, lower, upper), ok


def _hull_setup(points, valid, lower, upper):
  """Per-identity quantities of the convex-hull QP (see convex_hull)."""
  dtype = points.dtype
  v = valid.astype(dtype)
  lower = jnp.broadcast_to(jnp.asarray(lower, dtype), v.shape) * v
  upper = jnp.broadcast_to(jnp.asarray(upper, dtype), v.shape) * v
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
              affine=affine, lower=lower, upper=upper, v=v)


def _fista_columns(gram, b, lam, lo, hi, x0, iters, restart):
  """FISTA on K problems at once, one per column (the last axis).

  gram (N, N, K), b (N, K), lam (K,), lo/hi (N, K), x0 (N, K) feasible.
  Minimises w'Gw - 2b'w over the capped simplex with step 1/(2 lam).
  """
  def step(_, state):
    x_prev, z, t = state
    # gram @ z per column, spelled out over the N (small, static) columns:
    # XLA on the CPU reduces a short middle axis ~30x slower than it fuses
    # this chain of elementwise multiply-adds over the long last axis.
    grad_half = sum(gram[:, j] * z[j] for j in range(z.shape[0])) - b
    x = _project_columns(z - grad_half / lam, lo, hi)
    # Adaptive restart (O'Donoghue & Candes): drop momentum once it points
    # uphill, which restores linear convergence on strongly convex pieces.
    uphill = ((z - x) * (x - x_prev)).sum(0) > 0
    t = jnp.where(restart & uphill, 1.0, t)
    t_next = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
    z = x + ((t - 1) / t_next) * (x - x_prev)
    return x, z, t_next

  w, _, _ = jax.lax.fori_loop(0, iters, step,
                              (x0, x0, jnp.ones(b.shape[1:], b.dtype)))
  return w


def convex_hull_batch(points, valid, y, *, lower=0.0, upper=1.0,
                      iters: int = CONVEX_HULL_ITERS, restart: bool = True,
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
    check_bounds(valid, lower, upper)
  lower = jnp.broadcast_to(jnp.asarray(lower, dtype), (n_id, n))
  upper = jnp.broadcast_to(jnp.asarray(upper, dtype), (n_id, n))
  points = jnp.where(valid[..., None], points, 0)
  lead = y.shape[1:-1]
  y = y.reshape((n_id, -1, d))
  m = y.shape[1]
  st = jax.vmap(_hull_setup)(points, valid, lower, upper)

  r = y - st["c"][:, None]                                  # (I, M, d)
  b = jnp.einsum("ind,imd->inm", st["centred"], r)         # (I, N, M)
  u = jnp.einsum("ink,ikm->inm", st["affine"], b) * st["v"][..., None]
  w0 = u + (1 - u.sum(1, keepdims=True)) * st["uniform"][..., None]

  # Columns = (identity, sample) pairs.
  cols = lambda a: jnp.moveaxis(a, 0, -2).reshape(a.shape[1:-1] + (n_id * m,))
  rep = lambda a: jnp.repeat(a[..., None], m, axis=-1)    # (I, ...) -> (I, ..., M)
  gram_k = cols(rep(st["gram"]))                            # (N, N, K)
  lo_k, hi_k = cols(rep(st["lower"])), cols(rep(st["upper"]))
  lam_k = rep(st["lam"]).reshape(-1)
  x0 = _project_columns(cols(w0), lo_k, hi_k)
  w = _fista_columns(gram_k, cols(b), lam_k, lo_k, hi_k, x0, iters, restart)
  w = jnp.moveaxis(w.reshape(n, n_id, m), 0, -1)            # (I, M, N)
  b = jnp.swapaxes(b, 1, 2)                                 # (I, M, N)

  def finish(st, valid, w, b, r):
    if polish:
      cand, ok = jax.vmap(_polish, (None, 0, 0, None, None, None))(
          st["gram"], b, w, st["lower"], st["upper"], valid)
      # f(cand) - f(w) through the Gram matrix: O(N^2), and as a difference
      # it keeps its precision (no cancellation of the constant ||y - c||^2).
      delta = cand - w
      gain = ((delta @ st["gram"]) * (cand + w)).sum(-1) - 2 * (delta * b).sum(-1)
      w = jnp.where((ok & (gain < 0))[:, None], cand, w)
    grad = 2 * (w @ st["gram"] - b)
    s = jax.vmap(_linear_min_capped_simplex, (0, None, None))(
        jnp.where(valid, grad, jnp.inf), st["lower"], st["upper"])
    gap = jnp.maximum(((w - s) * grad).sum(-1), 0)
    return w, gap

  w, gap = jax.vmap(finish)(st, valid, w, b, r)
  point = jnp.einsum("imn,ind->imd", w, points)
  return Projection(w.reshape((n_id,) + lead + (n,)),
                    point.reshape((n_id,) + lead + (d,)),
                    gap.reshape((n_id,) + lead))


def convex_hull(points, valid, y, *, lower=0.0, upper=1.0,
                iters: int = CONVEX_HULL_ITERS, restart: bool = True,
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


PROJECTIONS: dict[str, Callable[..., Projection]] = {
    "class_center": class_center,
    "affine_hull": affine_hull,
    "convex_hull": convex_hull,
}


def project(kind: str, points, valid, y, *, lower=0.0, upper=1.0,
            iters: int = CONVEX_HULL_ITERS) -> Projection:
  """Projects y (..., d) onto the `kind` model of points (N, d) / valid (N,).

  kind is one of PROJECTIONS; lower/upper/iters only affect "convex_hull".
  The projection is never differentiated (its inputs are wrapped in
  stop_gradient): take gradients through distance_sq or
  distance_sq_with_weights, with the weights held fixed.
  """
  points, y = jax.lax.stop_gradient((points, y))
  if kind not in PROJECTIONS:
    raise ValueError(f"subspace.project: unknown kind {kind!r}; choose one of "
                     f"{sorted(PROJECTIONS)}.")
  if kind == "convex_hull":
    return convex_hull(points, valid, y, lower=lower, upper=upper, iters=iters)
  return PROJECTIONS[kind](points, valid, y)


def project_batch(kind: str, points, valid, y, *, lower=0.0, upper=1.0,
                  iters: int = CONVEX_HULL_ITERS) -> Projection:
  """project() for I identities: points (I, N, d), valid (I, N), y (I, ..., d).

  Equal to jax.vmap of project; for "convex_hull" it uses convex_hull_batch,
  which lays all I x M problems along one vectorised axis. Not differentiated,
  like project.
  """
  points, y = jax.lax.stop_gradient((points, y))
  if kind == "convex_hull":
    return convex_hull_batch(points, valid, y, lower=lower, upper=upper,
                             iters=iters)
  if kind not in PROJECTIONS:
    raise ValueError(f"subspace.project_batch: unknown kind {kind!r}; choose "
                     f"one of {sorted(PROJECTIONS)}.")
  return jax.vmap(PROJECTIONS[kind])(points, valid, y)


def distance_sq_with_weights(points, weights, y):
  """||weights @ points - y||^2 over the last axis; weights (..., N), y (..., d)."""
  return jnp.sum(jnp.square(weights @ points - y), axis=-1)


def distance_sq(kind: str, points, valid, y, **kw):
  """Squared distance (...) from y (..., d) to the `kind` model of points.

  The optimal weights are held fixed (stop_gradient): by the envelope theorem
  the gradient is still that of the true distance, 2 (y - weights @ points)
  w.r.t. y, and the solver is never differentiated.
  """
  points, valid, y = _prepare(points, valid, y)
  proj = project(kind, points, valid, y, **kw)
  return distance_sq_with_weights(points, jax.lax.stop_gradient(proj.weights), y)
