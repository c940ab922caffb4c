"""Stored masks, batch files, checkpoints and caches are never reused stale or damaged.

Each user report gets a test: a rerun in the same work directory with other
settings (eps, iters, people) and reused files that are damaged. The surrogate
is a tiny random network, so each run compiles in seconds.
"""
import dataclasses
import json

import numpy as np
import pytest

from opom_jax.attack import AttackConfig
from opom_jax.errors import UserError
from opom_jax.run import artefacts
from opom_jax.run.config import DataConfig, RunConfig
from opom_jax.run.evaluate import _cached_features
from opom_jax.run.generate import generate, mask_path
from opom_jax.run.learn import learn_masks
from tiny_surrogate import random_faces, tiny_surrogate

METHOD = "fi_uap"  # the cheapest loss to compile; the files do not depend on which


@pytest.fixture(scope="module")
def tiny():
  return tiny_surrogate()


def _faces(names, photos=3, seed=0):
  """A faces dict like load_faces', 'train' only, with smooth random photos."""
  images, _ = random_faces(len(names), photos, seed)
  return {"train": {"images": images.reshape((-1,) + images.shape[2:]).astype(np.uint8),
                    "identity": np.repeat(np.arange(len(names)), photos).astype(np.int32),
                    "names": list(names)}}


def _cfg(workdir, people=("A", "B"), **attack):
  data = DataConfig(data_root="/data", cache_dir=str(workdir) + "_cache", people=people)
  return RunConfig(workdir=str(workdir), data=data,
                   attack=AttackConfig(**{"loss": METHOD, "iters": 2, "nter": 1, **attack}),
                   surrogates=("tiny",), methods=(METHOD,), targets=(), people_per_batch=2)


def _generate(cfg, tiny, faces, log=None, **kw):
  return generate(cfg, log=log or (lambda _: None), faces=faces, surrogates=[tiny], **kw)[METHOD]


def _config_json(workdir) -> dict:
  return json.loads((workdir / "config.json").read_text())


def test_eps_change_is_refused_and_keeps_config(tmp_path, tiny):
  faces = _faces(["A", "B"])
  first = _generate(_cfg(tmp_path, eps=8.0), tiny, faces)
  with pytest.raises(UserError) as e:
    _generate(_cfg(tmp_path, eps=4.0), tiny, faces)
  message = str(e.value)
  assert "\n" not in message
  assert str(mask_path(tmp_path, METHOD)) in message
  assert "attack.eps=8.0, now 4.0" in message and "--overwrite" in message
  assert _config_json(tmp_path)["attack"]["eps"] == 8.0  # still describes the stored masks

  replaced = _generate(_cfg(tmp_path, eps=4.0), tiny, faces, overwrite=True)
  assert np.abs(replaced).max() <= 4.0 + 1e-5 and np.abs(first).max() > 4.0
  assert _config_json(tmp_path)["attack"]["eps"] == 4.0
  stored = artefacts.read_masks(mask_path(tmp_path, METHOD))
  assert stored.settings["attack"]["eps"] == 4.0
  np.testing.assert_array_equal(stored.masks, replaced)


def test_other_people_are_refused(tmp_path, tiny):
  _generate(_cfg(tmp_path, people=("A", "C")), tiny, _faces(["A", "C"]))
  with pytest.raises(UserError) as e:
    _generate(_cfg(tmp_path, people=("A", "B")), tiny, _faces(["A", "B"]))
  assert "data.people=['A', 'C'], now ['A', 'B']" in str(e.value)
  # Same flags, but the data now yields other people (e.g. a changed folder).
  with pytest.raises(UserError, match=r"people=\['A', 'C'\], now \['A', 'D'\]"):
    _generate(_cfg(tmp_path, people=("A", "C")), tiny, _faces(["A", "D"]))


def test_settings_masks_do_not_depend_on_are_not_refused(tmp_path, tiny):
  faces = _faces(["A", "B"])
  first = _generate(_cfg(tmp_path), tiny, faces)
  again = _generate(dataclasses.replace(_cfg(tmp_path), people_per_batch=1, targets=("x",)),
                    tiny, faces)
  np.testing.assert_array_equal(first, again)


class _Killed(Exception):
  pass


def _kill_at(text):
  def log(message):
    if text in message:
      raise _Killed(message)
  return log


