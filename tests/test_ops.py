"""Shared model helpers: the fast depthwise convolution (values and both
gradients equal XLA's grouped convolution), dropout, L2 normalisation and the
canonical-batch check."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax.models import base
from opom_jax.models import ops


@pytest.mark.parametrize("size,k,stride,pad,dil", [
    (9, 3, 1, ((1, 1), (1, 1)), 1),
    (10, 3, 2, ((1, 1), (1, 1)), 1),
    (11, 3, 2, ((0, 1), (0, 1)), 1),   # TF-style asymmetric SAME padding
    (7, 7, 1, ((0, 0), (0, 0)), 1),    # MobileFaceNet's global depthwise conv
    (12, 3, 1, ((2, 2), (2, 2)), 2),
])
def test_depthwise_matches_grouped_conv(size, k, stride, pad, dil):
  rng = np.random.default_rng(size + k)
  x = jnp.asarray(rng.normal(size=(2, size, size, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 4)), jnp.float32)
  ref = lambda x, w: jax.lax.conv_general_dilated(
      x, w[:, :, None, :], (stride, stride), pad, rhs_dilation=(dil, dil),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4,
      precision=jax.lax.Precision.HIGHEST)
  mine = lambda x, w: ops.conv2d(x, w[:, :, None, :], (stride, stride), pad, (dil, dil), groups=4)
  y, ref_vjp = jax.vjp(ref, x, w)
  y2, my_vjp = jax.vjp(mine, x, w)
  np.testing.assert_allclose(y2, y, rtol=1e-5, atol=1e-5)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for a, b in zip(my_vjp(g), ref_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_pointwise_conv_is_a_channel_matmul():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 5, 5, 6)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(1, 1, 6, 3)), jnp.float32)
  ref = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_allclose(ops.conv2d(x, w), ref, rtol=1e-5, atol=1e-5)


def test_dropout_mask_has_the_rate_and_fresh_keys_give_fresh_masks():
  x = jnp.ones((8, 32, 32, 16))
  a = base.dropout(x, 0.1, jax.random.key(0)) == 0
  b = base.dropout(x, 0.1, jax.random.key(1)) == 0
  assert abs(float(a.mean()) - 0.1) < 0.005
  assert abs(float((a & b).mean()) - 0.01) < 0.002  # independent masks overlap at rate^2
  np.testing.assert_array_equal(a, base.dropout(x, 0.1, jax.random.key(0)) == 0)
  kept = base.dropout(x, 0.1, jax.random.key(0))
  assert float(kept.max()) == pytest.approx(1 / 0.9)  # inverted scaling keeps the mean
  assert base.dropout(x, 0.0, jax.random.key(0)) is x


def test_l2_normalize_numpy_and_jax_agree():
  v = np.array([[3.0, 4.0], [0.0, 0.0], [1e-20, 0.0]], np.float32)
  want = np.array([[0.6, 0.8], [0.0, 0.0], [1e-8, 0.0]], np.float32)  # eps 1e-12 floors tiny norms
  got = base.l2_normalize_np(v)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(base.l2_normalize(jnp.asarray(v)), want, rtol=1e-6)
  np.testing.assert_allclose(base.l2_normalize_np(v.T, axis=0), want.T, rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 112, 112), (2, 112, 96, 3), (112, 112, 3)])
def test_check_canonical_names_the_model_and_the_shape(shape):
  with pytest.raises(ValueError, match=r"^my_net: .* got shape " + re.escape(str(shape))):
    base.check_canonical(np.zeros(shape), "my_net")
  base.check_canonical(np.zeros((2, 112, 112, 3)), "my_net")
