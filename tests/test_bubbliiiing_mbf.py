"""bubbliiiing_mbf: the JAX network against an independent numpy forward, on real LFW crops.

The numpy reference is written here from the authors' architecture, separately
from the JAX code: NCHW activations, the torch-layout (OIHW) weights as
`torch_reader` returns them, float64, im2col convolutions.
"""
import jax
import numpy as np

from opom_jax import paths
from opom_jax.models import zoo
from opom_jax.models.importers import torch_reader
import zoo_model_checks as checks

NAME = "bubbliiiing_mbf"


# ------------------------------------------------------------ numpy reference

def _conv(x, w, stride=1, pad=0, groups=1):
  """NCHW x OIHW via im2col."""
  n, _, h, wd = x.shape
  o, ig, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
  rows = (np.arange(ho) * stride)[:, None] + np.arange(kh)   # (ho, kh)
  cols = (np.arange(wo) * stride)[:, None] + np.arange(kw)   # (wo, kw)
  patches = xp[:, :, rows[:, None, :, None], cols[None, :, None, :]]   # n c ho wo kh kw
  patches = patches.reshape(n, groups, ig, ho, wo, kh, kw)
  y = np.einsum("ngihwab,goiab->ngohw", patches, w.reshape(groups, o // groups, ig, kh, kw),
                optimize=True)
  return y.reshape(n, o, ho, wo)


def _bn(x, sd, name):
  g, b = sd[name + ".weight"], sd[name + ".bias"]
  m, v = sd[name + ".running_mean"], sd[name + ".running_var"]
  return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]


def _prelu(x, a):
  return np.where(x > 0, x, a[:, None, None] * x)


def _conv_block(x, sd, name, stride=1, pad=0, dw=False):
  w = sd[name + ".conv.weight"]
  y = _conv(x, w, stride, pad, groups=w.shape[0] if dw else 1)
  return _prelu(_bn(y, sd, name + ".bn"), sd[name + ".prelu.weight"])


def _residual_block(x, sd, name, stride, residual):
  y = _conv_block(x, sd, name + ".conv")
  y = _conv_block(y, sd, name + ".conv_dw", stride, 1, dw=True)
  y = _bn(_conv(y, sd[name + ".project.conv.weight"]), sd, name + ".project.bn")
  return x + y if residual else y


def _numpy_forward(sd, images):
  sd = {k[len("arcface."):]: v.astype(np.float64) for k, v in sd.items()}
  x = ((images.astype(np.float64) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
  x = _conv_block(x, sd, "conv1", 2, 1)
  x = _conv_block(x, sd, "conv2_dw", 1, 1, dw=True)
  for entry, stage, n in (("conv_23", "conv_3", 4), ("conv_34", "conv_4", 6),
                          ("conv_45", "conv_5", 2)):
    x = _residual_block(x, sd, entry, 2, False)
    for i in range(n):
      x = _residual_block(x, sd, f"{stage}.model.{i}", 1, True)
  x = _prelu(_bn(_conv(x, sd["sep.weight"]), sd, "sep_bn"), sd["prelu.weight"])
  x = _bn(_conv(x, sd["GDC_dw.weight"], groups=512), sd, "GDC_bn")
  x = _bn(_conv(x, sd["features.weight"]), sd, "last_bn")
  return x.reshape(len(x), -1)


def test_matches_independent_numpy_forward(aligned_lfw):
  surrogate = zoo.load_surrogate(NAME)
  sd = torch_reader.load_state_dict(paths.model_file(zoo.get_entry(NAME).file))
  images = checks.crops_and_labels(aligned_lfw)[0][[0, 7]]
  ref = _numpy_forward(sd, images)
  assert ref.shape == (2, 128)
  raw = np.asarray(jax.jit(surrogate.apply)(surrogate.params, images.astype(np.float32)))
  np.testing.assert_allclose(raw, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
  # The black-box target is the same network, L2-normalised.
  np.testing.assert_allclose(zoo.load_target(f"jax:{NAME}").embed(images), checks.unit(ref),
                             atol=1e-5)