def test_iters_change_does_not_resume_old_checkpoint(tmp_path, tiny):
  faces = _faces(["A", "B"])
  work = tmp_path / "work"
  # A 6-iteration run killed just after its checkpoint at iteration 3.
  with pytest.raises(_Killed):
    _generate(dataclasses.replace(_cfg(work, iters=6), checkpoint_every=3), tiny, faces,
              log=_kill_at("iteration 3/6"))
  assert list((work / "progress" / METHOD).glob("*/ckpt_00000/3"))

  messages = []
  short = _generate(dataclasses.replace(_cfg(work, iters=2), checkpoint_every=1), tiny, faces,
                    log=messages.append)
  assert not any("resumed" in m for m in messages), messages
  fresh = _generate(_cfg(tmp_path / "fresh", iters=2), tiny, faces)
  np.testing.assert_array_equal(short, fresh)

  # The 6-iteration run, asked for again, resumes its own checkpoint.
  messages = []
  long = _generate(dataclasses.replace(_cfg(work, iters=6), checkpoint_every=3), tiny, faces,
                   log=messages.append, overwrite=True)
  assert any("resumed at iteration 3" in m for m in messages), messages
  np.testing.assert_array_equal(long, _generate(_cfg(tmp_path / "fresh6", iters=6), tiny, faces))


@pytest.mark.parametrize("damaged,resumed_at", [((4,), 2), ((2, 4), None)])
def test_damaged_checkpoint_falls_back(tmp_path, tiny, damaged, resumed_at):
  faces = _faces(["A", "B"])
  cfg = dataclasses.replace(_cfg(tmp_path / "work", iters=6), checkpoint_every=2)
  with pytest.raises(_Killed):
    _generate(cfg, tiny, faces, log=_kill_at("iteration 4/6"))
  [ckpt] = (tmp_path / "work" / "progress" / METHOD).glob("*/ckpt_00000")
  for step in damaged:
    for f in (ckpt / str(step)).rglob("*"):
      if f.is_file():
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  messages = []
  masks = _generate(cfg, tiny, faces, log=messages.append)
  for step in damaged:
    assert any(f"{ckpt / str(step)} is damaged" in m for m in messages), messages
  if resumed_at:
    assert any(f"resumed at iteration {resumed_at}" in m for m in messages), messages
  else:
    assert any("starting the batch from scratch" in m for m in messages), messages
  np.testing.assert_array_equal(masks, _generate(_cfg(tmp_path / "fresh", iters=6), tiny, faces))


def test_damaged_batch_files_are_recomputed(tmp_path, tiny):
  images, valid = random_faces(4, 2)
  cfg = AttackConfig(loss=METHOD, iters=2)
  def run(log, learned=None):
    masks, count = learn_masks([tiny.apply], (tiny.params,), images, valid, cfg,
                               people_per_batch=2, workdir=tmp_path, log=log,
                               return_learned=True)
    if learned is not None:  # people learned rather than reused: what a cost per person counts
      assert count == learned
    return masks
  first = run(lambda _: None, learned=4)
  files = sorted(tmp_path.glob("*/batch_*.npy"))
  assert len(files) == 2
  rng = np.random.default_rng(0)
  files[0].write_bytes(rng.bytes(files[0].stat().st_size))         # not an .npy any more
  np.save(files[1], np.full(first[2:].shape, 2.6e38, np.float32))  # an .npy, far outside eps
  messages = []
  again = run(messages.append, learned=4)
  np.testing.assert_array_equal(again, first)
  for f, reason in zip(files, ("unreadable", "exceeds 8")):
    assert any(str(f) in m and "damaged" in m and reason in m and "recomputing" in m
               for m in messages), (f, messages)
  # Repaired: the next run reuses both.
  messages = []
  np.testing.assert_array_equal(run(messages.append, learned=0), first)
  assert sum("reused" in m for m in messages) == 2

  np.save(files[0], np.where(np.arange(first[:2].size).reshape(first[:2].shape) == 7, np.nan,
                             first[:2]).astype(np.float32))
  messages = []
  np.testing.assert_array_equal(run(messages.append, learned=2), first)
  assert any(str(files[0]) in m and "not finite" in m for m in messages), messages


