"""The model zoo by name: each entry is a differentiable JAX surrogate and,
where its original runtime exists here, a black-box target run by it.

Imports are lazy so that a machine without dlib, onnxruntime or litert can
still use the other models.
"""
from __future__ import annotations

import dataclasses
import importlib
import pathlib
from typing import Callable

import jax

from opom_jax import paths
from opom_jax.models.base import Surrogate
from opom_jax.registry import Registry
from opom_jax.settings import SettingError


@dataclasses.dataclass(frozen=True)
class ZooEntry:
  name: str
  arch: str
  emb_dim: int
  train_data: str
  loss: str
  published_lfw: float | None
  file: str | None          # weights file under the model root (None: registry package)
  loader: str               # "module:function" taking the weights path
  runtime: str | None       # "module:function" taking model_root, or None


ZOO: Registry[ZooEntry] = Registry("model", {e.name: e for e in [
    ZooEntry("foamliu_mbf", "MobileFaceNet (ReLU6), ONNX", 128, "MS1M-refined", "ArcFace", 99.48,
             "foamliu_mobilefacenet.onnx", "opom_jax.models.networks.onnx_mobilefacenets:load_foamliu",
             "opom_jax.runtimes.onnx_runtime:foamliu_runtime"),
    # Published figures not in the model files: InsightFace's model zoo README (buffalo_sc
    # has buffalo_s's accuracy), and the EdgeFace paper's XS figure (none for int8 xs_q).
    ZooEntry("w600k_mbf", "MobileFaceNet w600k_mbf, ONNX int8", 512, "WebFace600K", "ArcFace", 99.70,
             "insightface_w600k_mbf_int8.onnx", "opom_jax.models.networks.onnx_mobilefacenets:load_w600k",
             "opom_jax.runtimes.onnx_runtime:w600k_runtime"),
    ZooEntry("y1_mbf", "MobileFaceNet y1, TFLite fp32", 128, "MS1M-ArcFace", "ArcFace m=0.5", 99.47,
             "insightface_mobilefacenet_y1_fp32.tflite", "opom_jax.models.networks.y1_mobilefacenet:load_y1",
             "opom_jax.runtimes.litert_runtime:y1_runtime"),
    ZooEntry("edgeface_xs", "EdgeFace-XS (EdgeNeXt x_small), qint8 Linear", 512, "WebFace12M",
             "CosFace m=0.4", 99.73, "edgeface_xs_q.pt", "opom_jax.models.networks.edgeface:load_edgeface", None),
    # The authors evaluate LFW with the face and its mirror image concatenated (256-d);
    # the single-view 128-d output is kept as xiaoccer_mbf_128.
    ZooEntry("xiaoccer_mbf", "MobileFaceNet 112x96, image+mirror", 256, "CASIA-WebFace",
             "ArcFace m=0.5", 99.30, "xiaoccer_mobilefacenet_casia.ckpt",
             "opom_jax.models.networks.xiaoccer_mobilefacenet:load_xiaoccer_flip", None),
    ZooEntry("xiaoccer_mbf_128", "MobileFaceNet 112x96, single view", 128, "CASIA-WebFace",
             "ArcFace m=0.5", 99.30, "xiaoccer_mobilefacenet_casia.ckpt",
             "opom_jax.models.networks.xiaoccer_mobilefacenet:load_xiaoccer", None),
    # Faceplugin gives no training data, loss or accuracy for its model.
    ZooEntry("faceplugin_mbf", "MobileFaceNet (PReLU, BN folded), ONNX", 512, "not stated",
             "not stated", None, "faceplugin_mobilefacenet.onnx",
             "opom_jax.models.networks.faceplugin_mobilefacenet:load_faceplugin",
             "opom_jax.runtimes.onnx_runtime:faceplugin_runtime"),
    ZooEntry("bubbliiiing_mbf", "MobileFaceNet, PyTorch state_dict", 128, "CASIA-WebFace",
             "ArcFace", 98.78, "bubbliiiing_arcface_mobilefacenet_casia.pth",
             "opom_jax.models.networks.bubbliiiing_mobilefacenet:load_bubbliiiing", None),
    # VGGFace2 per its authors (unverified); no LFW figure for this descriptor.
    ZooEntry("hse_faceres", "MobileNet v1 224x224 (HSE faceres), TF.js fp16", 1024, "VGGFace2",
             "softmax classification (unverified)", None, "hse_faceres_tfjs/faceres.json",
             "opom_jax.models.networks.hse_faceres:load_hse_faceres", None),
    ZooEntry("dlib_resnet", "dlib ResNet-34 style", 128, "~3M faces", "metric (triplet-like)", 99.38,
             None, "opom_jax.models.networks.dlib_resnet:load_dlib",
             "opom_jax.runtimes.dlib_runtime:dlib_runtime"),
]})


