"""Transfer techniques of the mask attack: each changes the update as it claims, each
is off by default, and they compose. Tiny surrogates (tests/tiny_surrogate.py)."""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy import signal

from experiments import flags as launcher_flags
from opom_jax import attack
from opom_jax.attack import ensemble
from opom_jax.attack import feature_loss
from opom_jax.attack import losses
from opom_jax.attack import low_frequency
from opom_jax.attack import translation_invariance
from opom_jax.attack import variance_tuning
from opom_jax.attack import variations
from opom_jax.attack.config import AttackConfig
from opom_jax.models import ops
from opom_jax.models.networks import iresnet
from opom_jax.run import artefacts
from opom_jax.run import config as config_lib
from opom_jax.run.config import RunConfig
from opom_jax.settings import SettingError
from tiny_surrogate import random_faces, tiny_surrogate

PEOPLE, PHOTOS = 2, 3
NEW_FIELDS = ("ti_kernel", "ti_sigma", "si_copies", "vt_samples", "vt_beta", "ensemble_subset",
              "ensemble_weighting", "dropout_rates", "variation_prob", "mask_resolution",
              "feature_weight", "feature_depth")


@pytest.fixture(scope="module")
def faces():
  images, valid = random_faces(PEOPLE, PHOTOS, seed=4)
  valid[1, 2] = False  # a padded photo
  return images, valid


def _run(surrogates, cfg, faces, steps=None, trace=None):
  """(state, [loss of each step]) after `steps` (default cfg.iters) jitted steps;
  `trace` (a list) receives the start state and the state after each step."""
  images, valid = faces
  init, step = attack.make_attack([s.apply for s in surrogates], cfg)
  init, step = jax.jit(init), jax.jit(step)
  params = tuple(s.params for s in surrogates)
  state = init(images, valid, attack.identity_keys(0, np.arange(len(images))), params)
  trace = [] if trace is None else trace
  trace.append(state)
  step_losses = []
  for _ in range(cfg.iters if steps is None else steps):
    state, loss = step(state, images, valid, params)
    trace.append(state)
    step_losses.append(np.asarray(loss))
  return state, step_losses


def _clean_loss(surrogate, cfg, x, images, valid):
  """The attack's loss for one identity at x, computed here from the loss and the model."""
  f = lambda v: surrogate.apply(surrogate.params, v)
  return losses.LOSSES.get(cfg.loss)(f(x), f(images), valid, 0, lower=cfg.lower,
                                     upper=cfg.upper, nter=cfg.nter)


# --- translation invariance -------------------------------------------------

def test_ti_smoothing_is_the_convolution_with_the_papers_gaussian():
  size = 7
  radius = 3
  sigma = radius / math.sqrt(3.0)  # Dong et al. 2019: a (2k+1)^2 kernel with sigma k/sqrt(3)
  yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
  kernel = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
  kernel /= kernel.sum()
  g = np.random.default_rng(0).normal(size=(2, 20, 24, 3)).astype(np.float32)
  smoothed = np.asarray(translation_invariance.smooth(jnp.asarray(g), size))
  for n in range(2):
    for c in range(3):
      expected = signal.convolve2d(g[n, :, :, c], kernel, mode="same", boundary="fill")
      np.testing.assert_allclose(smoothed[n, :, :, c], expected, atol=1e-5)
  # Smoother: far less energy in the pixel-to-pixel differences.
  assert np.abs(np.diff(smoothed, axis=2)).mean() < 0.3 * np.abs(np.diff(g, axis=2)).mean()


