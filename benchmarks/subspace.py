"""Convex-hull projections: the batched jax solver vs one cvxpy problem per sample.

The reference implementation builds and solves one cvxpy problem per sample
(default solver OSQP). Here: N photos in d dimensions for S samples x I
identities of L2-normalised, correlated, face-like features (identity mean +
noise, seeded), solved (a) by opom_jax.attack.subspace.convex_hull_batch,
jitted, all identities at once, timed after compilation (best of --repeats), and
(b) the reference's way. Accuracy: both are compared with a high-accuracy
CLARABEL solve; objectives are evaluated in float64 from each solver's
weights on the same float32-representable data.

  python benchmarks/subspace.py [--quick]

The last line is `speedup_vs_cvxpy=<x> max_rel_gap=<y>` (our max relative
objective gap vs CLARABEL).
"""
import argparse
import functools
import time

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.attack import capped_simplex_qp
from opom_jax.attack import subspace
from opom_jax.models.base import l2_normalize_np


def face_like(seed, identities, samples, n, d):
  """Identity mean + isotropic noise, normalised: pairwise cos ~0.3-0.8."""
  rng = np.random.default_rng(seed)
  mean = l2_normalize_np(rng.standard_normal((identities, 1, d)))
  spread = np.sqrt(rng.uniform(0.25, 2.3, (identities, 1, 1)))
  def draw(k):
    x = mean + spread * rng.standard_normal((identities, k, d)) / np.sqrt(d)
    return l2_normalize_np(x).astype(np.float32)
  return draw(n), draw(samples)


def cvxpy_weights(points, y, upper, solver):
  w = cp.Variable(points.shape[0])
  prob = cp.Problem(cp.Minimize(cp.sum_squares(points.T @ w - y)),
                    [cp.sum(w) == 1, w >= 0, w <= upper])
  if solver == "CLARABEL":
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
               tol_feas=1e-12)
  else:
    prob.solve(solver=getattr(cp, solver))
  return w.value


def objective(points, w, y):
  return float(np.sum((w @ points - y) ** 2))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--identities", type=int, default=50)
  parser.add_argument("--samples", type=int, default=10)
  parser.add_argument("--points", type=int, default=10)
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--upper", type=float, default=1.0)
  parser.add_argument("--iters", type=int, default=capped_simplex_qp.DEFAULT_ITERS)
  parser.add_argument("--repeats", type=int, default=50)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cvxpy_subset", type=int, default=None,
                      help="solve only this many samples with cvxpy and scale "
                           "its time per sample (default: all; 40 with --quick)")
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  subset = args.cvxpy_subset or (40 if args.quick else None)

  pts, ys = face_like(args.seed, args.identities, args.samples, args.points,
                      args.dim)
  valid = np.ones(pts.shape[:2], bool)
  capped_simplex_qp.check_bounds(valid, 0.0, args.upper)
  total = args.identities * args.samples
  iu = np.triu_indices(args.points, 1)
  cos = np.einsum("ind,imd->inm", pts, pts)[:, iu[0], iu[1]]
  print(f"data: {args.identities} identities x {args.samples} samples, "
        f"N={args.points} points in d={args.dim}, upper={args.upper}; "
        f"pairwise cos within an identity: 5%={np.percentile(cos, 5):.2f} "
        f"median={np.median(cos):.2f} 95%={np.percentile(cos, 95):.2f}")

  solve = jax.jit(functools.partial(
      subspace.convex_hull_batch, upper=args.upper, iters=args.iters))
  p_j, v_j, y_j = jnp.asarray(pts), jnp.asarray(valid), jnp.asarray(ys)
  t0 = time.perf_counter()
  proj = jax.block_until_ready(solve(p_j, v_j, y_j))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(solve(p_j, v_j, y_j))
    times.append(time.perf_counter() - t0)
  ours_s = min(times)
  print(f"jax convex_hull ({args.iters} FISTA iters + polish, "
        f"{jax.devices()[0].platform}): {ours_s * 1e3:.2f} ms for {total} "
        f"problems (best of {args.repeats}; median {np.median(times) * 1e3:.2f} "
        f"ms; first call incl. compile {compile_s:.2f} s)")

  # Samples for cvxpy: all, or an evenly spread subset.
  flat = [(i, j) for i in range(args.identities) for j in range(args.samples)]
  if subset and subset < total:
    flat = [flat[k] for k in np.linspace(0, total - 1, subset).astype(int)]
  p64, y64 = pts.astype(np.float64), ys.astype(np.float64)
  w_ours = np.asarray(proj.weights, np.float64)

  t0 = time.perf_counter()
  w_osqp = [cvxpy_weights(p64[i], y64[i, j], args.upper, "OSQP") for i, j in flat]
  osqp_per = (time.perf_counter() - t0) / len(flat)
  w_ref = [cvxpy_weights(p64[i], y64[i, j], args.upper, "CLARABEL")
           for i, j in flat]
  osqp_total = osqp_per * total
  scaled = "" if len(flat) == total else (
      f" (timed on {len(flat)} of {total} samples, scaled per sample)")
  print(f"cvxpy + OSQP, one problem per sample: {osqp_per * 1e3:.2f} ms per "
        f"sample -> {osqp_total:.2f} s for {total}{scaled}")

  def rel_gaps(ws):
    out = []
    for (i, j), w, wr in zip(flat, ws, w_ref):
      ref = objective(p64[i], wr, y64[i, j])
      out.append((objective(p64[i], w, y64[i, j]) - ref) / max(ref, 1e-12))
    return np.array(out)

  gap_ours = rel_gaps([w_ours[i, j] for i, j in flat])
  gap_osqp = rel_gaps(w_osqp)
  res = np.asarray(proj.residual)
  print(f"objective gap vs CLARABEL (relative, on {len(flat)} samples): ours "
        f"max {gap_ours.max():.2e} (min {gap_ours.min():.2e}); OSQP max "
        f"{gap_osqp.max():.2e} (min {gap_osqp.min():.2e})")
  print(f"our duality-gap residual: max {res.max():.2e}, median "
        f"{np.median(res):.2e}; weights: min {w_ours.min():.2e}, "
        f"|sum-1| max {np.abs(w_ours.sum(-1) - 1).max():.2e}")
  print(f"speedup_vs_cvxpy={osqp_total / ours_s:.0f} "
        f"max_rel_gap={max(gap_ours.max(), 0.0):.2e}")


if __name__ == "__main__":
  main()
