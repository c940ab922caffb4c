"""The convex-hull QP, batched: FISTA over the capped simplex, then a KKT polish.

For every identity i and sample m it solves

  min_w  w'G_i w - 2 b_im'w   s.t.  sum w = 1,  lower_i <= w <= upper_i

(`subspace.convex_hull_batch` builds G_i, the centred Gram matrix of the
identity's features, and b_im from the sample). FISTA (accelerated projected
gradient, step 1/L with L = 2 lam >= 2 lambda_max(G), adaptive restart) runs
with an exact projection onto that capped simplex, then an exact KKT "polish"
on the face FISTA found is kept where it is feasible and lowers the objective.

The default `DEFAULT_ITERS = 30` was chosen on L2-normalised face-like
embeddings (N = 10, d = 512, pairwise cosine 0.3-0.8; samples from the same
identity, other identities, random affine mixtures and far extrapolations;
upper = 1, 0.2, 0.15) and on real MobileFaceNet embeddings of LFW photos
(d = 128): with the polish the objective matched the high-accuracy cvxpy
(CLARABEL) optimum to 1e-7 relative from 20 iterations on in the hardest
case (extrapolations; 10 sufficed elsewhere; without the polish 100 were
needed), so 30 leaves a margin. The returned gap (Frank-Wolfe duality gap, an
upper bound on objective - optimum; first-order in the weight error, so loose)
lets a caller check convergence on its own data.

Feasibility of the bounds needs concrete values: `check_bounds` raises on
infeasible ones; inside jit they give meaningless weights.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_ITERS = 30


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


def _polish_and_gap(gram, b, w, lower, upper, valid, polish):
  """One identity: gram (N, N), b and w (M, N) -> (polished w, FW gap (M,))."""
  if polish:
    cand, ok = jax.vmap(_polish, (None, 0, 0, None, None, None))(
        gram, b, w, lower, upper, valid)
    # f(cand) - f(w) through the Gram matrix: O(N^2), and as a difference
    # it keeps its precision (no cancellation of the constant ||y - c||^2).
    delta = cand - w
    gain = ((delta @ gram) * (cand + w)).sum(-1) - 2 * (delta * b).sum(-1)
    w = jnp.where((ok & (gain < 0))[:, None], cand, w)
  grad = 2 * (w @ gram - b)
  s = jax.vmap(_linear_min_capped_simplex, (0, None, None))(
      jnp.where(valid, grad, jnp.inf), lower, upper)
  gap = jnp.maximum(((w - s) * grad).sum(-1), 0)
  return w, gap


def solve(gram, b, w0, lam, lower, upper, valid, *, iters: int = DEFAULT_ITERS,
          restart: bool = True, polish: bool = True):
  """The QP for I identities x M samples -> (weights (I, M, N), gap (I, M)).

  gram (I, N, N); b, w0 (I, M, N), w0 a warm start (projected here); lam (I,)
  an upper bound on lambda_max(gram); lower, upper (I, N); valid (I, N) bool,
  padded rows get weight 0. All I x M problems share the last axis of the
  FISTA loop, which the CPU vectorises over (several times faster than vmap,
  whose inner axis would be only the M samples of one identity).
  """
  n_id, m, n = b.shape
  v = valid.astype(b.dtype)
  lower, upper = lower * v, upper * v
  # Columns = (identity, sample) pairs.
  cols = lambda a: jnp.moveaxis(a, 0, -2).reshape(a.shape[1:-1] + (n_id * m,))
  rep = lambda a: jnp.repeat(a[..., None], m, axis=-1)    # (I, ...) -> (I, ..., M)
  lo_k, hi_k = cols(rep(lower)), cols(rep(upper))
  x0 = _project_columns(cols(jnp.swapaxes(w0, 1, 2)), lo_k, hi_k)
  w = _fista_columns(cols(rep(gram)), cols(jnp.swapaxes(b, 1, 2)),
                     rep(lam).reshape(-1), lo_k, hi_k, x0, iters, restart)
  w = jnp.moveaxis(w.reshape(n, n_id, m), 0, -1)            # (I, M, N)
  return jax.vmap(_polish_and_gap, (0, 0, 0, 0, 0, 0, None))(
      gram, b, w, lower, upper, valid, polish)