def test_ti_step_is_the_sign_of_the_smoothed_gradient(faces):
  images, valid = faces
  tiny = tiny_surrogate()
  cfg = AttackConfig(loss="class_center", iters=1, random_start=False, ti_kernel=9, ti_sigma=2.0)
  state, _ = _run([tiny], cfg, faces)
  yy, xx = np.mgrid[-4:5, -4:5]
  kernel = np.exp(-(xx ** 2 + yy ** 2) / (2 * 2.0 ** 2))
  kernel /= kernel.sum()
  for p in range(PEOPLE):
    g = jax.grad(lambda x: _clean_loss(tiny, cfg, x, images[p], valid[p]))(images[p])
    m = valid[p].astype(np.float32)
    mean_g = np.tensordot(m, np.asarray(g), axes=1) / m.sum()
    smooth = np.stack([signal.convolve2d(mean_g[..., c], kernel, mode="same")
                       for c in range(3)], -1)
    clear = np.abs(smooth) > 1e-3 * np.abs(smooth).max()  # signs of ~0 are rounding
    assert clear.mean() > 0.9
    # (x + 1) - x in float32 is 1 up to rounding
    np.testing.assert_allclose(np.asarray(state["delta"][p])[clear], np.sign(smooth)[clear],
                               atol=1e-4)


# --- scale invariance ------------------------------------------------------------

def test_si_loss_is_the_mean_over_the_darkened_copies(faces):
  images, valid = faces
  tiny = tiny_surrogate()
  cfg = AttackConfig(loss="fi_uap", iters=1, random_start=False, si_copies=3)
  _, (loss,) = _run([tiny], cfg, faces)
  for p in range(PEOPLE):
    expected = np.mean([_clean_loss(tiny, cfg, images[p] * 0.5 ** i, images[p], valid[p])
                        for i in range(3)])
    assert expected > 0  # the undarkened copy alone would give 0: the copies count
    np.testing.assert_allclose(loss[p], expected, rtol=1e-5)


# --- feature loss ------------------------------------------------------------------

def _tiny_conv_output(tiny, x):
  """The tiny surrogate's one convolution output (before its ReLU), computed here."""
  n = x.shape[0]
  pooled = ((x - 127.5) / 128.0).reshape(n, 14, 8, 14, 8, 3).mean(axis=(2, 4))
  return np.asarray(jax.lax.conv_general_dilated(
      pooled, tiny.params["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))


def test_feature_loss_adds_the_weighted_distortion_of_the_layer(faces):
  images, valid = faces
  tiny = tiny_surrogate()
  weight = 3.0
  plain_cfg = AttackConfig(loss="class_center", iters=1)
  _, (plain,) = _run([tiny], plain_cfg, faces)
  trace = []
  _, (with_feature,) = _run([tiny], dataclasses.replace(plain_cfg, feature_weight=weight),
                            faces, trace=trace)
  x_adv = np.asarray(trace[0]["x_adv"])  # the random start both runs share
  for p in range(PEOPLE):
    adv, clean = _tiny_conv_output(tiny, x_adv[p]), _tiny_conv_output(tiny, images[p])
    ratio = ((adv - clean) ** 2).sum(axis=(1, 2, 3)) / (clean ** 2).sum(axis=(1, 2, 3))
    expected = ratio[valid[p]].mean()   # the padded photo takes no part
    assert expected > 0
    np.testing.assert_allclose(with_feature[p] - plain[p], weight * expected, rtol=1e-4)


def test_recorded_layers_come_in_forward_order_and_depth_picks_one():
  w = np.ones((1, 1, 3, 3), np.float32)
  with ops.recording() as layers:
    y = ops.conv2d(jnp.ones((1, 4, 4, 3)), w)
    ops.conv2d(y * 2, w)
  assert [float(a[0, 0, 0, 0]) for a in layers] == [3.0, 18.0]
  assert ops.record(y) is y   # outside a recording nothing is kept
  assert [feature_loss.layer_index(5, d) for d in (0.0, 0.5, 1.0, 0.9)] == [0, 2, 4, 4]
  with pytest.raises(ValueError, match="recorded no activation"):
    feature_loss.layer_index(0, 0.5)


def test_flax_networks_record_each_block():
  model = iresnet.iresnet(18)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 112, 112, 3)))
  with ops.recording() as layers:
    jax.eval_shape(model.apply, variables, jnp.zeros((2, 112, 112, 3)))
  assert len(layers) == sum(iresnet.LAYERS[18])
  assert [a.shape[1] for a in layers[::2]] == [56, 28, 14, 7]


