"""hse_faceres: the TF.js graph (checked against TF.js in test_tfjs_import.py) as a zoo model."""
import jax.numpy as jnp
import numpy as np

from opom_jax.models.networks import hse_faceres

def test_preprocess_is_caffe_bgr_at_224():
  red = jnp.zeros((1, 112, 112, 3)).at[..., 0].set(200.0)
  y = np.asarray(hse_faceres.preprocess(red))
  assert y.shape == (1, 224, 224, 3)
  # A flat image stays flat through padding and resizing; red lands in the last (R) channel.
  np.testing.assert_allclose(y[0, 100, 37], [-103.939, -116.779, 200.0 - 123.68], rtol=1e-5)
  np.testing.assert_allclose(np.ptp(y, axis=(1, 2)), 0.0, atol=1e-3)
