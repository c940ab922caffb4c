"""Depthwise convolution kernel paths: equal values and gradients on the zoo's
shapes, and the selection rule (OPOM_DEPTHWISE, static default, measurement)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax.errors import UserError
from opom_jax.models import kernel_choice
from opom_jax.models import ops

# (size, kernel, stride, padding, dilation) of depthwise convolutions in the zoo.
ZOO_SHAPES = [
    (14, 3, 1, ((1, 1), (1, 1)), 1),   # MobileFaceNet blocks
    (14, 3, 2, ((1, 1), (1, 1)), 1),   # MobileFaceNet downsampling blocks
    (13, 3, 2, ((1, 1), (1, 1)), 1),   # odd size, stride 2
    (14, 3, 2, ((0, 1), (0, 1)), 1),   # TF/TFLite SAME padding at stride 2
    (7, 7, 1, ((0, 0), (0, 0)), 1),    # global depthwise conv (GDC)
    (14, 7, 1, ((3, 3), (3, 3)), 1),   # EdgeFace's k x k depthwise conv
    (12, 3, 1, ((2, 2), (2, 2)), 2),   # dilated (TF graphs)
]


def _conv_with(monkeypatch, path, x, w, stride, pad, dil):
  """Value and both gradients (for a fixed output cotangent) through ops.conv2d on `path`."""
  monkeypatch.setenv(ops.DEPTHWISE_ENV, path)  # read while tracing: a fresh jit per path
  conv = lambda x, w: ops.conv2d(x, w, (stride, stride), pad, (dil, dil), groups=x.shape[-1])

  @jax.jit
  def value_and_gradients(x, w):
    y, vjp = jax.vjp(conv, x, w)
    g = jnp.sin(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))  # an uneven cotangent
    return (y, *vjp(g))

  return value_and_gradients(x, w)


@pytest.mark.parametrize("size,k,stride,pad,dil", ZOO_SHAPES)
def test_paths_agree_in_value_and_gradients(monkeypatch, size, k, stride, pad, dil):
  rng = np.random.default_rng(size * k + stride)
  x = jnp.asarray(rng.normal(size=(3, size, size, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 1, 8)), jnp.float32)
  shifted = _conv_with(monkeypatch, "shifted", x, w, stride, pad, dil)
  grouped = _conv_with(monkeypatch, "grouped", x, w, stride, pad, dil)
  for name, a, b in zip(("value", "input gradient", "weight gradient"), shifted, grouped):
    assert a.shape == b.shape, name
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


def test_paths_agree_with_bfloat16_operands(monkeypatch):
  """Under operands_in(bfloat16) both paths round the same operands and sum in float32."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 14, 14, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 1, 8)), jnp.float32)
  with ops.operands_in(jnp.bfloat16):
    shifted = _conv_with(monkeypatch, "shifted", x, w, 2, ((1, 1), (1, 1)), 1)
    grouped = _conv_with(monkeypatch, "grouped", x, w, 2, ((1, 1), (1, 1)), 1)
  assert shifted[0].dtype == grouped[0].dtype == jnp.float32
  np.testing.assert_allclose(shifted[0], grouped[0], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(shifted[1], grouped[1], rtol=2e-2, atol=2e-2)


def test_default_on_cpu_is_the_shifted_sum_bit_for_bit(monkeypatch):
  monkeypatch.delenv(ops.DEPTHWISE_ENV, raising=False)
  assert jax.default_backend() == "cpu"
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 14, 14, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 1, 8)), jnp.float32)
  args = ((2, 2), ((1, 1), (1, 1)), (1, 1))
  assert ops.depthwise_path(x, w, *args) == ops.STATIC_DEPTHWISE["cpu"] == "shifted"
  np.testing.assert_array_equal(
      ops.conv2d(x, w, *args, groups=8),
      ops.depthwise_conv2d(x, w[:, :, 0, :], *args))


@pytest.mark.parametrize("path", ["shifted", "grouped"])
def test_the_override_picks_the_path(monkeypatch, path):
  monkeypatch.setenv(ops.DEPTHWISE_ENV, path)
  x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 1, 4))
  assert ops.depthwise_path(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1)) == path


def test_an_unknown_override_names_the_variable(monkeypatch):
  monkeypatch.setenv(ops.DEPTHWISE_ENV, "fastest")
  x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 1, 4))
  with pytest.raises(UserError, match="OPOM_DEPTHWISE=fastest .*grouped.*shifted"):
    ops.conv2d(x, w, (1, 1), ((1, 1), (1, 1)), groups=4)


def test_measuring_picks_a_path_once_per_shape_inside_jit(monkeypatch):
  monkeypatch.setenv(ops.DEPTHWISE_ENV, ops.MEASURE)
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 11, 11, 6)), jnp.float32)  # a shape no other test uses
  w = jnp.asarray(rng.normal(size=(3, 3, 1, 6)), jnp.float32)
  args = ((2, 2), ((1, 1), (1, 1)), (1, 1))
  before = kernel_choice.chosen()
  y = jax.jit(lambda x: ops.conv2d(x, w, *args, groups=6))(x)  # measured while tracing
  new = {k: v for k, v in kernel_choice.chosen().items() if k not in before}
  assert len(new) == 1
  (key, choice), = new.items()
  assert choice in ops.DEPTHWISE_PATHS
  assert "cpu" in key and (2, 11, 11, 6) in key
  assert ops.depthwise_path(x, w, *args) == choice
  assert kernel_choice.chosen() == {**before, **new}  # asked again: not measured again
  monkeypatch.setenv(ops.DEPTHWISE_ENV, "shifted")
  np.testing.assert_allclose(y, ops.conv2d(x, w, *args, groups=6), rtol=1e-5, atol=1e-5)
