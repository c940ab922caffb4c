"""Writes tests/golden/*.npz: PyTorch reference embeddings for the JAX ports.

The EdgeFace-XS and Xiaoccer MobileFaceNet ports have no runtime in the
project, and the IResNet port is checked against its PyTorch twin
(benchmarks/torch_reference.py). This script runs independent PyTorch
implementations, written from the architecture descriptions (timm EdgeNeXt
x_small with a 512-d head; the authors' MobileFaceNet), on seeded synthetic
images and stores their embeddings; the tests rerun the JAX ports on the same
images and compare. No face photo, or anything derived from one, goes in.

torch is never a project or CI dependency: run this with a throwaway venv,

  python3 -m venv /tmp/torchenv
  /tmp/torchenv/bin/pip install torch numpy jax==0.10.2 flax==0.12.8
  /tmp/torchenv/bin/python benchmarks/make_goldens.py

(torch's CPU wheel is enough, 2.13.0 made the stored files; jax and flax at
the project's versions, because the IResNet golden uses the project's own
seeded Flax initialisation.) The tests import `synthetic_images`,
`iresnet18_variables` and `param_fingerprint` from this file, so both sides
see the same inputs; only numpy is imported at module level.
"""
from __future__ import annotations

import math
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"

IMAGE_SEED = 20240
N_IMAGES = 4


def synthetic_images(seed: int = IMAGE_SEED, n: int = N_IMAGES) -> np.ndarray:
  """(n, 112, 112, 3) float32, integer values 0..255: smooth blobs plus fine noise.

  Low-frequency content (an 8x8 grid of colours, bilinearly upsampled) like a
  photo's, and pixel noise so that every filter sees some energy. Only numpy's
  PCG64 stream and exact arithmetic: the same on every machine.
  """
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0.0, 255.0, (n, 8, 8, 3))
  up = np.stack([np.interp(np.linspace(0, 7, 112), np.arange(8), np.eye(8)[i])
                 for i in range(8)], 1)  # (112, 8) bilinear weights
  smooth = np.einsum("hi,nijc,wj->nhwc", up, coarse, up)
  images = smooth + rng.normal(0.0, 12.0, smooth.shape)
  return np.clip(np.rint(images), 0, 255).astype(np.float32)