def test_feature_loss_distorts_the_layer_more(faces):
  images, valid = faces
  tiny = tiny_surrogate()
  cfg = AttackConfig(loss="class_center", iters=6)
  distortion = []
  for weight in (0.0, 100.0):
    state, _ = _run([tiny], dataclasses.replace(cfg, feature_weight=weight), faces)
    protected = np.clip(images + np.asarray(state["delta"])[:, None], 0, 255)
    adv = _tiny_conv_output(tiny, protected.reshape(-1, 112, 112, 3))
    clean = _tiny_conv_output(tiny, images.reshape(-1, 112, 112, 3))
    distortion.append(float(((adv - clean) ** 2).sum() / (clean ** 2).sum()))
  assert distortion[1] > 1.2 * distortion[0], distortion


# --- variance tuning ---------------------------------------------------------------

def test_vt_neighbourhood_gradient_samples_the_radius():
  a, radius, samples = 3.0, 2.0, 4
  x = jnp.linspace(-1.0, 1.0, 200_000)
  mean = variance_tuning.neighbourhood_mean_gradient(
      lambda v, key: a * v, x, jax.random.key(0), samples, radius)
  spread = np.asarray(mean - a * x) / a  # the mean of `samples` U(-radius, radius) draws
  assert np.abs(spread).max() <= radius
  assert abs(spread.mean()) < 0.01
  np.testing.assert_allclose(spread.std(), radius / math.sqrt(3 * samples), rtol=0.02)
  at_x = variance_tuning.neighbourhood_mean_gradient(
      lambda v, key: a * v, x, jax.random.key(0), samples, 0.0)
  np.testing.assert_allclose(at_x, a * x, rtol=1e-6)


TRANSFER = AttackConfig(loss="class_center", rule="transfer", iters=3)


@pytest.fixture(scope="module")
def plain_trace(faces):
  """The start state and the state after each step of the TRANSFER attack."""
  trace = []
  _run([tiny_surrogate()], TRANSFER, faces, trace=trace)
  return trace


def test_vt_without_a_neighbourhood_is_the_plain_attack(faces, plain_trace):
  tuned, _ = _run([tiny_surrogate()], dataclasses.replace(TRANSFER, vt_samples=2, vt_beta=0.0),
                  faces)
  np.testing.assert_allclose(tuned["delta"], plain_trace[-1]["delta"], atol=1e-5)
  assert np.abs(np.asarray(tuned["variance"])).max() < 1e-6


def test_vt_variance_is_carried_to_the_next_step(faces, plain_trace):
  tuned = []
  _run([tiny_surrogate()], dataclasses.replace(TRANSFER, vt_samples=2, vt_beta=1.5), faces,
       trace=tuned)
  # The first step adds v_0 = 0; the variance it measured waits for the next one.
  np.testing.assert_allclose(tuned[1]["delta"], plain_trace[1]["delta"], atol=1e-5)
  assert np.abs(np.asarray(tuned[1]["variance"])).max() > 0
  assert not np.allclose(tuned[-1]["delta"], plain_trace[-1]["delta"])


# --- ensembles ------------------------------------------------------------------------

def _counted(surrogate, index, calls):
  """The surrogate, reporting each forward it really runs (not one that is traced and skipped)."""
  def apply(params, x, **kw):
    jax.debug.callback(lambda: calls.append(index))
    return surrogate.apply(params, x, **kw)
  return dataclasses.replace(surrogate, apply=apply)


def test_subset_runs_only_k_surrogates_per_step_and_all_over_the_run(faces):
  images, valid = faces
  calls = []
  surrogates = [_counted(tiny_surrogate(seed), seed, calls) for seed in range(3)]
  cfg = AttackConfig(loss="fi_uap", iters=12, ensemble_subset=1)
  init, step = attack.make_attack([s.apply for s in surrogates], cfg)
  step = jax.jit(step)
  params = tuple(s.params for s in surrogates)
  state = jax.jit(init)(images, valid, attack.identity_keys(0, np.arange(PEOPLE)), params)
  used = []
  for _ in range(cfg.iters):
    jax.effects_barrier()
    calls.clear()
    state, _ = step(state, images, valid, params)
    jax.effects_barrier()
    assert len(set(calls)) == 1, calls
    used.append(calls[0])
  assert set(used) == {0, 1, 2}