def test_progress_is_keyed_by_settings(tmp_path, tiny):
  """Another seed or other photos never find this run's batch files."""
  images, valid = random_faces(2, 2)
  run = lambda imgs, seed: learn_masks([tiny.apply], (tiny.params,), imgs, valid,
                                       AttackConfig(loss=METHOD, iters=1), seed=seed,
                                       workdir=tmp_path, log=lambda _: None)
  base = run(images, 0)
  other_seed = run(images, 1)
  other_photos = run(images[::-1].copy(), 0)
  assert len(list(tmp_path.glob("*/batch_00000.npy"))) == 3
  assert not np.array_equal(base, other_seed)
  assert not np.array_equal(base, other_photos[::-1])
  settings = [json.loads(p.read_text()) for p in tmp_path.glob("*/settings.json")]
  assert sorted(s["seed"] for s in settings) == [0, 0, 1]


def test_one_person_masks_file_is_recomputed_by_generate(tmp_path, tiny):
  faces = _faces(["A", "B"])
  cfg = _cfg(tmp_path)
  first = _generate(cfg, tiny, faces)
  path = mask_path(tmp_path, METHOD)
  stored = artefacts.read_masks(path)
  artefacts.save_masks(path, stored.masks[:1], stored.names, stored.settings, 0.0)
  messages = []
  again = _generate(cfg, tiny, faces, log=messages.append)
  assert any(str(path) in m and "damaged" in m and "(1, 112, 112, 3)" in m for m in messages)
  np.testing.assert_array_equal(again, first)
  assert artefacts.read_masks(path).masks.shape == (2, 112, 112, 3)


def test_masks_without_settings_record_are_refused(tmp_path, tiny):
  faces = _faces(["A", "B"])
  path = mask_path(tmp_path, METHOD)
  path.parent.mkdir(parents=True)
  np.savez(path, masks=np.zeros((2, 112, 112, 3), np.float32), names=np.array(["A", "B"]))
  with pytest.raises(UserError, match="not recorded"):
    _generate(_cfg(tmp_path), tiny, faces)
  assert not (tmp_path / "config.json").exists()


def test_cached_features_are_keyed_and_checked(tmp_path):
  calls = []
  def embed(images):
    calls.append(len(images))
    return np.tile(images.reshape(len(images), -1)[:, :4].astype(np.float32) / 255.0, (1, 2))
  images = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
  a = _cached_features(tmp_path, "jax:m", "test_clean", images, embed)
  np.testing.assert_array_equal(_cached_features(tmp_path, "jax:m", "test_clean", images, embed), a)
  assert calls == [3]
  # Other photos (same count) land elsewhere and are embedded.
  b = _cached_features(tmp_path, "jax:m", "test_clean", images[::-1].copy(), embed)
  np.testing.assert_array_equal(b, a[::-1])
  assert calls == [3, 3]
  # A damaged cache file is reported by path and recomputed.
  path = next(p for p in tmp_path.glob("*.npy") if np.array_equal(np.load(p), a))
  np.save(path, np.full((3, 8), np.inf, np.float32))
  messages = []
  np.testing.assert_array_equal(
      _cached_features(tmp_path, "jax:m", "test_clean", images, embed, log=messages.append), a)
  assert calls == [3, 3, 3]
  assert any(str(path) in m and "damaged" in m for m in messages)


def test_settings_change_names_the_setting():
  old = {"attack": {"eps": 8.0, "iters": 16}, "people": ["A", "B"]}
  assert artefacts.settings_change(old, old) is None
  text = artefacts.settings_change(old, {"attack": {"eps": 4.0, "iters": 3}, "people": ("A", "B")})
  assert text.startswith("attack.eps=8.0, now 4.0") and "1 more: attack.iters" in text


def test_a_setting_added_later_is_no_change_at_its_default():
  """Masks stored before a setting existed stay valid while it is at its default (its old behaviour)."""
  from opom_jax.run.config import DataConfig, RunConfig
  cfg = RunConfig(workdir="/tmp/w", data=DataConfig(data_root="/d"))
  current = artefacts.mask_settings(cfg, "convex_hull", ["a", "b"])
  stored = json.loads(json.dumps(current))
  del stored["attack"]["ti_kernel"], stored["data"]["max_test"]
  assert artefacts.settings_change(stored, current) is None
  later = dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, ti_kernel=5))
  assert "attack.ti_kernel" in artefacts.settings_change(stored, artefacts.mask_settings(later, "convex_hull", ["a", "b"]))
  stored["attack"]["eps"] = 4.0  # settings both records have still count
  assert "attack.eps=4.0, now 8.0" in artefacts.settings_change(stored, current)