def iresnet18_variables(init_seed: int = 7, perturb_seed: int = 8):
  """Seeded IResNet-18 Flax variables with non-trivial BN statistics and slopes.

  Flax's init leaves BN scales at 1, biases and means at 0 and PReLU slopes at
  0.25, under which a wrong BN or PReLU wiring would go unnoticed: every 1-D
  leaf gets multiplicative and additive noise (numpy, not jax.random: one
  jitted sampler per leaf would take a minute to compile).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO))
  from opom_jax.models.networks import iresnet  # pylint: disable=g-import-not-at-top

  variables = iresnet.init_iresnet(18, jax.random.key(init_seed))
  rs = np.random.default_rng(perturb_seed)

  def jitter(leaf):
    if leaf.ndim != 1:
      return leaf
    # Multiplicative noise keeps variances and scales positive.
    leaf = np.asarray(leaf) * rs.uniform(0.7, 1.3, leaf.shape)
    return jnp.asarray(leaf + 0.05 * rs.normal(size=leaf.shape), jnp.float32)

  variables = jax.tree.map(jitter, variables)
  variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])
  return variables


def param_fingerprint(variables) -> np.ndarray:
  """Sum and sum of |.| of every leaf in tree order: tells 'init changed' from 'forward wrong'."""
  import jax  # pylint: disable=g-import-not-at-top
  leaves = [np.asarray(v, np.float64) for v in jax.tree.leaves(variables)]
  return np.array([[v.sum(), np.abs(v).sum()] for v in leaves])


# ---------------------------------------------------------------- torch side


def _torch_modules():
  """The torch reference networks (torch imported only here)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x):
      x = x.permute(0, 2, 3, 1)
      x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
      return x.permute(0, 3, 1, 2)

  class Mlp(nn.Module):

    def __init__(self, c):
      super().__init__()
      self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x):
      return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU

  class ConvBlock(nn.Module):
    """x + gamma * MLP(LN(dwconv_k(x))), the MLP on channels-last tokens."""

    def __init__(self, c, k):
      super().__init__()
      self.conv_dw = nn.Conv2d(c, c, k, padding=k // 2, groups=c)
      self.norm = nn.LayerNorm(c, eps=1e-6)
      self.mlp = Mlp(c)
      self.gamma = nn.Parameter(torch.ones(c))

    def forward(self, x):
      y = self.conv_dw(x).permute(0, 2, 3, 1)
      y = self.gamma * self.mlp(self.norm(y))
      return x + y.permute(0, 3, 1, 2)

  class PositionalEncodingFourier(nn.Module):

    def __init__(self, hidden=32, dim=64):
      super().__init__()
      self.hidden = hidden
      self.token_projection = nn.Conv2d(2 * hidden, dim, 1)

    def forward(self, b, h, w):
      ones = torch.ones(b, h, w)
      y = ones.cumsum(1)
      x = ones.cumsum(2)
      y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
      x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
      i = torch.arange(self.hidden, dtype=torch.float32)
      dim_t = 10000 ** (2 * torch.div(i, 2, rounding_mode="floor") / self.hidden)

      def encode(e):
        e = e[..., None] / dim_t
        return torch.stack([e[..., 0::2].sin(), e[..., 1::2].cos()], 4).flatten(3)

      pos = torch.cat([encode(y), encode(x)], 3).permute(0, 3, 1, 2)
      return self.token_projection(pos)

  class XCA(nn.Module):
    """Cross-covariance attention, 4 heads: a channel-by-channel map per head."""

    def __init__(self, c, heads=4):
      super().__init__()
      self.heads = heads
      self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
      self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, t):
      b, n, c = t.shape
      qkv = self.qkv(t).reshape(b, n, 3, self.heads, c // self.heads)
      q, k, v = qkv.permute(2, 0, 3, 4, 1).unbind(0)  # (b, heads, c/h, tokens)
      q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
      attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(-1)
      return self.proj((attn @ v).permute(0, 3, 1, 2).reshape(b, n, c))

  class SplitTransposeBlock(nn.Module):
    """EdgeNeXt's SDTA block: split depthwise convs, XCA, then the MLP."""

    def __init__(self, c, scales, pos_emb):
      super().__init__()
      width = -(-c // scales)
      self.scales = scales
      self.convs = nn.ModuleList(
          nn.Conv2d(width, width, 3, padding=1, groups=width) for _ in range(scales - 1))
      self.pos_embd = PositionalEncodingFourier() if pos_emb else None
      self.norm_xca = nn.LayerNorm(c, eps=1e-6)
      self.gamma_xca = nn.Parameter(torch.ones(c))
      self.xca = XCA(c)
      self.norm = nn.LayerNorm(c, eps=1e-6)
      self.mlp = Mlp(c)
      self.gamma = nn.Parameter(torch.ones(c))

    def forward(self, x):
      chunks = x.chunk(self.scales, 1)
      outs, sp = [], None
      for i, conv in enumerate(self.convs):
        sp = conv(chunks[i] if i == 0 else sp + chunks[i])
        outs.append(sp)
      y = torch.cat(outs + [chunks[-1]], 1)
      b, c, h, w = y.shape
      if self.pos_embd is not None:
        y = y + self.pos_embd(b, h, w)
      t = y.reshape(b, c, h * w).transpose(1, 2)
      t = t + self.gamma_xca * self.xca(self.norm_xca(t))
      t = self.gamma * self.mlp(self.norm(t.reshape(b, h, w, c)))
      return x + t.permute(0, 3, 1, 2)  # the residual is the block input

  class EdgeNeXtXS(nn.Module):
    """timm's edgenext_x_small with a 512-d head: stages of 3/3/9/3 blocks."""

    def __init__(self):
      super().__init__()
      dims, depths, kernels, scales = (32, 64, 100, 192), (3, 3, 9, 3), (3, 5, 7, 9), (2, 2, 3, 4)
      self.stem = nn.Sequential(nn.Conv2d(3, 32, 4, stride=4), LayerNorm2d(32, eps=1e-6))
      self.stages = nn.ModuleList()
      for s, (c, depth, k, sc) in enumerate(zip(dims, depths, kernels, scales)):
        stage = nn.Module()
        if s > 0:
          stage.downsample = nn.Sequential(LayerNorm2d(dims[s - 1], eps=1e-6),
                                           nn.Conv2d(dims[s - 1], c, 2, stride=2))
        blocks = [ConvBlock(c, k) for _ in range(depth - (s > 0))]
        if s > 0:
          blocks.append(SplitTransposeBlock(c, sc, pos_emb=s == 1))
        stage.blocks = nn.Sequential(*blocks)
        self.stages.append(stage)
      self.head = nn.Module()
      self.head.norm = LayerNorm2d(192, eps=1e-6)
      self.head.fc = nn.Linear(192, 512)

    def forward(self, x):
      x = self.stem(x)
      for stage in self.stages:
        if hasattr(stage, "downsample"):
          x = stage.downsample(x)
        x = stage.blocks(x)
      x = self.head.norm(x.mean((2, 3), keepdim=True)).flatten(1)
      return self.head.fc(x)

  class EdgeFace(nn.Module):
    """The released wrapper: the backbone sits under `model.`."""

    def __init__(self):
      super().__init__()
      self.model = EdgeNeXtXS()

    def forward(self, x):
      return self.model(x)

  class ConvBn(nn.Module):
    """The authors' ConvBlock: conv (no bias) -> BN [-> per-channel PReLU]."""

    def __init__(self, cin, cout, k, stride=1, padding=0, groups=1, act=True):
      super().__init__()
      self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False)
      self.bn = nn.BatchNorm2d(cout)
      self.prelu = nn.PReLU(cout) if act else None

    def forward(self, x):
      x = self.bn(self.conv(x))
      return x if self.prelu is None else self.prelu(x)

  class Bottleneck(nn.Module):

    def __init__(self, cin, cout, stride, t):
      super().__init__()
      hidden = t * cin
      self.residual = stride == 1 and cin == cout
      self.conv = nn.Sequential(
          nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
          nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
          nn.BatchNorm2d(hidden), nn.PReLU(hidden),
          nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
      return x + self.conv(x) if self.residual else self.conv(x)

  class MobileFaceNet(nn.Module):
    """Xiaoccer's 128-d MobileFaceNet on a 112 high x 96 wide input."""

    def __init__(self):
      super().__init__()
      self.conv1 = ConvBn(3, 64, 3, 2, 1)
      self.dw_conv1 = ConvBn(64, 64, 3, 1, 1, groups=64)
      blocks, cin = [], 64
      for t, c, n, s in ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2),
                         (2, 128, 2, 1)):
        for r in range(n):
          blocks.append(Bottleneck(cin, c, s if r == 0 else 1, t))
          cin = c
      self.blocks = nn.Sequential(*blocks)
      self.conv2 = ConvBn(128, 512, 1)
      self.linear7 = ConvBn(512, 512, (7, 6), groups=512, act=False)
      self.linear1 = ConvBn(512, 128, 1, act=False)

    def forward(self, x):
      x = self.blocks(self.dw_conv1(self.conv1(x)))
      return self.linear1(self.linear7(self.conv2(x))).flatten(1)

  return EdgeFace, MobileFaceNet


