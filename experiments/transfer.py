r"""Leave-one-out transfer: each target's masks learned by the rest of the pool, evaluated on it.

  python -m experiments.transfer --flagfile configs/transfer_loo.flags --workdir runs/transfer_loo

Every --loo_targets model T (a zoo name: its own runtime where it has one, else
`jax:<name>`) gets masks learned by the --loo_pool models that do not share
T's weights, evaluated on T alone. --settings runs several attack settings,
each as a whole leave-one-out (the grammar of experiments.sweep's --sweep,
e.g. `attack.rule+attack.iters=base+16,transfer+100`; `|` between settings
changed one at a time: `base|attack.mask_resolution=28`). The ensemble and the
target of each run come from --loo_pool and --loo_targets, not --surrogates
and --targets. Writes <workdir>/transfer.md, transfer.csv, ablation.csv and
transfer.png; each (setting, target) works in <workdir>/<setting>/<target>,
so a killed run resumes where it stopped.
"""
import pathlib

from absl import flags as absl_flags

from experiments import flags
from experiments import run_flags
from opom_jax.models import zoo
from opom_jax.run import transfer

LOO_TARGETS = absl_flags.DEFINE_list(
    "loo_targets", list(transfer.DEFAULT_TARGETS),
    "Leave-one-out targets: zoo names (own runtime, else its JAX import) or jax:<name>.")
LOO_POOL = absl_flags.DEFINE_list(
    "loo_pool", zoo.names(),
    "Surrogate pool; each target's ensemble is the pool without the target's weight family.")
SETTINGS = absl_flags.DEFINE_string(
    "settings", "", "Attack settings to compare, each a full leave-one-out: "
    "'attack.rule+attack.iters=base+16,transfer+100' (empty: the flags' setting, named base).")


def main(argv):
  del argv
  base = run_flags.build_config()
  points = transfer.setting_points(SETTINGS.value, base, LOO_POOL.value)
  runs = transfer.plan(points, transfer.LooConfig(loo_targets=tuple(LOO_TARGETS.value),
                                                  loo_pool=tuple(LOO_POOL.value)))
  transfer.run(runs, base.workdir)
  print(pathlib.Path(base.workdir, "transfer.md").read_text())


if __name__ == "__main__":
  flags.run(main, renamed={"loo_targets": "loo_targets", "loo_pool": "loo_pool",
                           "sweep": "settings", "settings": "settings"})