def _resolve(spec: str) -> Callable:
  module, fn = spec.split(":")
  return getattr(importlib.import_module(module), fn)


# Architectures without pretrained weights here: random init, or an orbax
# checkpoint given as "iresnet50@/abs/path/to/checkpoint".
IRESNETS = {"iresnet18": 18, "iresnet50": 50}


def names() -> list[str]:
  return sorted(ZOO)


def surrogate_names() -> list[str]:
  return sorted(ZOO) + sorted(IRESNETS)


def get_entry(name: str) -> ZooEntry:
  return ZOO.get(name)


def weights_of(name: str) -> str:
  """What a model's predictions come from: its weights file, or its name when it has none.

  Two names with the same weights (xiaoccer_mbf and its single view, a zoo model and
  its `jax:` import) are one model for a black-box protocol: a mask learned on one
  is white-box against the other.
  """
  arch = name.removeprefix("jax:")
  if arch not in ZOO:  # an IResNet checkpoint or a caller's own surrogate: its name is its weights
    return arch
  entry = ZOO[arch]
  return entry.file or entry.name


def target_name(name: str) -> str:
  """A zoo model as a target: its own runtime where it has one, else its JAX import."""
  return name if get_entry(name).runtime else f"jax:{name}"


def _load_iresnet(name: str) -> Surrogate:
  from opom_jax.models.networks import iresnet  # pylint: disable=g-import-not-at-top
  arch, _, ckpt = name.partition("@")
  depth = IRESNETS[arch]
  if ckpt:
    params, apply = iresnet.load_iresnet(depth, ckpt)
  else:
    params, apply = iresnet.init_iresnet(depth, jax.random.key(0)), iresnet.iresnet_apply(depth)
  return Surrogate(name=name, params=params, apply=apply, emb_dim=512)


def load_surrogate(name: str, model_root=None) -> Surrogate:
  if name.partition("@")[0] in IRESNETS:
    return _load_iresnet(name)
  entry = get_entry(name)
  path = paths.model_file(entry.file, model_root) if entry.file else None
  params, apply = _resolve(entry.loader)(path)
  return Surrogate(name=name, params=params, apply=apply, emb_dim=entry.emb_dim)


def load_target(name: str, model_root=None):
  """`<zoo name>` runs the model's own runtime; `jax:<zoo name>` runs the JAX import."""
  if name.startswith("jax:"):
    from opom_jax.runtimes.jax_runtime import JaxTarget  # pylint: disable=g-import-not-at-top
    return JaxTarget(load_surrogate(name[4:], model_root))
  entry = get_entry(name)
  if entry.runtime is None:
    raise KeyError(f"model {name!r} has no runtime here; use 'jax:{name}' as the target")
  runtime = _resolve(entry.runtime)(model_root)
  # Tables, cached embeddings and thresholds know a target by its zoo name, whichever way
  # it was loaded (a sweep's target list or a leave-one-out run).
  runtime.name = name
  return runtime


def check_weights(model_root: str, models: list[tuple[str, str]]):
  """The weights file of each (setting, model name) (dlib's come with its package).

  An unresolvable model root raises paths.MissingPathError, which names the flag
  and the environment variable to set.
  """
  for setting_name, name in models:
    arch, _, checkpoint = name.removeprefix("jax:").partition("@")
    if arch in IRESNETS:
      if checkpoint and not pathlib.Path(checkpoint).exists():
        raise SettingError(setting_name, name, f"names the checkpoint {checkpoint}, which does not exist")
      continue
    entry = ZOO[arch]
    if entry.file and not (paths.model_root(model_root or None) / entry.file).is_file():
      raise SettingError("model_root", model_root,
                         f"has no weights file {entry.file} (needed by {setting_name} {name})")
