r"""Throughput of every zoo surrogate on this machine, and what fraction of peak it is.

Per model, on the canonical batch (10 x 112 x 112 x 3 float32): images/s of the
jitted forward and of forward + backward (gradient of an embedding loss with
respect to the input, what an attack iteration costs), best of a few timed runs
after warm-up; FLOPs per image from XLA's cost analysis of the compiled program;
and the fraction of peak those imply.

  python -m benchmarks.models            # all zoo models + iresnet18/50
  python -m benchmarks.models --quick    # fewer repeats
  python -m benchmarks.models --models=foamliu_mbf,iresnet50

Peak (CPU) = cores x clock x FLOPs/cycle/core. Cores: os.sched_getaffinity;
clock: the mean 'cpu MHz' of /proc/cpuinfo (the current, not the turbo clock);
FLOPs/cycle: --flops_per_cycle, else read from the CPU's flags: 64 with AVX-512
(2 FMA units x 16 fp32 x 2), 32 with AVX2 + FMA (2 x 8 x 2). The figure is
printed with the table. (Before 2026-12-03 64 was assumed everywhere, which
halved the % of peak on this project's AVX2-only machine.)
"""
import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.models import base
from opom_jax.models import zoo

BATCH = 10


def cpu_peak(flops_per_cycle: float | None) -> tuple[float, str]:
  """(peak FLOP/s, how it was computed) for the cores this process may use."""
  cores = len(os.sched_getaffinity(0))
  mhz, flags = [], set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("cpu MHz"):
          mhz.append(float(line.split(":")[1]))
        elif line.startswith("flags") and not flags:
          flags = set(line.split(":")[1].split())
  except OSError:
    pass
  if flops_per_cycle:
    why = "--flops_per_cycle"
  elif "avx512f" in flags:
    flops_per_cycle, why = 64.0, "AVX-512: 2 FMA x 16 fp32 x 2"
  else:
    flops_per_cycle, why = 32.0, "AVX2 + FMA: 2 FMA x 8 fp32 x 2"
  ghz = (sum(mhz) / len(mhz) / 1000) if mhz else float("nan")
  peak = cores * ghz * 1e9 * flops_per_cycle
  return peak, (f"peak = {cores} cores x {ghz:.2f} GHz (/proc/cpuinfo 'cpu MHz') x "
                f"{flops_per_cycle:g} FLOP/cycle ({why}) = {peak / 1e9:.0f} GFLOP/s")


def flops_of(compiled) -> float:
  """XLA's FLOP estimate; cost_analysis() is a dict (new JAX) or a list of dicts (old)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def time_best(fn, args, repeats: int, iters: int) -> float:
  """Best seconds per call over `repeats` runs of `iters` calls."""
  jax.block_until_ready(fn(*args))  # warm-up
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(iters):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / iters)
  return best


def bench_model(name: str, repeats: int, iters: int) -> dict:
  surrogate = zoo.load_surrogate(name)
  apply, params = surrogate.apply, surrogate.params
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (BATCH, 112, 112, 3)), jnp.float32)
  direction = base.l2_normalize(jnp.ones((surrogate.emb_dim,), jnp.float32))

  def forward(p, x):
    return apply(p, x)

  def loss(p, x):  # an embedding loss like the attack's: cosine to a fixed direction
    return jnp.sum(base.l2_normalize(apply(p, x)) * direction)

  forward_backward = jax.grad(loss, argnums=1)
  row = {"name": name}
  for kind, fn in (("fwd", forward), ("fwd_bwd", forward_backward)):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(params, x).compile()
    row[f"{kind}_compile_s"] = time.perf_counter() - t0
    row[f"{kind}_flops"] = flops_of(compiled) / BATCH
    seconds = time_best(compiled, (params, x), repeats, iters)
    row[f"{kind}_ips"] = BATCH / seconds
  return row


def markdown_table(rows, peak: float) -> str:
  lines = ["| model | fwd img/s | fwd GFLOP/img | fwd % peak | fwd+bwd img/s | fwd+bwd GFLOP/img "
           "| fwd+bwd % peak |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    cells = [r["name"]]
    for kind in ("fwd", "fwd_bwd"):
      ips, flops = r[f"{kind}_ips"], r[f"{kind}_flops"]
      cells += [f"{ips:.1f}", f"{flops / 1e9:.3f}", f"{100 * ips * flops / peak:.1f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="1 repeat of 2 calls per measurement")
  parser.add_argument("--models", default="all",
                      help="comma-separated surrogate names, or 'all' (zoo + iresnet18/50)")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best kept)")
  parser.add_argument("--iters", type=int, default=5, help="calls per timed run")
  parser.add_argument("--flops_per_cycle", type=float, default=None,
                      help="peak fp32 FLOPs per cycle per core (CPU; default: from the CPU's flags)")
  parser.add_argument("--peak_gflops", type=float, default=0.0,
                      help="override the peak (e.g. an accelerator's), GFLOP/s")
  args = parser.parse_args()
  names = zoo.surrogate_names() if args.models == "all" else args.models.split(",")
  for n in names:
    if n.partition("@")[0] not in zoo.surrogate_names():
      parser.error(f"--models: unknown model {n!r}; choose from {zoo.surrogate_names()}")
  repeats, iters = (1, 2) if args.quick else (args.repeats, args.iters)
  if args.peak_gflops:
    peak, how = args.peak_gflops * 1e9, f"peak = {args.peak_gflops:g} GFLOP/s (--peak_gflops)"
  else:
    peak, how = cpu_peak(args.flops_per_cycle)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; batch {BATCH}; "
        f"best of {repeats} x {iters} calls; load average {os.getloadavg()[0]:.2f}", flush=True)
  print(how, flush=True)
  rows = []
  for name in names:
    row = bench_model(name, repeats, iters)
    print(f"{name}: fwd {row['fwd_ips']:.1f} img/s, fwd+bwd {row['fwd_bwd_ips']:.1f} img/s "
          f"(compile {row['fwd_compile_s']:.1f} + {row['fwd_bwd_compile_s']:.1f} s)", flush=True)
    rows.append(row)
  print()
  print(markdown_table(rows, peak))


if __name__ == "__main__":
  main()
