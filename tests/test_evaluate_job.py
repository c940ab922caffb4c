"""The evaluate job on a tiny setting: rows and files, and one-line errors for bad masks."""
import csv

import numpy as np
import pytest

from opom_jax import paths
from opom_jax.attack import AttackConfig
from opom_jax.errors import UserError
from opom_jax.eval import paired, thresholds
from opom_jax.run import artefacts
from opom_jax.run.config import DataConfig, RunConfig
from opom_jax.run.evaluate import evaluate
from opom_jax.run.generate import mask_path
from opom_jax.runtimes.jax_runtime import JaxTarget
from run_checks import protection_at_1

METHOD = "convex_hull"


def _cfg(workdir, eps=255.0, data_root="/data"):
  return RunConfig(workdir=str(workdir),
                   data=DataConfig(data_root=data_root, cache_dir=str(workdir / "cache")),
                   attack=AttackConfig(eps=eps), surrogates=("foamliu_mbf",),
                   methods=(METHOD,), targets=())


def _split(people: dict, names):
  images = np.concatenate([people[n] for n in names])
  identity = np.concatenate([np.full(len(people[n]), i, np.int32) for i, n in enumerate(names)])
  return {"images": images, "identity": identity, "names": list(names)}


def _faces(aligned):
  """Two protected people (3 train, 3 test photos each); a third person's photos and
  their mirror images as 12 distractors."""
  names = ["Abdullah_Gul", "Alvaro_Uribe"]
  other = aligned["Angelina_Jolie"]
  return {"train": _split({n: aligned[n][:3] for n in names}, names),
          "test": _split({n: aligned[n][3:6] for n in names}, names),
          "distractor": _split({"Angelina_Jolie": np.concatenate([other, other[:, :, ::-1]])},
                               ["Angelina_Jolie"])}


def _rejection(probe, clean, identity, threshold):
  """Share of those pairs whose cosine is not above the verification threshold."""
  rejected = pairs = 0
  for i in range(len(probe)):
    for j in range(len(probe)):
      if i != j and identity[i] == identity[j]:
        pairs += 1
        rejected += not probe[i] @ clean[j] > threshold
  return rejected / pairs


def test_evaluate_writes_the_right_rows(tmp_path, aligned_lfw, foamliu):
  cfg = _cfg(tmp_path, data_root=str(paths.data_root()))
  faces = _faces(aligned_lfw)
  names = faces["train"]["names"]
  # A "mask" that replaces every photo of a person by the same black-and-white noise.
  noise = np.where(np.random.default_rng(0).random((2, 112, 112, 3)) < 0.5, -255.0, 255.0)
  artefacts.save_masks(mask_path(tmp_path, METHOD), noise.astype(np.float32), names,
                       artefacts.mask_settings(cfg, METHOD, names), 0.0)
  target = JaxTarget(foamliu)
  rows = evaluate(cfg, log=lambda _: None, faces=faces, targets=[("white-box", target)],
                  verification_max_images=24)

  assert [(r["method"], r["target"], r["box"]) for r in rows] == [
      ("clean", "jax:foamliu_mbf", "white-box"), ("random_255", "jax:foamliu_mbf", "white-box"),
      (METHOD, "jax:foamliu_mbf", "white-box")]
  test, dis = faces["test"], target.embed(faces["distractor"]["images"])
  clean = target.embed(test["images"])
  error_rate, pairs = protection_at_1(clean, clean, test["identity"], dis)
  noisy = np.clip(test["images"] + noise[test["identity"]], 0, 255).astype(np.uint8)
  noise_protection, _ = protection_at_1(target.embed(noisy), clean, test["identity"], dis)
  by_method = {r["method"]: r for r in rows}
  assert by_method["clean"]["protect@1"] == pytest.approx(error_rate)
  assert error_rate <= 0.25  # a real model recognises most clean pairs
  assert by_method[METHOD]["protect@1"] == pytest.approx(noise_protection)
  assert noise_protection >= 0.75
  assert all(r["pairs"] == pairs == 12 for r in rows)
  assert by_method["clean"]["psnr"] == float("inf") and by_method[METHOD]["psnr"] < 10
  assert by_method["clean"]["ssim"] == pytest.approx(1.0) and by_method[METHOD]["ssim"] < 0.2
  for r in rows:
    assert r["protect@1_lo"] <= r["protect@1"] <= r["protect@1_hi"]
    assert r["verif_reject_lo"] <= r["verif_reject"] <= r["verif_reject_hi"]

  # The threshold the job used is the cached one: recomputing would embed again.
  root = paths.data_root()
  t = thresholds.lfw_threshold(target.name, _no_embedding,
                               pairs_path=root / "lfw-protocol" / "pairs.txt",
                               lfw_dir=root / "lfw-deepfunneled", cache_dir=cfg.data.cache_dir,
                               max_images=24, log=lambda _: None)
  assert 0 < t.value < 1
  assert by_method["clean"]["verif_reject"] == pytest.approx(
      _rejection(clean, clean, test["identity"], t.value))
  assert by_method["clean"]["verif_reject"] <= 0.25
  assert by_method[METHOD]["verif_reject"] == pytest.approx(
      _rejection(target.embed(noisy), clean, test["identity"], t.value))
  assert by_method[METHOD]["verif_reject"] >= 0.75

  with open(tmp_path / "results.csv") as f:
    written = list(csv.DictReader(f))
  assert [(r["method"], r["target"]) for r in written] == [(r["method"], r["target"]) for r in rows]
  assert float(written[2]["protect@1"]) == pytest.approx(noise_protection, abs=1e-4)
  # Per-person counts (for paired comparisons) pool to each row's protect@1.
  counts, boxes, people = paired.read_per_person(tmp_path / paired.PER_PERSON)
  assert people == names and boxes == {"jax:foamliu_mbf": "white-box"}
  for r in rows:
    c = counts[(r["method"], "jax:foamliu_mbf")]
    assert list(c.pairs) == [6, 6]
    assert c.misses.sum() / c.pairs.sum() == pytest.approx(r["protect@1"])
    assert c.train_misses.sum() / c.train_pairs.sum() == pytest.approx(r["train_protect@1"])
  table = (tmp_path / "results.md").read_text().splitlines()
  assert len(table) == 2 + len(rows) and table[4].startswith(f"| {METHOD} | jax:foamliu_mbf |")
  assert (tmp_path / "protection.png").exists() and (tmp_path / "masks_preview.png").exists()
  assert (tmp_path / "protection_per_person.png").stat().st_size > 0

  # A second evaluation (a killed one restarted) embeds nothing again: every embedding,
  # protected photos included, is cached by its photos' digest; the rows are the same.
  class NoEmbedding:
    name = target.name
    embed = staticmethod(_no_embedding)
  again = evaluate(cfg, log=lambda _: None, faces=faces, targets=[("white-box", NoEmbedding())],
                   verification_max_images=24)
  assert again == rows


