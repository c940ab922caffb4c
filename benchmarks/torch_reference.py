"""PyTorch twin of opom_jax.models.networks.iresnet, for speed comparisons only.

A faithful re-implementation of the IResNet of insightface's arcface_torch
(NCHW, eval-mode BatchNorm) that can take a copy of the Flax variables, so a
benchmark can time the same network, with the same weights, in both
frameworks. It also has the DFANet dropout switch (same placement as the
Flax model) so an attack step costs the same work in both.

torch is an optional, benchmark-only dependency (``pip install .[bench]``);
it is imported inside the functions so the library never needs it.
"""
from __future__ import annotations

import functools

import numpy as np

from opom_jax.models.networks.iresnet import EMB_DIM, LAYERS, WIDTHS


@functools.cache
def _modules():
  """Defines the torch module classes on first use (torch imported lazily)."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)

  class IBasicBlock(nn.Module):

    def __init__(self, inplanes, planes, stride=1):
      super().__init__()
      self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
      self.conv1 = conv3x3(inplanes, planes)
      self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
      self.prelu = nn.PReLU(planes)
      self.conv2 = conv3x3(planes, planes, stride)
      self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
      self.downsample = None
      if stride != 1 or inplanes != planes:
        self.downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes, eps=1e-5))
      self.dropout_rate = 0.0

    def forward(self, x):
      p = self.dropout_rate
      out = self.bn1(x)
      out = F.dropout(self.conv1(out), p, training=p > 0)
      out = self.prelu(self.bn2(out))
      out = F.dropout(self.conv2(out), p, training=p > 0)
      out = self.bn3(out)
      identity = x if self.downsample is None else self.downsample(x)
      return out + identity

  class IResNet(nn.Module):

    def __init__(self, layers, num_features=EMB_DIM):
      super().__init__()
      self.conv1 = conv3x3(3, WIDTHS[0])
      self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=1e-5)
      self.prelu = nn.PReLU(WIDTHS[0])
      inplanes = WIDTHS[0]
      for stage, (width, blocks) in enumerate(zip(WIDTHS, layers)):
        stage_blocks = []
        for i in range(blocks):
          stage_blocks.append(IBasicBlock(inplanes, width, 2 if i == 0 else 1))
          inplanes = width
        setattr(self, f"layer{stage + 1}", nn.Sequential(*stage_blocks))
      self.bn2 = nn.BatchNorm2d(WIDTHS[-1], eps=1e-5)
      self.fc = nn.Linear(WIDTHS[-1] * 7 * 7, num_features)
      self.features = nn.BatchNorm1d(num_features, eps=1e-5)
      nn.init.constant_(self.features.weight, 1.0)
      self.features.weight.requires_grad = False
      self.dropout_rate = 0.0

    def set_dropout_rate(self, rate: float):
      for m in self.modules():
        if hasattr(m, "dropout_rate"):
          m.dropout_rate = float(rate)

    def forward(self, x):
      p = self.dropout_rate
      x = F.dropout(self.conv1(x), p, training=p > 0)
      x = self.prelu(self.bn1(x))
      x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
      x = torch.flatten(self.bn2(x), 1)
      return self.features(self.fc(x))

  return IResNet


def _copy_flax(model, variables):
  """Copies Flax IResNet variables into the torch twin (in place)."""
  import torch

  params, stats = variables["params"], variables["batch_stats"]

  def put(tensor, value):
    value = np.array(value, np.float32)  # a writable copy for torch
    if tuple(tensor.shape) != value.shape:
      raise ValueError(f"torch_reference: shape {value.shape} does not fit "
                       f"torch tensor {tuple(tensor.shape)}.")
    with torch.no_grad():
      tensor.copy_(torch.from_numpy(value))

  def conv(m, p):  # HWIO -> OIHW
    put(m.weight, np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1)))

  def bn(m, p, s):
    put(m.weight, p["scale"])
    put(m.bias, p["bias"])
    put(m.running_mean, s["mean"])
    put(m.running_var, s["var"])

  def prelu(m, p):
    put(m.weight, p["negative_slope"])

  conv(model.conv1, params["conv1"])
  bn(model.bn1, params["bn1"], stats["bn1"])
  prelu(model.prelu, params["prelu"])
  for stage in range(4):
    for i, block in enumerate(getattr(model, f"layer{stage + 1}")):
      name = f"layer{stage + 1}_{i}"
      p, s = params[name], stats[name]
      bn(block.bn1, p["bn1"], s["bn1"])
      conv(block.conv1, p["conv1"])
      bn(block.bn2, p["bn2"], s["bn2"])
      prelu(block.prelu, p["prelu"])
      conv(block.conv2, p["conv2"])
      bn(block.bn3, p["bn3"], s["bn3"])
      if block.downsample is not None:
        conv(block.downsample[0], p["downsample_conv"])
        bn(block.downsample[1], p["downsample_bn"], s["downsample_bn"])
  bn(model.bn2, params["bn2"], stats["bn2"])
  # Flax flattens (h, w, c), torch (c, h, w): permute the fc input rows.
  kernel = np.asarray(params["fc"]["kernel"])
  out = kernel.shape[-1]
  kernel = kernel.reshape(7, 7, WIDTHS[-1], out).transpose(3, 2, 0, 1)
  put(model.fc.weight, kernel.reshape(out, -1))
  put(model.fc.bias, params["fc"]["bias"])
  bn(model.features, params["features"], stats["features"])


def build_torch_iresnet(depth: int, flax_params=None, dropout_rate: float = 0.0):
  """The torch IResNet-`depth` in eval mode, NCHW input already normalised.

  flax_params: variables from opom_jax.models.networks.iresnet.init_iresnet /
  load_iresnet to copy in; None keeps torch's own random init.
  dropout_rate > 0 turns on DFANet dropout, as in the Flax model.
  Note the twin takes (x - 127.5) / 127.5 in NCHW, not the canonical batch.
  """
  if depth not in LAYERS:
    raise ValueError(f"benchmarks/torch_reference.py: depth must be one of "
                     f"{sorted(LAYERS)}, got {depth!r}.")
  model = _modules()(LAYERS[depth]).eval()
  if flax_params is not None:
    _copy_flax(model, flax_params)
  model.set_dropout_rate(dropout_rate)
  return model


def canonical_to_torch(x):
  """Canonical (N, 112, 112, 3) RGB 0..255 -> normalised NCHW torch tensor."""
  import torch
  x = (np.asarray(x, np.float32) - 127.5) / 127.5
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