def test_subset_draw_is_k_of_m_and_varies_with_the_step():
  draws = np.stack([np.asarray(ensemble.draw_subset(t, 5, 2)) for t in range(40)])
  assert np.all(draws.sum(axis=1) == 2)
  assert np.all(draws.mean(axis=0) > 0.15)  # every surrogate is drawn
  assert len({tuple(d) for d in draws}) > 5


def _far_off(surrogate, offset):
  """Features pushed far from the origin: after normalisation they move ~|offset| times less,
  so its loss is on a scale ~|offset|^2 smaller, a stand-in for a differently scaled model."""
  return dataclasses.replace(
      surrogate, apply=lambda p, x, **kw: surrogate.apply(p, x, **kw) + offset)


def test_equalise_makes_both_surrogates_contribute_equally_at_the_start(faces):
  images, valid = faces
  a = tiny_surrogate(0)
  norm = float(np.linalg.norm(a.apply(a.params, images[0]), axis=-1).mean())
  b = _far_off(tiny_surrogate(1), np.full(16, 10 * norm / 4, np.float32))
  cfg = AttackConfig(loss="fi_uap", iters=1, ensemble_weighting="equalise")
  trace = []
  state, (loss,) = _run([a, b], cfg, faces, trace=trace)
  start = trace[0]["x_adv"]
  alone = np.array([[_clean_loss(s, cfg, start[p], images[p], valid[p]) for s in (a, b)]
                    for p in range(PEOPLE)])
  assert np.all(alone[:, 0] / alone[:, 1] > 50)
  weighted = np.asarray(state["loss_weights"]) * alone
  np.testing.assert_allclose(weighted[:, 0], weighted[:, 1], rtol=1e-4)
  # The weights have mean 1, so the first loss is the harmonic mean of the two.
  np.testing.assert_allclose(loss, 2 / (1 / alone[:, 0] + 1 / alone[:, 1]), rtol=1e-4)


def test_equalising_weights_have_mean_one_and_survive_zero_losses():
  w = np.asarray(ensemble.equalising_weights(jnp.array([0.01, 1.0, 0.1])))
  np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)
  weighted = w * np.array([0.01, 1.0, 0.1])
  np.testing.assert_allclose(weighted, weighted[0], rtol=1e-6)
  np.testing.assert_array_equal(ensemble.equalising_weights(jnp.zeros(2)), [1.0, 1.0])


# --- DFANet rate per surrogate -------------------------------------------------------

def _recording(surrogate, index, seen):
  def apply(params, x, *, dropout_rate=0.0, rng=None):
    seen.append((index, dropout_rate, rng is not None))  # at trace time: what the attack asks
    return surrogate.apply(params, x)
  return dataclasses.replace(surrogate, apply=apply)


def test_a_zero_rate_keeps_that_surrogate_deterministic(faces):
  seen = []
  surrogates = [_recording(tiny_surrogate(i), i, seen) for i in range(2)]
  _run(surrogates, AttackConfig(loss="fi_uap", iters=1, dropout_rates="0.3/0"), faces)
  assert {(i, rate, has_rng) for i, rate, has_rng in seen} == {(0, 0.3, True), (1, 0.0, False)}


def test_rates_per_surrogate_or_one_for_all():
  assert AttackConfig(dropout_rates="0.1/0/0.05").surrogate_dropout_rates(3) == (0.1, 0.0, 0.05)
  assert AttackConfig(dropout_rate=0.2).surrogate_dropout_rates(2) == (0.2, 0.2)
  assert AttackConfig().surrogate_dropout_rates(2) == (0.0, 0.0)


