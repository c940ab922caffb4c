"""AttackCheckpointer: exact round trip, and a damaged latest checkpoint falls back."""
import os

import jax
import numpy as np
import pytest

from opom_jax import attack
from opom_jax.run.checkpoint import AttackCheckpointer
from tiny_surrogate import random_faces, tiny_surrogate


@pytest.fixture(scope="module")
def states():
  """Real attack states: optax momentum state, PRNG keys; after 1 and 2 steps, and fresh."""
  s = tiny_surrogate()
  images, valid = random_faces(2, 3)
  init, step = attack.make_attack([s.apply], attack.AttackConfig(loss="fi_uap", rule="transfer"))
  init, step = jax.jit(init), jax.jit(step)
  out = {"fresh": init(images, valid, attack.identity_keys(1, np.arange(2)), (s.params,))}
  state = init(images, valid, attack.identity_keys(0, np.arange(2)), (s.params,))
  for i in (1, 2):
    state, _ = step(state, images, valid, (s.params,))
    out[i] = state
  return out


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_keeps_keys_and_optax_state(tmp_path, states):
  state, fresh = states[2], states["fresh"]
  ckpt = AttackCheckpointer(tmp_path / "ckpt")
  ckpt.save(2, state)
  restored = ckpt.restore(fresh)
  ckpt.close()
  _leaves_equal(restored, state)
  # The momentum buffer is part of what came back (not the fresh zeros).
  assert any(np.abs(np.asarray(x)).sum() > 0 for x in jax.tree.leaves(restored["opt_state"]))
  # The restored key draws the same numbers as the saved one.
  np.testing.assert_array_equal(jax.random.uniform(restored["key"][0], (4,)),
                                jax.random.uniform(state["key"][0], (4,)))


def _damage(step_dir, how):
  """Every data and metadata file of a checkpoint garbled or truncated."""
  rng = np.random.default_rng(0)
  files = [p for p in step_dir.rglob("*") if p.is_file() and "ocdbt.process" not in str(p)
           and p.name != "commit_success.txt"]
  assert files
  for p in files:
    size = p.stat().st_size
    p.write_bytes(rng.bytes(size) if how == "garbage" else p.read_bytes()[: size // 2])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_damaged_latest_falls_back_to_previous(tmp_path, states, how):
  early, late, fresh = states[1], states[2], states["fresh"]
  ckpt = AttackCheckpointer(tmp_path / how)
  ckpt.save(4, early)
  ckpt.save(8, late)
  ckpt.close()
  _damage(tmp_path / how / "8", how)
  messages = []
  ckpt = AttackCheckpointer(tmp_path / how)
  state, step = ckpt.restore_latest(fresh, log=messages.append)
  assert step == 4, how
  _leaves_equal(state, early)
  assert any(str(tmp_path / how / "8") in m and "damaged" in m for m in messages), messages
  # The bad one is gone, so the run can save step 8 again and restore it.
  ckpt.save(8, late)
  _leaves_equal(ckpt.restore(fresh, 8), late)
  ckpt.close()


def test_one_corrupt_data_file_is_caught_by_the_digest(tmp_path, states):
  """A file that still parses but holds other values is not resumed from."""
  state, fresh = states[2], states["fresh"]
  ckpt = AttackCheckpointer(tmp_path / "c")
  ckpt.save(4, state)
  ckpt.close()
  # Flip bytes in the middle of the largest data file (outside any header).
  data = max((p for p in (tmp_path / "c" / "4").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)
  raw = bytearray(data.read_bytes())
  mid = len(raw) // 2
  raw[mid:mid + 8] = os.urandom(8)
  data.write_bytes(bytes(raw))
  messages = []
  ckpt = AttackCheckpointer(tmp_path / "c")
  assert ckpt.restore_latest(fresh, log=messages.append) == (None, None)
  assert ckpt.all_steps() == []
  assert any(str(tmp_path / "c" / "4") in m and "digest" in m for m in messages), messages
  ckpt.close()


def test_state_that_fails_the_check_is_not_resumed(tmp_path, states):
  early, fresh = states[1], states["fresh"]
  ckpt = AttackCheckpointer(tmp_path / "c")
  ckpt.save(4, early)
  ckpt.save(8, dict(early, delta=early["delta"] * np.nan))
  messages = []
  finite = lambda s, i: None if np.all(np.isfinite(s["delta"])) else "nan"
  state, step = ckpt.restore_latest(fresh, check=finite, log=messages.append)
  ckpt.close()
  assert step == 4
  _leaves_equal(state, early)
  assert any("(nan)" in m for m in messages)