def _model_file(name):
  sys.path.insert(0, str(REPO))
  from opom_jax import paths  # pylint: disable=g-import-not-at-top
  return paths.model_file(name)


def _nchw(images, mean, std):
  import torch  # pylint: disable=g-import-not-at-top
  x = (np.asarray(images, np.float32) - np.float32(mean)) / np.float32(std)
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _edgeface_float_state_dict(sd):
  """The quantised release's state_dict with every packed Linear dequantised."""
  out = {}
  for key, value in sd.items():
    if key.endswith("._packed_params._packed_params"):
      layer = key[:-len("._packed_params._packed_params")]
      weight, bias = value
      out[layer + ".weight"] = weight.dequantize()
      out[layer + ".bias"] = bias.detach()
    elif not key.endswith((".scale", ".zero_point", "._packed_params.dtype")):
      out[key] = value
  return out


def edgeface_golden(images):
  """EdgeFace-XS: float forward with the dequantised weights, and the int8 runtime."""
  import torch  # pylint: disable=g-import-not-at-top
  edgeface_cls, _ = _torch_modules()
  sd = torch.load(_model_file("edgeface_xs_q.pt"), weights_only=True)
  model = edgeface_cls().eval()
  model.load_state_dict(_edgeface_float_state_dict(sd), strict=True)
  x = _nchw(images, 127.5, 127.5)  # (x / 255 - 0.5) / 0.5
  # The released model: dynamic int8 Linears (activations quantised per batch).
  int8 = torch.ao.quantization.quantize_dynamic(edgeface_cls().eval(), {torch.nn.Linear},
                                                dtype=torch.qint8)
  int8.load_state_dict(sd, strict=True)
  with torch.no_grad():
    return model(x).numpy(), int8(x).numpy()


