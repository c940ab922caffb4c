r"""Lists the model zoo with its measured LFW accuracy.

  python -m experiments.models

One line per surrogate: registry name, architecture, embedding size, training
data and loss, `lfw=<percent>` (the JAX import on the 6000 LFW pairs, from
configs/lfw_accuracy.json, written by experiments.lfw_verify; `lfw=n/a` if not
measured), the original runtime's accuracy and the published figure.
"""
import json
import pathlib

from absl import flags as absl_flags

from experiments import flags
from opom_jax.errors import UserError
from opom_jax.eval import lfw_benchmark
from opom_jax.models import zoo

ACCURACY_FILE = absl_flags.DEFINE_string("accuracy_file", str(lfw_benchmark.ACCURACY_FILE),
                                         "JSON written by experiments.lfw_verify.")


def load_accuracies(path) -> dict:
  path = pathlib.Path(path)
  if not path.is_file():
    return {}
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"--accuracy_file={path} is not valid JSON ({e}); rerun experiments.lfw_verify") from None


def _fmt(x) -> str:
  return "n/a" if x is None else f"{x:.2f}"


def zoo_lines(accuracies: dict) -> list[str]:
  lines = []
  for name in zoo.names():
    e = zoo.ZOO[name]
    acc = accuracies.get(name, {})
    runtime = "none" if e.runtime is None else _fmt(acc.get("runtime"))
    pairs = f" pairs={acc['pairs']}" if "pairs" in acc else ""
    lines.append(f"{name:16s} arch={e.arch!r} emb={e.emb_dim} data={e.train_data!r} "
                 f"loss={e.loss!r} lfw={_fmt(acc.get('jax'))} runtime_lfw={runtime} "
                 f"published_lfw={_fmt(e.published_lfw)}{pairs}")
  for name, depth in sorted(zoo.IRESNETS.items()):
    lines.append(f"{name:16s} arch='IResNet-{depth} (random init; orbax checkpoint via "
                 f"{name}@<path>)' emb=512 data='none' loss='none' lfw=n/a runtime_lfw=none "
                 f"published_lfw=n/a")
  return lines


def main(argv):
  del argv
  for line in zoo_lines(load_accuracies(ACCURACY_FILE.value)):
    print(line)


if __name__ == "__main__":
  flags.run(main)
