r"""Runs generate + evaluate over a grid of settings; one results table for all.

  python -m experiments.sweep --flagfile configs/sweep_rules.flags --workdir runs/sweep_rules

`--sweep` takes `field=v1,v2;field2=w1,w2` over RunConfig fields, e.g.
`attack.eps=4,8,16;attack.rule=base,transfer` (grammar: opom_jax/run/sweep_grid.py).
Each point runs in <workdir>/<point name> with its own config.json, and
sweep_results.md collects every row with the point's settings.
"""
import pathlib

from absl import flags as absl_flags

from experiments import flags
from experiments import run_flags
from opom_jax.run import evaluate
from opom_jax.run import faces as faces_lib
from opom_jax.run import generate
from opom_jax.run import sweep_grid

SWEEP = absl_flags.DEFINE_string("sweep", "", "Grid: 'attack.eps=4,8;attack.rule=base,transfer'.")


def main(argv):
  del argv
  base = run_flags.build_config()
  points = sweep_grid.parse_grid(SWEEP.value, base)
  rows, faces, faces_data = [], None, None
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
  flags.run(main)
