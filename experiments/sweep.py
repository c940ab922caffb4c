r"""Runs generate + evaluate over a grid of settings, resumably; one results table and a report.

  python -m experiments.sweep --flagfile configs/sweep_quick.flags --workdir runs/sweep_quick

`--sweep` takes `field=v1,v2;field2=w1,w2` over RunConfig fields, e.g.
`attack.eps=4,8,16;attack.rule=base,transfer`; `+` moves fields together
(`data.dataset+data.n_train+data.min_photos=lfw-deepfunneled+10+15,att_faces+5+10`)
and `/` joins a tuple's items (`surrogates=foamliu_mbf/edgeface_xs`, an ensemble);
grammar: opom_jax/run/sweep_grid.py. Each point runs in <workdir>/<point> with its
own config.json; the same command again skips finished points and finishes the
rest. At the end <workdir>/results.csv holds every finished point's rows and
<workdir>/report.md its tables and figures; failed points (logged in
<workdir>/sweep.log and <point>/error.txt) make the exit status non-zero.
`--parallel=K` runs K points at once, each in its own process on its share of
the GPUs (on CPUs they share the cores).
"""
import os

from absl import flags as absl_flags

from experiments import flags
from experiments import run_flags
from opom_jax.errors import UserError
from opom_jax.run import sweep

SWEEP = absl_flags.DEFINE_string("sweep", "", "Grid: 'attack.eps=4,8;attack.rule=base,transfer'.")
PARALLEL = absl_flags.DEFINE_integer("parallel", 1, "Points run at once, each in its own process on its share of the GPUs.", lower_bound=1)


def main(argv):
  del argv
  if PARALLEL.value > 1:  # this process only checks the config: it must not hold the GPUs' memory
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  outcome = sweep.run_sweep(run_flags.build_config(), SWEEP.value, parallel=PARALLEL.value)
  if outcome.failed:
    raise UserError(f"{len(outcome.failed)} of {len(outcome.points)} sweep points failed: "
                    f"{', '.join(outcome.failed)} (errors in <point>/error.txt and "
                    f"{outcome.results.parent / sweep.LOG}); the others are in {outcome.results}")


if __name__ == "__main__":
  flags.run(main)
