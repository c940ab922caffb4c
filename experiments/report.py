r"""Bundles finished sweeps into a committed report: reports/<name>/README.md, tables, figures.

  python -m experiments.report --sweeps runs/lfw,runs/lfw_eps --out reports/lfw

The README starts with <out>/about.md (hand-written: what was run, the exact
commands, which claims the numbers confirm or refute), then per sweep a
black-box summary and the sweep's own report. Face images are not copied.
"""
import pathlib

from absl import flags as absl_flags

from experiments import flags
from opom_jax.errors import UserError
from opom_jax.eval import report_bundle

SWEEPS = absl_flags.DEFINE_list("sweeps", None, "Work directories of finished sweeps, in the order shown.", required=True)
OUT = absl_flags.DEFINE_string("out", None, "Report folder; its about.md opens the README.", required=True)


def main(argv):
  del argv
  out = pathlib.Path(OUT.value)
  about = out / "about.md"
  if not about.exists():
    raise UserError(f"--out={out}: {about} is missing; write what was run, the commands and "
                    "the claims there first")
  print(report_bundle.bundle([pathlib.Path(s) for s in SWEEPS.value], out, about.read_text()))


if __name__ == "__main__":
  flags.run(main)
