r"""Runs generate + evaluate over a grid of settings; one results table for all.

  python -m experiments.sweep --flagfile configs/sweep_eps.flags --workdir runs/sweep_eps

`--sweep` takes `field=v1,v2;field2=w1,w2` over RunConfig / AttackConfig
fields (e.g. `attack.eps=4,8,16;attack.rule=base,transfer`): the grid is the
product of the axes. Fields joined by `+` move together:
`attack.rule+attack.iters=base+16,transfer+100`. Each point runs
in <workdir>/<point name> with its own config.json, and sweep_results.md
collects every row with the point's settings.
"""
import dataclasses
import itertools
import pathlib

from absl import app
from absl import flags

from experiments import flags as run_flags
from opom_jax.run import evaluate
from opom_jax.run import faces as faces_lib
from opom_jax.run import generate
from opom_jax.run.config import RunConfig

SWEEP = flags.DEFINE_string("sweep", "", "Grid: 'attack.eps=4,8;attack.rule=base,transfer'.")


def _parse_value(base: RunConfig, field: str, text: str):
  section, _, name = field.strip().rpartition(".")
  owner = getattr(base, section) if section else base
  if not dataclasses.is_dataclass(owner) or name not in {f.name for f in dataclasses.fields(owner)}:
    raise flags.ValidationError(f"--sweep: unknown field {field.strip()!r}")
  kind = type(getattr(owner, name))
  try:
    if kind is bool:
      return section, name, text.lower() in ("1", "true")
    if kind is tuple:
      return section, name, tuple(text.split("/"))
    return section, name, kind(text)
  except ValueError as e:
    raise flags.ValidationError(f"--sweep: bad value for {field.strip()}: {e}") from None


def parse_grid(spec: str, base: RunConfig) -> list[tuple[str, RunConfig]]:
  axes = []
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    fields, _, values = part.partition("=")
    fields = fields.split("+")
    axis = []
    for value in values.split(","):
      texts = value.split("+")
      if len(texts) != len(fields):
        raise flags.ValidationError(f"--sweep: {value!r} needs one value per field of {'+'.join(fields)}")
      axis.append([_parse_value(base, f, t) for f, t in zip(fields, texts)])
    axes.append(axis)
  if not axes:
    raise flags.ValidationError("--sweep: give at least one 'field=v1,v2'")
  points = []
  for combo in itertools.product(*axes):
    cfg, label = base, []
    for section, name, value in itertools.chain.from_iterable(combo):
      if section:
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})
      else:
        cfg = dataclasses.replace(cfg, **{name: value})
      label.append(f"{name}={value}")
    name = "__".join(label).replace("/", "_")
    points.append((name, dataclasses.replace(cfg, workdir=str(pathlib.Path(base.workdir) / name))))
  for _, cfg in points:
    cfg.attack.validate()
  return points


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  base = run_flags.build_config()
  rows, faces, faces_data = [], None, None
  points = parse_grid(SWEEP.value, base)
  for i, (name, cfg) in enumerate(points):
    print(f"== sweep point {i + 1}/{len(points)}: {name}")
    if cfg.data != faces_data:  # points that only change the attack share the crops
      faces, faces_data = faces_lib.load_faces(cfg), cfg.data
    generate.generate(cfg, faces=faces)
    rows += [dict(r, method=f"{name}:{r['method']}") for r in evaluate.evaluate(cfg, faces=faces)]
  table = evaluate.table(rows)
  pathlib.Path(base.workdir, "sweep_results.md").write_text(table + "\n")
  print(table)


if __name__ == "__main__":
  run_flags.run(main)
