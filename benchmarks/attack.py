r"""Seconds per person of the transfer setting: opom-jax vs the reference's cost structure.

The reference's transfer setting: convex hull, momentum + DFANet (dropout 0.1),
100 iterations, 10 photos, IResNet-50 surrogate. Its loop body, re-created in
the same process: PyTorch CPU IR-50 (the same weights) forward on the clean
photos through the dropout model, forward on the adversarial photos, backward
(parameters keep requires_grad, as in the reference), and one cvxpy problem
built and solved per photo per iteration (cvxpy's default solver). Both sides
time a few iterations after warm-up and scale to 100 (printed as such).

  python -m benchmarks.attack            # CPU: both sides, people per batch 1, 2, 4
  python -m benchmarks.attack --quick    # fewer iterations and batch sizes
  python -m benchmarks.attack --no_reference --faces=faces.npy   # accelerator: ours only

Last line: speedup_vs_reference=<x> (reference s/person over ours at the best
people-per-batch; with --no_reference, --reference_seconds supplies it).
"""
import argparse
import time

import jax
import numpy as np

from opom_jax import attack
from opom_jax.models.networks import iresnet

ITERATIONS = 100


def load_faces(path, count):
  if path:
    faces = np.load(path)
  else:  # real aligned LFW faces (needs dlib; not available on the accelerator machine)
    from opom_jax import paths  # pylint: disable=g-import-not-at-top
    from opom_jax.data import align  # pylint: disable=g-import-not-at-top
    root = paths.data_root() / "lfw-deepfunneled" / "Ariel_Sharon"
    faces = []
    for photo in sorted(root.iterdir()):
      try:
        faces.append(align.align_file(photo).crop)
      except align.AlignError:
        continue
      if len(faces) == count:
        break
    faces = np.stack(faces)
  return np.asarray(faces[:count], np.float32)


def time_ours(variables, faces, people, iters):
  apply = iresnet.iresnet_apply(50)
  cfg = attack.AttackConfig(loss="convex_hull", rule="transfer", iters=ITERATIONS, nter=5,
                            dropout_rate=0.1)
  init, step = attack.make_attack([apply], cfg)
  init, step = jax.jit(init), jax.jit(step)
  images = np.broadcast_to(faces, (people,) + faces.shape).copy()
  valid = np.ones(images.shape[:2], bool)
  keys = attack.identity_keys(0, np.arange(people))
  state = init(images, valid, keys, (variables,))
  for _ in range(2):  # compile + warm-up, then past the class-centre warm-up is irrelevant: both branches run
    state, loss = step(state, images, valid, (variables,))
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(iters):
    state, loss = step(state, images, valid, (variables,))
  jax.block_until_ready((state, loss))
  per_iter = (time.perf_counter() - t0) / iters
  return per_iter * ITERATIONS / people


def time_reference(variables, faces, iters):
  import cvxpy as cp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import build_torch_iresnet, canonical_to_torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = build_torch_iresnet(50, variables, dropout_rate=0.1)
  data = canonical_to_torch(faces)
  data_adv = data + torch.zeros_like(data).uniform_(-8 / 127.5, 8 / 127.5)
  grad_acc = 0

  def convex_hull_loss(adv, clean):
    a = adv / torch.linalg.norm(adv, dim=1, keepdim=True)
    c = clean / torch.linalg.norm(clean, dim=1, keepdim=True)
    A = c.detach().numpy()
    weights = torch.zeros((len(a), len(a)))
    for i in range(len(a)):  # one cvxpy problem per photo, as the reference
      w = cp.Variable(len(a))
      prob = cp.Problem(cp.Minimize(cp.sum_squares(w @ A - a[i].detach().numpy())),
                        [sum(w) == 1, 0.0 <= w, w <= 1.0])
      prob.solve()
      weights[i] = torch.tensor(w.value, dtype=torch.float32)
    return torch.nn.functional.mse_loss(weights @ c, a)

  def one_iteration():
    nonlocal data_adv, grad_acc
    clean = model(data)
    data_adv.requires_grad_()
    loss = convex_hull_loss(model(data_adv), clean)
    model.zero_grad()
    loss.backward()
    g = data_adv.grad
    norm = torch.abs(g).mean(0, keepdim=True).mean(1, keepdim=True).mean(2, keepdim=True)
    grad_acc = grad_acc + g / norm
    data_adv = data_adv.detach() + (1 / 127.5) * grad_acc.sign()
    eta = torch.clamp((data_adv - data).mean(0, keepdim=True), -8 / 127.5, 8 / 127.5)
    data_adv = torch.clamp(data + eta, -1, 1).detach()

  one_iteration()  # warm-up
  t0 = time.perf_counter()
  for _ in range(iters):
    one_iteration()
  return (time.perf_counter() - t0) / iters * ITERATIONS


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="2 timed iterations, batch sizes 1 and 2")
  parser.add_argument("--iters", type=int, default=3, help="timed iterations per configuration")
  parser.add_argument("--people", default="1,2,4", help="people per batch to time")
  parser.add_argument("--faces", default="", help=".npy of aligned faces (N, 112, 112, 3); default: LFW")
  parser.add_argument("--no_reference", action="store_true", help="skip PyTorch + cvxpy (no torch here)")
  parser.add_argument("--reference_seconds", type=float, default=0.0,
                      help="reference s/person measured elsewhere (with --no_reference)")
  args = parser.parse_args()
  iters = 2 if args.quick else args.iters
  people = [1, 2] if args.quick else [int(p) for p in args.people.split(",")]
  faces = load_faces(args.faces, 10)
  variables = iresnet.init_iresnet(50, jax.random.key(0))
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; IR-50 (random init), "
        f"{len(faces)} photos/person, timing {iters} iterations, scaled to {ITERATIONS}", flush=True)
  ours = {}
  for p in people:
    ours[p] = time_ours(variables, faces, p, iters)
    print(f"opom-jax  people/batch={p:3d}: {ours[p]:8.1f} s/person  ({3600 / ours[p]:.1f} people/hour)", flush=True)
  if args.no_reference:
    reference = args.reference_seconds
  else:
    reference = time_reference(variables, faces, iters)
    print(f"reference (torch CPU + cvxpy per photo): {reference:8.1f} s/person", flush=True)
  best = min(ours.values())
  if reference:
    print(f"speedup at people/batch=1: {reference / ours[people[0]]:.2f}x")
  print(f"speedup_vs_reference={reference / best if reference else float('nan'):.2f}")


if __name__ == "__main__":
  main()