def _no_embedding(images):
  raise AssertionError(f"embedded {len(images)} images: the threshold was not cached")


class _ColourTarget:
  """A fast stand-in target: the mean colour of each 8x8 block, L2-normalised."""
  name = "colour_blocks"

  def embed(self, images):
    x = np.asarray(images, np.float32).reshape(len(images), 14, 8, 14, 8, 3).mean(axis=(2, 4))
    x = x.reshape(len(images), -1) - 127.5
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _save_tiny_masks(cfg, scale):
  masks = np.random.default_rng(1).uniform(-scale, scale, (2, 112, 112, 3)).astype(np.float32)
  artefacts.save_masks(mask_path(cfg.workdir, METHOD), masks, ["A", "B"],
                       artefacts.mask_settings(cfg, METHOD, ["A", "B"]), 0.0)


def test_verification_can_be_turned_off(tmp_path):
  cfg = _cfg(tmp_path, eps=8.0)   # /data holds no LFW: nothing may look for it
  _save_tiny_masks(cfg, 8.0)
  rows = evaluate(cfg, log=lambda _: None, faces=_tiny_faces(),
                  targets=[("black-box", _ColourTarget())], verification=False)
  assert [r["method"] for r in rows] == ["clean", "random_8", METHOD]
  assert all("verif_reject" not in r and 0 < r["ssim"] <= 1 for r in rows)
  with open(tmp_path / "results.csv") as f:
    written = list(csv.DictReader(f))
  assert written[0]["verif_reject"] == "" and float(written[0]["ssim"]) == pytest.approx(1.0)
  assert float(written[2]["ssim"]) < 1


def test_verification_without_lfw_names_the_missing_file(tmp_path):
  cfg = _cfg(tmp_path, eps=8.0, data_root=str(tmp_path / "no_data"))
  _save_tiny_masks(cfg, 8.0)
  with pytest.raises(UserError) as e:
    evaluate(cfg, log=lambda _: None, faces=_tiny_faces(), targets=[("black-box", _ColourTarget())])
  assert str(tmp_path / "no_data" / "lfw-protocol" / "pairs.txt") in str(e.value)


def _tiny_faces():
  rng = np.random.default_rng(0)
  split = lambda n: {"images": rng.integers(0, 255, (n, 112, 112, 3), dtype=np.uint8),
                     "identity": np.arange(n, dtype=np.int32) % 2, "names": ["A", "B"]}
  return {"train": split(4), "test": split(4), "distractor": split(2)}


def _evaluate_error(cfg) -> str:
  with pytest.raises(UserError) as e:
    evaluate(cfg, log=lambda _: None, faces=_tiny_faces(), targets=[])
  message = str(e.value)
  assert "\n" not in message and str(mask_path(cfg.workdir, METHOD)) in message
  return message


def test_missing_masks_name_the_file_and_the_command(tmp_path):
  assert "experiments.generate" in _evaluate_error(_cfg(tmp_path))


def test_corrupt_masks_name_the_file(tmp_path):
  path = mask_path(tmp_path, METHOD)
  path.parent.mkdir(parents=True)
  path.write_bytes(np.random.default_rng(0).bytes(5000))
  assert "damaged" in _evaluate_error(_cfg(tmp_path))


def test_one_person_masks_are_refused(tmp_path):
  cfg = _cfg(tmp_path, eps=8.0)
  settings = artefacts.mask_settings(cfg, METHOD, ["A", "B"])
  artefacts.save_masks(mask_path(tmp_path, METHOD), np.zeros((1, 112, 112, 3), np.float32),
                       ["A", "B"], settings, 0.0)
  assert "(1, 112, 112, 3)" in _evaluate_error(cfg)
  # Masks of other people (or made with another eps) are refused too, naming the setting.
  artefacts.save_masks(mask_path(tmp_path, METHOD), np.zeros((1, 112, 112, 3), np.float32),
                       ["A"], artefacts.mask_settings(cfg, METHOD, ["A"]), 0.0)
  assert "people=['A'], now ['A', 'B']" in _evaluate_error(cfg)
  assert "attack.eps=8.0, now 4.0" in _evaluate_error(_cfg(tmp_path, eps=4.0))


def test_masks_beyond_the_budget_are_refused(tmp_path):
  cfg = _cfg(tmp_path, eps=8.0)
  artefacts.save_masks(mask_path(tmp_path, METHOD), np.full((2, 112, 112, 3), 9.0, np.float32),
                       ["A", "B"], artefacts.mask_settings(cfg, METHOD, ["A", "B"]), 0.0)
  assert "exceeds 8" in _evaluate_error(cfg)

