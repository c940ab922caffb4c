"""The differentiable JPEG approximation against PIL's real JPEG, and the EOT option."""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from opom_jax import attack
from opom_jax.attack import eot, jpeg
from opom_jax.attack.config import AttackConfig
from opom_jax.settings import SettingError
from tiny_surrogate import tiny_surrogate


def _psnr(a, b):
  return 10 * np.log10(255.0 ** 2 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def _pil_jpeg(crop, quality):
  buffer = io.BytesIO()
  Image.fromarray(crop).save(buffer, format="JPEG", quality=quality)
  return np.asarray(Image.open(buffer).convert("RGB"), np.float64)


@pytest.fixture(scope="module")
def crops(aligned_lfw):
  return np.concatenate([faces[:2] for faces in aligned_lfw.values()])


@pytest.mark.parametrize("rounding", sorted(jpeg.ROUNDINGS))
@pytest.mark.parametrize("quality", [75, 85, 95])
def test_close_to_pil_jpeg(crops, quality, rounding):
  approx = np.asarray(jpeg.jpeg_approx(crops.astype(np.float32), quality, rounding))
  for crop, mine in zip(crops, approx):
    real = _pil_jpeg(crop, quality)
    assert _psnr(mine, real) > 38.0
    if quality <= 85:  # it models the loss: nearer the real JPEG than the untouched crop is
      assert _psnr(mine, real) > _psnr(crop, real) + 1.0


def test_lower_quality_loses_more(crops):
  x = crops.astype(np.float32)
  errors = [_psnr(jpeg.jpeg_approx(x, q), x) for q in (50, 75, 95)]
  assert errors[0] < errors[1] < errors[2]


def test_quality_100_is_near_identity(crops):
  x = crops.astype(np.float32)
  assert _psnr(jpeg.jpeg_approx(x, 100), x) > 40.0


def test_quant_tables_match_libjpeg_scaling():
  luma, chroma = jpeg.quant_tables(50)   # quality 50 is the standard table itself
  np.testing.assert_array_equal(luma, jpeg.LUMA_TABLE)
  np.testing.assert_array_equal(chroma, jpeg.CHROMA_TABLE)
  luma100, _ = jpeg.quant_tables(100)
  np.testing.assert_array_equal(luma100, np.ones((8, 8)))
  luma75, _ = jpeg.quant_tables(75)
  assert luma75[0, 0] == 8   # floor((16 * 50 + 50) / 100)


def test_odd_sizes_keep_their_shape():
  x = jnp.full((1, 37, 50, 3), 120.0)
  out = jpeg.jpeg_approx(x, 80)
  assert out.shape == x.shape
  np.testing.assert_allclose(out, x, atol=1.0)   # a flat grey survives JPEG


@pytest.mark.parametrize("rounding", sorted(jpeg.ROUNDINGS))
def test_gradient_is_finite_and_nonzero(crops, rounding):
  weights = jax.random.normal(jax.random.key(0), crops[:1].shape)
  grad = jax.grad(lambda x: jnp.sum(jpeg.jpeg_approx(x, 75, rounding) * weights))(
      crops[:1].astype(np.float32))
  assert np.all(np.isfinite(grad)) and np.abs(grad).mean() > 1e-3


def test_real_world_draws(crops):
  x = jnp.asarray(crops[:2], jnp.float32)
  np.testing.assert_array_equal(eot.real_world(jax.random.key(0), x, 0.0), x)
  out = jax.jit(lambda k: eot.real_world(k, x, 1.0))(jax.random.key(1))
  assert out.shape == x.shape and 25.0 < _psnr(out, x) < 60.0
  grad = jax.grad(lambda v: jnp.sum(eot.real_world(jax.random.key(1), v, 1.0) ** 2))(x)
  assert np.all(np.isfinite(grad)) and np.abs(grad).mean() > 0


def test_down_up_loses_detail(crops):
  x = jnp.asarray(crops[:1], jnp.float32)
  np.testing.assert_allclose(eot.down_up(x, jnp.float32(1.0)), x, atol=1e-3)
  assert _psnr(eot.down_up(x, jnp.float32(0.5)), x) < _psnr(eot.down_up(x, jnp.float32(0.8)), x)


def test_eot_prob_is_validated():
  with pytest.raises(SettingError, match="attack.eot_prob"):
    AttackConfig(eot_prob=1.5).validate()


def test_attack_step_with_eot_and_diversity(aligned_lfw):
  model = tiny_surrogate()   # the wiring is under test, not a real network
  params = (model.params,)
  faces = np.stack([aligned_lfw["Abdullah_Gul"][:3]]).astype(np.float32)
  valid = np.ones(faces.shape[:2], bool)
  cfg = AttackConfig(rule="base", iters=2, eot_prob=1.0, diversity_prob=1.0)
  init, step = attack.make_attack([model.apply], cfg)
  state = init(faces, valid, attack.identity_keys(0, [0]), params)
  plain_init, plain_step = attack.make_attack(  # the same draws of input diversity, no EOT
      [model.apply], AttackConfig(rule="base", iters=2, diversity_prob=1.0))
  plain = plain_init(faces, valid, attack.identity_keys(0, [0]), params)
  state, loss = jax.jit(step)(state, faces, valid, params)
  plain, _ = jax.jit(plain_step)(plain, faces, valid, params)
  assert np.all(np.isfinite(loss))
  assert np.abs(state["delta"]).max() <= cfg.eps
  # Optimising through the transformations moves the mask elsewhere than without them.
  assert not np.allclose(state["delta"], plain["delta"])
