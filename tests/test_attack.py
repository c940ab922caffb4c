"""The universal-mask attack on real faces with the real foamliu surrogate."""
import jax
import numpy as np
import pytest

from opom_jax import attack
from opom_jax.attack import losses
from opom_jax.attack import update_rules
from opom_jax.run.learn import learn_masks


# Abdullah_Gul: photos 0-2 teach the mask, 3-4 are held out. Alvaro_Uribe and
# Angelina_Jolie are the padding test's people.
TRAIN, HELD_OUT = slice(0, 3), slice(3, 5)
# One attack setting for the learning tests, so that they share compiled programs;
# no random start, so that one person's mask does not depend on their batch slot.
LEARN = attack.AttackConfig(loss="convex_hull", iters=6, nter=2, random_start=False)


def _batch(aligned, people, photos):
  images = np.stack([aligned[p][photos] for p in people]).astype(np.float32)
  return images, np.ones(images.shape[:2], bool)


@pytest.fixture(scope="module")
def embed(foamliu):
  """Compiled raw foamliu forward, shared by every test here (4-photo batches)."""
  return jax.jit(lambda v: foamliu.apply(foamliu.params, v))


def _unit(e):
  e = np.asarray(e, np.float64)
  return e / np.linalg.norm(e, axis=-1, keepdims=True)


def _cosines(embed, clean, other):
  e = _unit(embed(np.concatenate([clean, other]).astype(np.float32)))
  return np.sum(e[:len(clean)] * e[len(clean):], axis=-1)


def _learn(foamliu, images, valid, people_per_batch=10):
  return learn_masks([foamliu.apply], (foamliu.params,), images, valid, LEARN,
                     people_per_batch=people_per_batch, log=lambda _: None)


def test_base_rule_learns_a_universal_mask_that_moves_features(aligned_lfw, foamliu, embed):
  images, valid = _batch(aligned_lfw, ["Abdullah_Gul"], TRAIN)
  masks = _learn(foamliu, images, valid)
  assert masks.shape == (1, 112, 112, 3)
  assert np.abs(masks).max() <= LEARN.eps + 1e-5
  # 6 sign steps of size 1 (the warm-up, then the hull): the mask uses the budget.
  assert np.mean(np.abs(masks)) > 2.0
  # Held-out photos of the same person (never seen while learning) move away too.
  held_out = aligned_lfw["Abdullah_Gul"][HELD_OUT]
  protected = np.asarray(attack.apply_mask(held_out, masks[0]))
  noise = np.random.default_rng(0).uniform(-8, 8, held_out.shape)
  noisy = np.clip(held_out + noise, 0, 255).astype(np.uint8)
  cos_mask = _cosines(embed, held_out, protected)
  cos_noise = _cosines(embed, held_out, noisy)
  assert np.all(cos_mask < cos_noise - 0.1), (cos_mask, cos_noise)


@pytest.fixture(scope="module")
def signed_step_setup(aligned_lfw, foamliu, embed):
  """4 photos of one person from a random start inside eps, and two compiled programs.

  The image gradient of loss(f(x)) is J_f(x)^T grad_loss(f(x)): one compiled
  forward and one compiled vector-Jacobian product serve every loss.
  """
  images = aligned_lfw["Abdullah_Gul"][:4].astype(np.float32)
  rng = np.random.default_rng(3)
  x = np.clip(images + rng.uniform(-8, 8, images.shape), 0, 255).astype(np.float32)
  raw = lambda v: foamliu.apply(foamliu.params, v)
  image_grad = jax.jit(lambda v, cotangent: jax.vjp(raw, v)[1](cotangent)[0])
  return x, embed(images), embed, image_grad


# Past the convex hull's class-centre warm-up, so that the hull itself is tested.
PAST_WARM_UP = dict(step=10, nter=5)


@pytest.mark.parametrize("name", losses.LOSSES.names())
def test_a_signed_step_ascends_every_loss(signed_step_setup, name):
  """The attack maximises: +sign(grad) raises the loss, -sign(grad) lowers it.

  Both for the per-photo sign and for the universal mask's sign of the summed
  gradient (the base update rule), on real foamliu features of real faces.
  """
  x, clean, embed, image_grad = signed_step_setup
  valid = np.ones(len(x), bool)
  loss = jax.jit(lambda adv: losses.LOSSES.get(name)(
      adv, clean, valid, PAST_WARM_UP["step"], nter=PAST_WARM_UP["nter"]))
  value, feature_grad = jax.value_and_grad(loss)(embed(x))
  g = np.asarray(image_grad(x, feature_grad))
  assert np.isfinite(g).all() and np.abs(g).max() > 0
  full = attack.AttackConfig().step_size
  # The distances are quadratic around a minimum only a few levels away from
  # the random start: a full step down can overshoot it, so the two-sided,
  # first-order check uses a quarter step.
  for direction in (np.sign(g), np.broadcast_to(np.sign(g.sum(0)), g.shape)):
    assert loss(embed(x + full * direction)) > value, name
    up = loss(embed(x + full / 4 * direction))
    down = loss(embed(x - full / 4 * direction))
    assert down < value < up, (name, down, value, up)


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
  images, valid = _batch(aligned_lfw, ["Alvaro_Uribe", "Angelina_Jolie"], slice(0, 4))
  valid[1, 3] = False
  alone = _learn(foamliu, images[1:, :3], valid[1:, :3], 1)  # the first test's program
  together = _learn(foamliu, images, valid, 3)  # padded to 3 people, 4 photos each
  np.testing.assert_allclose(together[1], alone[0], atol=1e-3)
  assert not np.allclose(together[0], together[1])


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="eps"):
    attack.AttackConfig(eps=0).validate()
  with pytest.raises(KeyError, match="update rule"):
    attack.AttackConfig(rule="adam").validate()
