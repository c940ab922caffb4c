"""The per-image PGD baseline: a perturbation of its own for each test photo.

Learning runs against a tiny random surrogate (white-box, compiles in seconds)
on real LFW photos; evaluation uses the real foamliu network as the target.
"""
import csv
import dataclasses

import jax
import numpy as np
import pytest

from opom_jax import settings
from opom_jax.attack import AttackConfig
from opom_jax.errors import UserError
from opom_jax.run import artefacts
from opom_jax.run import methods
from opom_jax.run.config import DataConfig, RunConfig
from opom_jax.run.evaluate import evaluate
from opom_jax.run.generate import generate, mask_path
from opom_jax.runtimes.jax_runtime import JaxTarget
from run_checks import protection_at_1
from tiny_surrogate import tiny_surrogate

PGD = methods.PER_IMAGE_PGD
PEOPLE = ["Abdullah_Gul", "Alvaro_Uribe"]


def _split(photos: dict, names):
  images = np.concatenate([photos[n] for n in names])
  identity = np.concatenate([np.full(len(photos[n]), i, np.int32) for i, n in enumerate(names)])
  return {"images": images, "identity": identity, "names": list(names)}


@pytest.fixture(scope="module")
def faces(aligned_lfw):
  """Two people with 3 training and 3 test photos each; 12 distractors (a third person's
  photos and their mirror images)."""
  other = aligned_lfw["Angelina_Jolie"]
  return {"train": _split({n: aligned_lfw[n][:3] for n in PEOPLE}, PEOPLE),
          "test": _split({n: aligned_lfw[n][3:6] for n in PEOPLE}, PEOPLE),
          "distractor": _split({"Angelina_Jolie": np.concatenate([other, other[:, :, ::-1]])},
                               ["Angelina_Jolie"])}


@pytest.fixture(scope="module")
def tiny():
  return tiny_surrogate()


def _cfg(workdir, methods_=(PGD, "fi_uap"), eps=8.0, iters=10):
  return RunConfig(workdir=str(workdir),
                   data=DataConfig(data_root="/data", cache_dir=str(workdir / "cache")),
                   attack=AttackConfig(loss="fi_uap", eps=eps, step_size=1.0, iters=iters),
                   surrogates=("tiny",), methods=methods_, targets=(), people_per_batch=1)


def _cosine_to_clean(surrogate, clean_uint8, masks):
  """Cosine of each protected photo's feature (uint8 as a system receives it) to its clean one."""
  embed = jax.jit(surrogate.apply)
  unit = lambda f: np.asarray(f) / np.linalg.norm(np.asarray(f), axis=1, keepdims=True)
  protected = np.clip(clean_uint8.astype(np.float32) + masks, 0, 255).astype(np.uint8)
  clean = unit(embed(surrogate.params, clean_uint8.astype(np.float32)))
  return np.sum(unit(embed(surrogate.params, protected.astype(np.float32))) * clean, axis=1)


@pytest.fixture(scope="module")
def learned(tmp_path_factory, faces, tiny):
  workdir = tmp_path_factory.mktemp("pgd")
  lines = []
  masks = generate(_cfg(workdir), log=lines.append, faces=faces, surrogates=[tiny])
  return workdir, masks, lines


def test_the_baseline_is_a_method_not_a_loss():
  settings.check(RunConfig(workdir="w", methods=(PGD, "convex_hull")))
  with pytest.raises(settings.SettingError, match="unknown method 'pgd_per_imag'"):
    settings.check(RunConfig(workdir="w", methods=("pgd_per_imag",)))
  with pytest.raises(settings.SettingError):
    settings.check(AttackConfig(loss=PGD))


