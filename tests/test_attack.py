"""The universal-mask attack on real faces with the real foamliu surrogate."""
import dataclasses

import jax
import numpy as np
import pytest

from opom_jax import attack
from opom_jax.attack import update_rules
from opom_jax.run.learn import learn_masks


def _batch(aligned, people, photos):
  images = np.stack([aligned[p][:photos] for p in people]).astype(np.float32)
  return images, np.ones(images.shape[:2], bool)


def _cosines(surrogate, clean, protected):
  a = np.asarray(surrogate.embed(clean))
  b = np.asarray(surrogate.embed(protected))
  return np.sum(a * b, axis=-1)


@pytest.mark.parametrize("loss", ["fi_uap", "convex_hull"])
def test_base_rule_learns_a_universal_mask_that_moves_features(aligned_lfw, foamliu, loss):
  images, valid = _batch(aligned_lfw, ["Abdullah_Gul"], 4)
  cfg = attack.AttackConfig(loss=loss, iters=6, nter=2)
  masks = learn_masks([foamliu.apply], (foamliu.params,), images, valid, cfg, log=lambda _: None)
  assert masks.shape == (1, 112, 112, 3)
  assert np.abs(masks).max() <= cfg.eps + 1e-5
  # Sign steps of size 1 from a random start: the mask uses most of the budget.
  assert np.mean(np.abs(masks)) > 2.0
  # Held-out photos of the same person (never seen while learning) move away too.
  held_out = aligned_lfw["Abdullah_Gul"][4:6]
  protected = attack.apply_mask(held_out, masks[0])
  noise = np.random.default_rng(0).uniform(-8, 8, held_out.shape)
  noisy = np.clip(held_out + noise, 0, 255).astype(np.uint8)
  cos_mask = _cosines(foamliu, held_out.astype(np.float32), np.asarray(protected, np.float32))
  cos_noise = _cosines(foamliu, held_out.astype(np.float32), noisy.astype(np.float32))
  assert np.all(cos_mask < cos_noise - 0.1), (cos_mask, cos_noise)


def test_update_rules_reproduce_the_reference_steps():
  rng = np.random.default_rng(0)
  grads = rng.normal(size=(3, 4, 5, 3)).astype(np.float32)
  valid = np.array([True, True, False])
  base = update_rules.base_rule(valid, 1.0)
  upd, _ = base.update(grads, base.init(grads))
  expected = np.sign(grads[:2].mean(0))  # sign of the mean over the real photos only
  np.testing.assert_array_equal(np.asarray(upd), np.broadcast_to(expected, grads.shape))

  tx = update_rules.transfer_rule(valid, 2.0)
  state = tx.init(grads)
  acc = np.zeros_like(grads)
  for g in (grads, -0.5 * grads + rng.normal(size=grads.shape).astype(np.float32)):
    upd, state = tx.update(g, state)
    acc += g / np.mean(np.abs(g), axis=(0, 1, 3), keepdims=True)  # per image column, like NCHW dims 0-2
    np.testing.assert_allclose(np.asarray(upd), 2.0 * np.sign(acc))


def test_projection_is_the_clipped_mean_perturbation():
  rng = np.random.default_rng(1)
  images = rng.uniform(0, 255, (4, 6, 6, 3)).astype(np.float32)
  x_adv = images + rng.uniform(-20, 20, images.shape).astype(np.float32)
  valid = np.array([True, True, True, False])
  delta, projected = attack.project_universal(x_adv, images, valid, 8.0)
  np.testing.assert_allclose(delta, np.clip((x_adv - images)[:3].mean(0), -8, 8), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(projected, np.clip(images + np.asarray(delta), 0, 255))


def test_padding_people_and_photos_does_not_change_masks(aligned_lfw, foamliu):
  """One compiled program for people with different photo counts: padding is inert."""
  cfg = attack.AttackConfig(loss="class_center", iters=3, random_start=False)
  run = lambda imgs, v, ppb: learn_masks([foamliu.apply], (foamliu.params,), imgs, v, cfg,
                                         people_per_batch=ppb, log=lambda _: None)
  images, valid = _batch(aligned_lfw, ["Alvaro_Uribe", "Angelina_Jolie"], 4)
  valid[1, 3] = False
  alone = run(images[1:, :3], valid[1:, :3], 1)
  together = run(images, valid, 3)  # padded to 3 people, 4 photos each
  np.testing.assert_allclose(together[1], alone[0], atol=1e-3)
  assert not np.allclose(together[0], together[1])


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="eps"):
    attack.AttackConfig(eps=0).validate()
  with pytest.raises(KeyError, match="update rule"):
    attack.AttackConfig(rule="adam").validate()
