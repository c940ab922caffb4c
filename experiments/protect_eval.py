r"""How much protection survives full photos, re-detection, JPEG and resizing.

  python -m experiments.protect_eval --people=8 --iters=16 --output=reports/protect

Learns each person's mask on aligned CelebA crops (one per --eot_probs value),
pastes it into the full test photos, transforms them, and lets each target
re-detect and re-align the face. Writes results.{md,csv,json} and examples.png.
"""
import pathlib

from absl import flags as absl_flags

from experiments import flags
from opom_jax.attack.config import AttackConfig
from opom_jax.errors import UserError
from opom_jax.eval import end_to_end, photo_figure
from opom_jax.eval import tables
from opom_jax.run.protect import mask_photo

_D = end_to_end.EndToEndConfig()
OUTPUT = absl_flags.DEFINE_string("output", "reports/protect", "Folder for the tables and figure.")
PEOPLE = absl_flags.DEFINE_integer("people", _D.people, "People evaluated (each needs n_train + 2 photos).")
N_TRAIN = absl_flags.DEFINE_integer("n_train", _D.n_train, "Photos per person the mask learns from.")
DISTRACTOR_PEOPLE = absl_flags.DEFINE_integer("distractor_people", _D.distractor_people, "Other people whose photos are distractors.")
SURROGATE = absl_flags.DEFINE_string("surrogate", _D.surrogate, "Zoo surrogate the masks are learned on.")
TARGETS = absl_flags.DEFINE_list("targets", list(_D.targets), "Recognisers (dlib_resnet: dlib's whole pipeline).")
TRANSFORMS = absl_flags.DEFINE_list("transforms", list(_D.transforms), "Real-world transformations.")
EOT_PROBS = absl_flags.DEFINE_list("eot_probs", [str(p) for p in _D.eot_probs], "One mask per value: 0 plain, > 0 with EOT.")
ITERS = absl_flags.DEFINE_integer("iters", _D.attack.iters, "Attack iterations.")
EPS = absl_flags.DEFINE_float("eps", _D.attack.eps, "L-inf budget, 0..255 pixel units.")
EXAMPLES = absl_flags.DEFINE_integer("examples", 3, "Protected photos shown in examples.png.")

RENAMED = {"people": "people", "n_train": "n_train", "distractor_people": "distractor_people",
           "surrogate": "surrogate", "targets": "targets", "transforms": "transforms",
           "attack.iters": "iters", "attack.eps": "eps", "attack.eot_prob": "eot_probs"}


def _eot_probs() -> tuple[float, ...]:
  try:
    return tuple(float(p) for p in EOT_PROBS.value)
  except ValueError:
    raise UserError(f"--eot_probs={','.join(EOT_PROBS.value)}: give numbers in [0, 1]") from None


def main(_):
  cfg = end_to_end.EndToEndConfig(
      data_root=flags.DATA_ROOT.value, model_root=flags.MODEL_ROOT.value,
      dataset=flags.DATASET.value if flags.DATASET.present else _D.dataset,
      people=PEOPLE.value, n_train=N_TRAIN.value, distractor_people=DISTRACTOR_PEOPLE.value,
      surrogate=SURROGATE.value, targets=tuple(TARGETS.value), transforms=tuple(TRANSFORMS.value),
      eot_probs=_eot_probs(),
      attack=AttackConfig(rule="base", eps=EPS.value, iters=ITERS.value,
                          step_size=min(1.0, EPS.value)))
  rows, people, masks = end_to_end.run(cfg)
  out = pathlib.Path(OUTPUT.value)
  print(tables.write_results(out, rows, list(end_to_end.COLUMNS)))
  shown = [(p, i) for i, p in enumerate(people)][:EXAMPLES.value]
  photo_figure.before_after(
      [p.test_photos[0] for p, _ in shown],
      {m: [mask_photo(p.test_photos[0], [p.test_faces[0].transform], masks[m][i], cfg.attack.eps)
           for p, i in shown] for m in masks},
      out / "examples.png")
  print(f"wrote {out}/results.md and {out}/examples.png")


if __name__ == "__main__":
  flags.run(main, RENAMED)
