"""The methods a run compares, looked up by name: how each method's masks are made.

Every attack loss is a universal method: one mask per protected person, learned
from the person's training photos. `pgd_per_image` is the baseline a universal
mask is measured against: a separate perturbation for each test photo, learned
with the same surrogates, eps, iterations, step size and rule, so the protection
a universal mask gives up shows as the gap to it.
"""
from __future__ import annotations

import dataclasses
import os

from opom_jax.attack.losses import LOSSES
from opom_jax.registry import Registry
from opom_jax.run import artefacts

PER_IMAGE_PGD = "pgd_per_image"


@dataclasses.dataclass(frozen=True)
class Method:
  loss: str        # the attack loss its masks maximise
  per_photo: bool  # one perturbation per test photo, not one mask per person


# On a single photo every loss pushes the photo's feature away from its own
# clean feature (the hull or centre of one point is that point; the mean cosine
# is its cosine), which is fi_uap's objective: plain feature-space PGD.
METHODS: Registry[Method] = Registry("method", {
    **{name: Method(loss=name, per_photo=False) for name in LOSSES},
    PER_IMAGE_PGD: Method(loss="fi_uap", per_photo=True),
})


def loss_of(name: str) -> str:
  """The loss a method's masks maximise.

  An unknown name gets a valid loss, so that the check of `methods`, not of
  `attack.loss`, refuses it, listing the methods to choose from.
  """
  return METHODS.get(name).loss if name in METHODS else next(iter(LOSSES))


def photo_keys(split: dict) -> list[str]:
  """`<person>/<file name>` of each photo of a split, in its order.

  Without file paths (arrays made in memory) a photo is `<person>/<k>`, the
  k-th photo of that person in the split.
  """
  people = [split["names"][i] for i in split["identity"]]
  if "paths" in split:
    return [f"{p}/{os.path.basename(path)}" for p, path in zip(people, split["paths"])]
  seen: dict[str, int] = {}
  keys = []
  for p in people:
    keys.append(f"{p}/{seen.get(p, 0)}")
    seen[p] = seen.get(p, 0) + 1
  return keys


def mask_keys(method: str, faces: dict) -> list[str]:
  """Whom the method's masks belong to, in stored order: the protected people or the test photos."""
  if METHODS.get(method).per_photo:
    return photo_keys(faces["test"])
  return list(faces["train"]["names"])


def mask_settings(cfg, method: str, faces: dict) -> dict:
  """What the method's masks depend on (artefacts.mask_settings, plus the photos of a per-photo method)."""
  kind = METHODS.get(method)
  names = list(faces["train"]["names"])
  if not kind.per_photo:
    return artefacts.mask_settings(cfg, method, names)
  return {**artefacts.mask_settings(cfg, kind.loss, names), "method": method,
          "photos": photo_keys(faces["test"])}
