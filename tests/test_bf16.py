"""The bfloat16 surrogate forward: bfloat16 operands with float32 accumulation, embeddings
close to float32 on real faces, and masks stored with the dtype they were learned in."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import flags
from opom_jax.attack import AttackConfig
from opom_jax.errors import UserError
from opom_jax.models import base
from opom_jax.models import ops
from opom_jax.run import artefacts
from opom_jax.run.config import DataConfig, RunConfig
from opom_jax.run.generate import generate, mask_path
from opom_jax.settings import SettingError, check
from tiny_surrogate import random_faces, tiny_surrogate

METHOD = "fi_uap"


def _rounded(a):
  return a.astype(jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize("kernel,groups,stride,pad", [
    ((1, 1, 16, 8), 1, 1, ((0, 0), (0, 0))),   # pointwise: a channel matmul
    ((3, 3, 1, 16), 16, 2, ((1, 1), (1, 1))),  # depthwise
    ((3, 3, 16, 8), 1, 1, ((1, 1), (1, 1))),   # full convolution
])
def test_convolutions_take_bf16_operands_and_sum_in_float32(kernel, groups, stride, pad):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 16)), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel), jnp.float32)
  with ops.operands_in(jnp.bfloat16):
    y = ops.conv2d(x, w, (stride, stride), pad, groups=groups)
  exact = ops.conv2d(_rounded(x), _rounded(w), (stride, stride), pad, groups=groups)
  assert y.dtype == jnp.float32
  # Sums of exact products in float32: far tighter than a bfloat16 result (~4e-3 relative).
  np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-4)
  assert np.abs(np.asarray(y) - np.asarray(ops.conv2d(x, w, (stride, stride), pad,
                                                      groups=groups))).max() > 1e-3


def test_bf16_embeddings_are_close_to_float32_on_real_faces(aligned_lfw, foamliu):
  x = jnp.asarray(np.concatenate([c[:3] for c in aligned_lfw.values()]), jnp.float32)
  bf16 = base.in_compute_dtype(foamliu.apply, base.BFLOAT16)
  assert base.in_compute_dtype(foamliu.apply, base.FLOAT32) is foamliu.apply
  fp32_emb = jax.jit(foamliu.embed)(x)
  bf16_emb = jax.jit(lambda p, x: base.l2_normalize(bf16(p, x)))(foamliu.params, x)
  assert bf16_emb.dtype == jnp.float32
  cosine = np.sum(np.asarray(fp32_emb) * np.asarray(bf16_emb), axis=1)
  assert cosine.min() > 0.99, cosine
  assert cosine.max() < 1 - 1e-6, cosine  # it did compute in bfloat16
  # Its input gradient, what the attack follows, points the same way too (a loss like the
  # attack's: similarity to other photos' embeddings).
  others = jnp.roll(fp32_emb, 3, axis=0)
  grad = lambda apply: jax.jit(jax.grad(
      lambda x: jnp.sum(base.l2_normalize(apply(foamliu.params, x)) * others)))(x)
  g32, g16 = np.asarray(grad(foamliu.apply)).ravel(), np.asarray(grad(bf16)).ravel()
  assert g32 @ g16 / np.linalg.norm(g32) / np.linalg.norm(g16) > 0.9


def test_equal_wrappers_share_programs():
  apply = tiny_surrogate().apply
  assert base.ComputeIn(apply, base.BFLOAT16) == base.in_compute_dtype(apply, base.BFLOAT16)
  assert hash(base.ComputeIn(apply, base.BFLOAT16)) == hash(base.ComputeIn(apply, base.BFLOAT16))


def _faces(names, photos=3):
  images, _ = random_faces(len(names), photos)
  return {"train": {"images": images.reshape((-1,) + images.shape[2:]).astype(np.uint8),
                    "identity": np.repeat(np.arange(len(names)), photos).astype(np.int32),
                    "names": list(names)}}


def _cfg(workdir, compute_dtype):
  data = DataConfig(data_root="/data", cache_dir=str(workdir) + "_cache", people=("A", "B"))
  return RunConfig(workdir=str(workdir), data=data,
                   attack=AttackConfig(loss=METHOD, iters=2, nter=1), surrogates=("tiny",),
                   methods=(METHOD,), targets=(), people_per_batch=2,
                   compute_dtype=compute_dtype)


def test_bf16_masks_carry_their_dtype_and_a_float32_rerun_is_refused(tmp_path):
  tiny, faces = tiny_surrogate(), _faces(["A", "B"])
  run = lambda cfg, **kw: generate(cfg, log=lambda _: None, faces=faces, surrogates=[tiny],
                                   **kw)[METHOD]
  bf16 = run(_cfg(tmp_path / "run", base.BFLOAT16))
  stored = artefacts.read_masks(mask_path(tmp_path / "run", METHOD))
  assert stored.settings["compute_dtype"] == "bfloat16"
  with pytest.raises(UserError, match="compute_dtype='bfloat16', now 'float32'"):
    run(_cfg(tmp_path / "run", base.FLOAT32))
  fp32 = run(_cfg(tmp_path / "run", base.FLOAT32), overwrite=True)
  assert artefacts.read_masks(mask_path(tmp_path / "run", METHOD)).settings[
      "compute_dtype"] == "float32"
  assert not np.array_equal(bf16, fp32)  # the bf16 run's gradients did differ


def test_float32_masks_from_before_the_setting_stay_valid(tmp_path):
  cfg = _cfg(tmp_path, base.FLOAT32)
  current = artefacts.mask_settings(cfg, METHOD, ["A", "B"])
  older = {k: v for k, v in current.items() if k != "compute_dtype"}
  assert artefacts.settings_change(older, current) is None
  bf16 = artefacts.mask_settings(dataclasses.replace(cfg, compute_dtype="bfloat16"), METHOD,
                                 ["A", "B"])
  assert "compute_dtype" in artefacts.settings_change(older, bf16)


def test_an_unknown_compute_dtype_is_a_setting_error_naming_its_flag(tmp_path):
  cfg = dataclasses.replace(_cfg(tmp_path, "float16"), surrogates=("foamliu_mbf",))
  with pytest.raises(SettingError) as e:
    check(cfg)
  message = flags.flag_message(e.value, flags.FLAG_OF_SETTING)
  assert message.startswith("--compute_dtype=float16 has unknown compute dtype"), message