def test_each_test_photo_gets_its_own_perturbation_within_eps(learned, faces):
  workdir, masks, lines = learned
  pgd, test = masks[PGD], faces["test"]
  assert pgd.shape == (len(test["images"]), 112, 112, 3)
  assert 0 < np.abs(pgd).max() <= 8.0 + artefacts.BOUND_SLACK
  for person in range(len(PEOPLE)):
    rows = np.flatnonzero(test["identity"] == person)
    for a in rows:
      for b in rows[rows > a]:
        assert np.mean(np.abs(pgd[a] - pgd[b])) > 1.0, (a, b)   # not one mask per person
  stored = artefacts.read_masks(mask_path(workdir, PGD))
  assert stored.names == [f"{p}/{k}" for p in PEOPLE for k in range(3)]   # test photos, in order
  assert stored.settings["photos"] == stored.names and stored.settings["method"] == PGD
  assert stored.settings["attack"]["loss"] == "fi_uap"
  # people_per_batch (1) x most training photos of anyone (3) photos at a time.
  for batch in ("0-2", "3-5"):
    assert any(f"[{PGD}] test photos {batch} of 6, iteration 10/10" in line for line in lines)


def test_per_image_pgd_beats_the_universal_mask_on_its_own_photo(learned, faces, tiny):
  _, masks, _ = learned
  test = faces["test"]
  own = _cosine_to_clean(tiny, test["images"], masks[PGD])
  universal = _cosine_to_clean(tiny, test["images"], masks["fi_uap"][test["identity"]])
  assert np.sum(own < universal) >= 5, (own, universal)
  # Each perturbation was made for its photo: another photo's (same person) does less there.
  shifted = np.concatenate([np.roll(np.flatnonzero(test["identity"] == p), 1)
                            for p in range(len(PEOPLE))])
  swapped = _cosine_to_clean(tiny, test["images"], masks[PGD][shifted])
  assert np.sum(own < swapped) >= 5, (own, swapped)


def test_stored_baseline_is_reused_and_refused_when_stale(learned, faces):
  workdir, masks, _ = learned
  # Reused without learning: no surrogate is needed (loading "tiny" from the zoo would fail).
  again = generate(_cfg(workdir), log=lambda _: None, faces=faces)
  np.testing.assert_array_equal(again[PGD], masks[PGD])
  with pytest.raises(UserError, match="attack.eps=8.0, now 4.0"):
    generate(_cfg(workdir, eps=4.0), log=lambda _: None, faces=faces)
  fewer = dict(faces, test={k: v[1:] if k != "names" else v for k, v in faces["test"].items()})
  with pytest.raises(UserError, match=r"photos=\['Abdullah_Gul/0', .*now \['Abdullah_Gul/0'"):
    generate(_cfg(workdir, methods_=(PGD,)), log=lambda _: None, faces=fewer)


def test_evaluate_applies_each_photos_own_perturbation(tmp_path, faces, foamliu):
  cfg = dataclasses.replace(_cfg(tmp_path, methods_=(PGD,), eps=255.0), surrogates=("foamliu_mbf",))
  test = faces["test"]
  # Black-and-white noise on the first two test photos (both of the first person), none on
  # the rest: applied by person instead, every photo of both people would be noise.
  masks = np.zeros((len(test["images"]), 112, 112, 3), np.float32)
  masks[:2] = np.where(np.random.default_rng(0).random((2, 112, 112, 3)) < 0.5, -255.0, 255.0)
  artefacts.save_masks(mask_path(tmp_path, PGD), masks, methods.mask_keys(PGD, faces),
                       methods.mask_settings(cfg, PGD, faces), 0.0)
  target = JaxTarget(foamliu)
  rows = evaluate(cfg, log=lambda _: None, faces=faces, targets=[("white-box", target)],
                  verification=False)

  clean, dis = target.embed(test["images"]), target.embed(faces["distractor"]["images"])
  protect = lambda m: np.clip(test["images"] + m, 0, 255).astype(np.uint8)
  by_photo, _ = protection_at_1(target.embed(protect(masks)), clean, test["identity"], dis)
  by_person, _ = protection_at_1(target.embed(protect(masks[test["identity"]])), clean,
                               test["identity"], dis)
  assert by_photo != by_person
  row = {r["method"]: r for r in rows}[PGD]
  assert row["protect@1"] == pytest.approx(by_photo)
  assert "train_protect@1" not in row and "train_protect@1" in rows[0]
  with open(tmp_path / "results.csv") as f:
    written = {r["method"]: r for r in csv.DictReader(f)}
  assert written[PGD]["train_protect@1"] == "" and written["clean"]["train_protect@1"] != ""
  assert (tmp_path / "masks_preview.png").stat().st_size > 0
