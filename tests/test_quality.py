"""SSIM of protected photos: dm-pix against an independent numpy restatement."""
import numpy as np
import pytest

from opom_jax.eval import quality


def _gaussian_window(size=11, sigma=1.5):
  x = np.arange(size) - (size - 1) / 2
  g = np.exp(-x ** 2 / (2 * sigma ** 2))
  g /= g.sum()
  return np.outer(g, g)


def _filter_valid(img, window):
  """Valid 2-D correlation of an (H, W) image with a (k, k) window."""
  k = window.shape[0]
  views = np.lib.stride_tricks.sliding_window_view(img, (k, k))
  return np.einsum("ijkl,kl->ij", views, window)


def _reference_ssim(a, b, peak=255.0):
  """Wang et al. 2004 per channel with a Gaussian window, averaged over the map and channels."""
  c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
  w = _gaussian_window()
  values = []
  for ch in range(a.shape[-1]):
    x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
    mx, my = _filter_valid(x, w), _filter_valid(y, w)
    sxx = _filter_valid(x * x, w) - mx ** 2
    syy = _filter_valid(y * y, w) - my ** 2
    sxy = _filter_valid(x * y, w) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    values.append(m.mean())
  return float(np.mean(values))


def _photos(n=3, seed=0):
  """Smooth random images (blurred noise), so SSIM is not trivially near 0."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (n, 14, 14, 3)).astype(np.float32)
  return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.uint8)


def _noisy(clean, sigma, seed=1):
  noise = np.random.default_rng(seed).normal(0, sigma, clean.shape)
  return np.clip(clean + noise, 0, 255).astype(np.uint8)


def test_identical_photos_have_ssim_one():
  clean = _photos()
  np.testing.assert_allclose(quality.ssim_per_photo(clean, clean), 1.0, atol=1e-6)
  assert quality.ssim(clean, clean) == pytest.approx(1.0, abs=1e-6)


def test_ssim_decreases_as_noise_grows():
  clean = _photos()
  values = [quality.ssim(_noisy(clean, s), clean) for s in (2, 8, 32, 96)]
  assert all(a > b for a, b in zip(values, values[1:])), values
  assert values[-1] < 0.5 < values[0]


def test_ssim_agrees_with_a_numpy_reference():
  clean = _photos(n=2)
  for sigma in (4, 40):
    noisy = _noisy(clean, sigma)
    got = quality.ssim_per_photo(noisy, clean)
    expected = [_reference_ssim(noisy[i], clean[i]) for i in range(len(clean))]
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_more_photos_than_a_batch_keep_their_order():
  clean = _photos(n=quality.BATCH + 3, seed=2)
  noisy = clean.copy()
  noisy[-1] = _noisy(clean[-1:], 60)[0]   # only the last photo, in the second batch, differs
  values = quality.ssim_per_photo(noisy, clean)
  assert values.shape == (quality.BATCH + 3,)
  np.testing.assert_allclose(values[:-1], 1.0, atol=1e-6)
  assert values[-1] < 0.9


def test_mismatched_shapes_are_refused():
  with pytest.raises(ValueError, match="same shape"):
    quality.ssim(_photos(n=2), _photos(n=3))
