"""Input diversity: a random shrink-and-pad of the whole batch, differentiable, keyed."""
import jax
import jax.numpy as jnp
import numpy as np

from opom_jax.attack.transforms import input_diversity

SIZE = 40


def _frame_and_square():
  """Image 0 all bright (its footprint shows the resampling), image 1 a bright square."""
  x = np.zeros((2, SIZE, SIZE, 3), np.float32)
  x[0] = 255.0
  x[1, 10:20, 14:30] = 255.0
  return jnp.asarray(x)


def _bright_box(image):
  """(start, size) along (rows, columns) of the pixels brighter than half."""
  bright = np.asarray(image[..., 0]) > 127.5
  rows, cols = np.flatnonzero(bright.any(1)), np.flatnonzero(bright.any(0))
  start = np.array([rows[0], cols[0]])
  return start, np.array([rows[-1], cols[-1]]) + 1 - start


def test_probability_zero_is_the_identity():
  x = _frame_and_square()
  np.testing.assert_array_equal(input_diversity(jax.random.key(0), x, 0.0), x)


def test_probability_one_shrinks_and_moves_the_content_consistently():
  """Every key: one map p -> shift + scale * p, scale in [min_scale, 1), moves
  the whole picture and the square inside it; zero padding around.

  Linear resampling without antialiasing keeps edges sharp, so sizes and
  positions are read off to the pixel: a 1.5-pixel tolerance.
  """
  x = _frame_and_square()
  run = jax.jit(lambda k: input_diversity(k, x, 1.0, min_scale=0.5))
  square_start, square_size = _bright_box(x[1])
  sizes = []
  for seed in range(8):
    out = np.asarray(run(jax.random.key(seed)))
    assert out.shape == x.shape and out.dtype == np.float32
    frame_start, frame_size = _bright_box(out[0])
    sizes.append(frame_size[0])
    assert np.all(frame_size >= 0.5 * SIZE - 1) and np.all(frame_size <= SIZE), frame_size
    assert abs(frame_size[0] - frame_size[1]) <= 1  # one scale for both axes
    scale = frame_size.mean() / SIZE
    # The shrunk picture stays inside the frame and is zero around.
    assert np.all(frame_start >= 0) and np.all(frame_start + frame_size <= SIZE)
    outside = np.ones((SIZE, SIZE), bool)
    outside[frame_start[0]:frame_start[0] + frame_size[0],
            frame_start[1]:frame_start[1] + frame_size[1]] = False
    assert np.all(out[0][outside] == 0.0)
    # The square shrinks by the same factor and keeps its place in the picture.
    start, size = _bright_box(out[1])
    np.testing.assert_allclose(size, scale * square_size, atol=1.5)
    np.testing.assert_allclose(start - frame_start, scale * square_start, atol=1.5)
  # The scale is random: 8 keys give clearly different sizes, most well below 1.
  assert len(set(sizes)) >= 4 and min(sizes) <= 0.7 * SIZE, sizes


def test_deterministic_for_a_key_and_random_across_keys():
  x = _frame_and_square()
  run = jax.jit(lambda k: input_diversity(k, x, 0.5))
  np.testing.assert_array_equal(run(jax.random.key(3)), run(jax.random.key(3)))
  changed = [not np.array_equal(run(jax.random.key(i)), x) for i in range(40)]
  # prob = 0.5: about half of the keys resize (40 draws: 10..30 holds with
  # probability > 0.998).
  assert 10 <= sum(changed) <= 30, sum(changed)
  resized = [np.asarray(run(jax.random.key(i))) for i in range(40) if changed[i]]
  assert not np.array_equal(resized[0], resized[1])  # each key its own scale and shift


def test_gradient_is_the_adjoint_of_the_resampling():
  """A linear map for a fixed key: <grad of <f(x), w>, d> = <f(d), w>, and non-zero."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0, 255, (2, SIZE, SIZE, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  d = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  key = jax.random.key(1)
  f = jax.jit(lambda v: input_diversity(key, v, 1.0, min_scale=0.5))
  g = jax.grad(lambda v: jnp.sum(f(v) * w))(x)
  assert g.shape == x.shape and np.abs(g).max() > 0
  np.testing.assert_allclose(jnp.sum(g * d), jnp.sum(f(d) * w), rtol=1e-4)
  # Shrinking by at most 2 drops no pixel: each one reaches the output.
  assert np.all(np.asarray(jax.grad(lambda v: jnp.sum(f(v)))(x)) > 0)