@pytest.mark.parametrize("rates, problem", [
    ("0.1/0.2", "has 2 rates for 1 surrogate;"),
    ("0.1/x", "is not `/`-separated numbers"),
    ("0.1/1.0", "has the rate 1, not in [0, 1)"),
])
def test_bad_rates_are_one_line_naming_the_flag(rates, problem, tmp_path):
  cfg = RunConfig(workdir=str(tmp_path), attack=AttackConfig(dropout_rates=rates))
  with pytest.raises(SettingError) as e:
    config_lib.validate(cfg)
  message = launcher_flags.flag_message(e.value, launcher_flags.FLAG_OF_SETTING)
  assert message.startswith(f"--dropout_rates={rates} ") and problem in message
  assert "\n" not in message


def test_rates_and_a_single_rate_are_not_both_given():
  with pytest.raises(SettingError, match="beside the single dropout rate 0.1"):
    AttackConfig(dropout_rate=0.1, dropout_rates="0.1/0").validate()


def test_subset_larger_than_the_ensemble_is_refused(tmp_path):
  cfg = RunConfig(workdir=str(tmp_path), attack=AttackConfig(ensemble_subset=2))
  with pytest.raises(SettingError, match=r"^attack\.ensemble_subset=2 is more than the 1 surrogate$"):
    config_lib.validate(cfg)


# --- photo variations ------------------------------------------------------------------

def test_warp_flips_shifts_and_rotates_like_numpy():
  photo = np.random.default_rng(1).uniform(0, 255, (12, 12, 3)).astype(np.float32)
  warp = lambda flip, angle, shift: np.asarray(variations._warp(  # pylint: disable=protected-access
      jnp.asarray(photo), flip, angle, jnp.asarray(shift, jnp.float32)))
  np.testing.assert_allclose(warp(True, 0.0, (0, 0)), photo[:, ::-1], atol=1e-4)
  np.testing.assert_allclose(warp(False, 0.0, (2, -3))[2:, :9], photo[:10, 3:], atol=1e-4)
  np.testing.assert_allclose(warp(False, np.pi / 2, (0, 0)),
                             ndimage.rotate(photo, 90, axes=(0, 1)), atol=1e-3)


def test_variations_touch_the_photo_not_the_perturbation(faces):
  images, _ = faces
  x = jnp.asarray(images[0])
  perturbation = np.random.default_rng(2).uniform(-8, 8, x.shape).astype(np.float32)
  x_adv = x + perturbation
  key = jax.random.key(3)
  assert variations.on_varied_photos(key, x, x_adv, 0.0) is x_adv
  varied = np.asarray(jax.jit(variations.vary, static_argnums=2)(key, x, 1.0))
  assert not np.allclose(varied, images[0], atol=1.0)
  assert 0.0 <= varied.min() and varied.max() <= 255.0
  x_in, vjp = jax.vjp(jax.jit(lambda v: variations.on_varied_photos(key, x, v, 1.0)), x_adv)
  inside = (varied + perturbation > 0) & (varied + perturbation < 255)
  np.testing.assert_allclose(np.asarray(x_in)[inside], (varied + perturbation)[inside], atol=1e-3)
  (grad,) = vjp(jnp.ones_like(x_in))
  np.testing.assert_array_equal(np.asarray(grad)[inside], 1.0)


def test_each_photo_gets_its_own_variation():
  same = jnp.broadcast_to(jnp.asarray(random_faces(1, 1)[0][0, 0]), (4, 112, 112, 3))
  varied = np.asarray(jax.jit(variations.vary, static_argnums=2)(jax.random.key(0), same, 1.0))
  assert all(not np.allclose(varied[0], varied[k], atol=1.0) for k in range(1, 4))


# --- low-frequency mask -------------------------------------------------------------------

def _high_frequency_share(mask, cutoff):
  """Share of the mask's (zero-mean) energy at spatial frequencies above `cutoff` cycles."""
  f = np.fft.fftfreq(mask.shape[0]) * mask.shape[0]
  high = (np.abs(f)[:, None] > cutoff) | (np.abs(f)[None, :] > cutoff)
  power = np.abs(np.fft.fft2(mask - mask.mean(axis=(0, 1)), axes=(0, 1))) ** 2
  return power[high].sum() / power.sum()


