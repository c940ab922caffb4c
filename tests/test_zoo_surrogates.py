"""Checks every newer zoo surrogate must pass, on real aligned LFW crops: registration,
identity separation, an input gradient that ascends, and keyed DFANet dropout."""
import jax
import numpy as np
import pytest

from opom_jax.models import zoo
import zoo_model_checks as checks

# name: (embedding size, published LFW %, has its own runtime, DFANet sites, min same-diff cosine)
MODELS = {
    # The ONNX rule: the stem conv and every conv feeding a residual Add (1 + 15).
    "faceplugin_mbf": (512, None, True, 16, 0.4),
    # conv1 + conv2_dw + the projection closing each of the 15 bottlenecks.
    "bubbliiiing_mbf": (128, 98.78, False, 17, 0.4),
    # MobileNet v1: the stem conv and the pointwise conv closing each of 13 blocks. Its
    # descriptors are post-ReLU6 means (all positive): different people sit near 0.4.
    "hse_faceres": (1024, None, False, 14, 0.2),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, aligned_lfw):
  surrogate = zoo.load_surrogate(request.param)
  x, labels = checks.crops_and_labels(aligned_lfw)
  emb = np.asarray(jax.jit(surrogate.apply)(surrogate.params, x.astype(np.float32)))
  return request.param, surrogate, x, labels, emb


def test_registered(model):
  name = model[0]
  emb_dim, published, has_runtime, _, _ = MODELS[name]
  entry = zoo.get_entry(name)
  assert (entry.emb_dim, entry.published_lfw, entry.runtime is not None) == (
      emb_dim, published, has_runtime)
  assert name in zoo.surrogate_names()
  if not has_runtime:
    with pytest.raises(KeyError, match=f"jax:{name}"):
      zoo.load_target(name)


def test_separates_identities(model):
  name, _, x, labels, emb = model
  assert emb.shape == (len(x), MODELS[name][0])
  auc, same, diff = checks.separation(emb, labels)
  assert auc >= 0.97 and same - diff > MODELS[name][4], (auc, same, diff)


def test_gradient_ascends(model):
  _, surrogate, x, _, emb = model
  checks.check_gradient_ascends(surrogate, x[[0, 6]], checks.unit(emb[[0, 6]]))


def test_dfanet(model, monkeypatch):
  name, surrogate, x, _, emb = model
  assert checks.count_dropout_sites(surrogate, monkeypatch) == MODELS[name][3]
  checks.check_dfanet(surrogate, x[[0, 6]], emb[[0, 6]])
