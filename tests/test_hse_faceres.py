"""hse_faceres: the TF.js graph (checked against TF.js in test_tfjs_import.py) as a zoo model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax.models import zoo
from opom_jax.models.networks import hse_faceres
import zoo_model_checks as checks

NAME = "hse_faceres"


@pytest.fixture(scope="module")
def surrogate():
  return zoo.load_surrogate(NAME)


@pytest.fixture(scope="module")
def data(aligned_lfw, surrogate):
  x, labels = checks.crops_and_labels(aligned_lfw)
  emb = np.asarray(jax.jit(surrogate.apply)(surrogate.params, x.astype(np.float32)))
  return x, labels, emb


def test_registered():
  entry = zoo.get_entry(NAME)
  assert (entry.emb_dim, entry.runtime) == (1024, None)
  assert NAME in zoo.surrogate_names()
  with pytest.raises(KeyError, match=f"jax:{NAME}"):
    zoo.load_target(NAME)


def test_preprocess_is_caffe_bgr_at_224():
  red = jnp.zeros((1, 112, 112, 3)).at[..., 0].set(200.0)
  y = np.asarray(hse_faceres.preprocess(red))
  assert y.shape == (1, 224, 224, 3)
  # A flat image stays flat through padding and resizing; red lands in the last (R) channel.
  np.testing.assert_allclose(y[0, 100, 37], [-103.939, -116.779, 200.0 - 123.68], rtol=1e-5)
  np.testing.assert_allclose(np.ptp(y, axis=(1, 2)), 0.0, atol=1e-3)


def test_separates_identities(data):
  x, labels, emb = data
  assert emb.shape == (len(x), 1024)
  auc, same, diff = checks.separation(emb, labels)
  print(f"auc {auc:.4f} same {same:.3f} diff {diff:.3f}")
  # Its descriptors are post-ReLU6 means (all positive): different people sit near 0.4.
  assert auc >= 0.97 and same - diff > 0.2


def test_gradient_ascends(surrogate, data):
  x, _, emb = data
  checks.check_gradient_ascends(surrogate, x[[0, 6]], checks.unit(emb[[0, 6]]))


def test_dfanet(surrogate, data, monkeypatch):
  # MobileNet v1: the stem conv and the pointwise conv closing each of 13 blocks.
  assert checks.count_dropout_sites(surrogate, monkeypatch) == 14
  x, _, emb = data
  checks.check_dfanet(surrogate, x[[0, 6]], emb[[0, 6]])