def test_bilinear_grid_fit_is_a_projection_within_eps():
  up = low_frequency.upsample_matrix(112, 28)
  assert np.all(up >= 0) and np.allclose(up.sum(axis=1), 1.0)
  delta = jnp.asarray(np.random.default_rng(0).normal(0, 10, (112, 112, 3)), jnp.float32)
  once = low_frequency.band_limit(delta, 28, 8.0)
  assert np.abs(np.asarray(once)).max() <= 8.0 + 1e-5
  np.testing.assert_allclose(low_frequency.band_limit(once, 28, 8.0), once, atol=1e-3)


def test_low_resolution_masks_are_smooth_and_within_eps(faces, plain_trace):
  cfg = dataclasses.replace(TRANSFER, mask_resolution=28)
  full = plain_trace[-1]
  smooth, _ = _run([tiny_surrogate()], cfg, faces)
  for p in range(PEOPLE):
    mask = np.asarray(smooth["delta"][p])
    assert np.abs(mask).max() <= cfg.eps + 1e-4
    assert np.abs(mask).mean() > 1.0  # still a mask, not smoothed away
    np.testing.assert_allclose(low_frequency.band_limit(mask, 28, cfg.eps), mask, atol=1e-3)
    share = _high_frequency_share(mask, 28)
    assert share < 0.03
    assert _high_frequency_share(np.asarray(full["delta"][p]), 28) > 5 * share


# --- settings ------------------------------------------------------------------------------

ALL_ON = AttackConfig(
    loss="fi_uap", rule="transfer", iters=2, diversity_prob=0.5, ti_kernel=5, si_copies=2,
    vt_samples=1, ensemble_subset=1, ensemble_weighting="equalise",
    variation_prob=0.5, mask_resolution=28, feature_weight=1.0)


def test_every_technique_composes(faces):
  state, step_losses = _run([tiny_surrogate(0), tiny_surrogate(1)], ALL_ON, faces)
  mask = np.asarray(state["delta"])
  assert np.all(np.isfinite(mask)) and np.all(np.isfinite(step_losses))
  assert np.abs(mask).max() <= ALL_ON.eps + 1e-4 and np.abs(mask).mean() > 0.1


def test_defaults_are_off():
  d = AttackConfig()
  assert (d.ti_kernel, d.si_copies, d.vt_samples, d.ensemble_subset, d.ensemble_weighting,
          d.dropout_rates, d.variation_prob, d.mask_resolution, d.feature_weight) == (
              0, 1, 0, 0, "mean", "", 0.0, 0, 0.0)


def test_new_settings_round_trip_and_key_the_stored_masks(tmp_path):
  cfg = RunConfig(workdir=str(tmp_path), surrogates=("foamliu_mbf", "edgeface_xs"),
                  attack=dataclasses.replace(ALL_ON, ensemble_subset=2, dropout_rates="0.1/0.05"))
  assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
  stored = artefacts.mask_settings(cfg, "fi_uap", ["a"])
  for name in NEW_FIELDS:
    assert stored["attack"][name] == json.loads(json.dumps(getattr(cfg.attack, name)))
  changed = dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, ti_kernel=7))
  assert "attack.ti_kernel=5, now 7" in artefacts.settings_change(
      stored, artefacts.mask_settings(changed, "fi_uap", ["a"]))


def test_every_new_setting_has_a_flag():
  for name in NEW_FIELDS:
    assert launcher_flags.FLAG_OF_SETTING[f"attack.{name}"] == name


@pytest.mark.parametrize("field, value", [
    ("ti_kernel", 4), ("ti_kernel", 1), ("ti_sigma", -1.0), ("si_copies", 0),
    ("vt_samples", -1), ("vt_beta", -0.5), ("ensemble_subset", -1),
    ("ensemble_weighting", "median"), ("variation_prob", 1.5), ("mask_resolution", 1),
    ("mask_resolution", 113), ("feature_weight", -1.0), ("feature_depth", 1.5)])
def test_bad_values_are_named(field, value):
  with pytest.raises(SettingError, match=rf"^attack\.{field}="):
    dataclasses.replace(AttackConfig(), **{field: value}).validate()
