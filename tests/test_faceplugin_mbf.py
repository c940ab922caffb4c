"""faceplugin_mbf: the ONNX import against onnxruntime, on real aligned LFW crops."""
import jax
import numpy as np
import pytest

from opom_jax.models import zoo
from opom_jax.models.networks import faceplugin_mobilefacenet
from opom_jax.runtimes import onnx_runtime
import zoo_model_checks as checks

NAME = "faceplugin_mbf"


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
  assert (entry.emb_dim, entry.published_lfw) == (512, None)
  assert NAME in zoo.surrogate_names() and entry.runtime is not None


def test_separates_identities(data):
  x, labels, emb = data
  assert emb.shape == (len(x), 512)
  auc, same, diff = checks.separation(emb, labels)
  print(f"auc {auc:.4f} same {same:.3f} diff {diff:.3f}")
  assert auc >= 0.97 and same - diff > 0.4


def test_feeds_bgr_scaled_by_128():
  # BGR separated LFW pairs better than the authors' RGB (module doc): red goes to channel 2.
  red = np.zeros((1, 112, 112, 3), np.uint8)
  red[..., 0] = 255
  y = faceplugin_mobilefacenet.preprocess(red)
  assert y.shape == (1, 3, 112, 112)
  np.testing.assert_allclose(y[0, :, 5, 5], [-127.5 / 128, -127.5 / 128, 127.5 / 128])


def test_gradient_ascends(surrogate, data):
  x, _, emb = data
  checks.check_gradient_ascends(surrogate, x[[0, 6]], checks.unit(emb[[0, 6]]))


def test_dfanet(surrogate, data, monkeypatch):
  # The ONNX rule: the stem conv and every conv feeding a residual Add (1 + 15).
  assert checks.count_dropout_sites(surrogate, monkeypatch) == 16
  x, _, emb = data
  checks.check_dfanet(surrogate, x[[0, 6]], emb[[0, 6]])


def test_matches_onnxruntime_batched_and_per_image(data):
  x = data[0][::3]
  jax_emb = zoo.load_target(f"jax:{NAME}").embed(x)
  batched = zoo.load_target(NAME).embed(x)
  single = onnx_runtime.faceplugin_runtime(one_image_per_run=True).embed(x)
  assert batched.shape == (6, 512)
  np.testing.assert_allclose(batched, single, atol=1e-5)
  np.testing.assert_allclose(jax_emb, single, atol=1e-4)
