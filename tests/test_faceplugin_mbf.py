"""faceplugin_mbf: the ONNX import against onnxruntime, on real aligned LFW crops."""
import numpy as np

from opom_jax.models import zoo
from opom_jax.models.networks import faceplugin_mobilefacenet
from opom_jax.runtimes import onnx_runtime
import zoo_model_checks as checks

NAME = "faceplugin_mbf"


def test_feeds_bgr_scaled_by_128():
  # BGR separated LFW pairs better than the authors' RGB (module doc): red goes to channel 2.
  red = np.zeros((1, 112, 112, 3), np.uint8)
  red[..., 0] = 255
  y = faceplugin_mobilefacenet.preprocess(red)
  assert y.shape == (1, 3, 112, 112)
  np.testing.assert_allclose(y[0, :, 5, 5], [-127.5 / 128, -127.5 / 128, 127.5 / 128])


def test_matches_onnxruntime_batched_and_per_image(aligned_lfw):
  x = checks.crops_and_labels(aligned_lfw)[0][::3]
  jax_emb = zoo.load_target(f"jax:{NAME}").embed(x)
  batched = zoo.load_target(NAME).embed(x)
  single = onnx_runtime.faceplugin_runtime(one_image_per_run=True).embed(x)
  assert batched.shape == (6, 512)
  np.testing.assert_allclose(batched, single, atol=1e-5)
  np.testing.assert_allclose(jax_emb, single, atol=1e-4)