def xiaoccer_golden(images):
  import torch  # pylint: disable=g-import-not-at-top
  _, mobilefacenet_cls = _torch_modules()
  ckpt = torch.load(_model_file("xiaoccer_mobilefacenet_casia.ckpt"), weights_only=True,
                    map_location="cpu")
  model = mobilefacenet_cls().eval()
  model.load_state_dict(ckpt["net_state_dict"], strict=True)
  # The SphereFace 96-wide frame is columns 8..103 of the ArcFace 112 frame.
  x = _nchw(images[:, :, 8:104], 127.5, 128.0)
  with torch.no_grad():
    return model(x).numpy()


def iresnet_golden(images, variables):
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO / "benchmarks"))
  import torch_reference  # pylint: disable=g-import-not-at-top
  model = torch_reference.build_torch_iresnet(18, variables)
  with torch.no_grad():
    return model(torch_reference.canonical_to_torch(images)).numpy()


def main():
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  GOLDEN.mkdir(parents=True, exist_ok=True)
  images = synthetic_images()
  common = dict(image_seed=IMAGE_SEED, n_images=N_IMAGES,
                image_sum=images.astype(np.float64).sum(), torch_version=torch.__version__)
  float_emb, int8_emb = edgeface_golden(images)
  np.savez(GOLDEN / "edgeface_xs.npz", embeddings=float_emb.astype(np.float32),
           int8_runtime=int8_emb.astype(np.float32), **common)
  np.savez(GOLDEN / "xiaoccer_mobilefacenet.npz",
           embeddings=xiaoccer_golden(images).astype(np.float32), **common)
  variables = iresnet18_variables()
  twin_images = synthetic_images(n=2)  # IResNet-18 is the slowest port to run in CI
  np.savez(GOLDEN / "iresnet18_twin.npz",
           embeddings=iresnet_golden(twin_images, variables).astype(np.float32),
           param_fingerprint=param_fingerprint(variables),
           **dict(common, n_images=2, image_sum=twin_images.astype(np.float64).sum()))
  for name in ("edgeface_xs", "xiaoccer_mobilefacenet", "iresnet18_twin"):
    path = GOLDEN / f"{name}.npz"
    print(path.relative_to(REPO), path.stat().st_size, "bytes")


if __name__ == "__main__":
  main()
