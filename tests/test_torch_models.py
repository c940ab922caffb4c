"""The torch-free checkpoint reader and the EdgeFace / Xiaoccer JAX ports.

No PyTorch here: the reader refuses hostile pickles without running them, the
real files give the expected key counts, shapes and parameter totals, the
ports reproduce stored PyTorch reference embeddings (tests/golden, written by
benchmarks/make_goldens.py) and separate identities on real, aligned LFW faces.
"""
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax import paths
from opom_jax.models.networks import edgeface
from opom_jax.models.importers import torch_reader
from opom_jax.models.networks import xiaoccer_mobilefacenet as xiaoccer
from golden import goldens

EDGEFACE = "edgeface_xs_q.pt"
XIAOCCER = "xiaoccer_mobilefacenet_casia.ckpt"
# Distinct synthetic images give distinct embeddings (measured up to 0.96 for
# Xiaoccer, 0.47 for EdgeFace); a port that ignored its input would give 1.
MIN_COSINE_TO_FAIL_A_CONSTANT_PORT = 0.99


class _Evil:
  def __init__(self, call, arg):
    self.call, self.arg = call, arg

  def __reduce__(self):
    return self.call, (self.arg,)


def _write_zip_checkpoint(path, payload: bytes):
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
    zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("call", [os.system, eval], ids=["os.system", "builtins.eval"])
def test_reader_refuses_code_and_does_not_run_it(tmp_path, container, call):
  canary = tmp_path / "pwned"
  if call is os.system:
    arg = f"touch {canary}"
  else:
    arg = f"open({str(canary)!r}, 'w').close()"
  payload = pickle.dumps({"w": _Evil(call, arg)}, protocol=2)
  ckpt = tmp_path / "evil.pt"
  if container == "zip":
    _write_zip_checkpoint(ckpt, payload)
  else:
    ckpt.write_bytes(payload)
  with pytest.raises(torch_reader.UnsafeCheckpointError,
                     match=r"system'|eval'") as err:
    torch_reader.load_state_dict(ckpt)
  assert str(ckpt) in str(err.value)
  assert not canary.exists()


def test_reader_refuses_torch_globals_outside_the_list(tmp_path):
  # protocol 4 uses STACK_GLOBAL, which goes through find_class as well.
  payload = b"\x80\x04\x8c\x0ctorch._utils\x8c\x0f_rebuild_tensor\x93)R."
  ckpt = tmp_path / "v1.pt"
  _write_zip_checkpoint(ckpt, payload)
  with pytest.raises(torch_reader.UnsafeCheckpointError, match="torch._utils._rebuild_tensor'"):
    torch_reader.read_checkpoint(ckpt)


def test_reader_refuses_to_modify_its_stand_ins(tmp_path):
  # GLOBAL torch.FloatStorage, then BUILD {'dtype': 'object'}: would poison
  # the allow-list for every later load if it were accepted.
  payload = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x06\x00\x00\x00objectsb."
  ckpt = tmp_path / "build.pt"
  _write_zip_checkpoint(ckpt, payload)
  with pytest.raises(torch_reader.UnsafeCheckpointError, match="refusing to set state"):
    torch_reader.read_checkpoint(ckpt)
  assert torch_reader._ALLOWED[("torch", "FloatStorage")].dtype == np.float32


@pytest.fixture(scope="module")
def edgeface_raw():
  return torch_reader.read_checkpoint(paths.model_file(EDGEFACE))


@pytest.fixture(scope="module")
def xiaoccer_raw():
  return torch_reader.read_checkpoint(paths.model_file(XIAOCCER))


def test_edgeface_checkpoint_contents(edgeface_raw):
  assert len(edgeface_raw) == 300
  packed = {k: v for k, v in edgeface_raw.items() if k.endswith("._packed_params._packed_params")}
  assert len(packed) == 43
  weights = [w for w, _ in packed.values()]
  assert sum(w.int_repr.size for w in weights) == 2_029_760
  assert all(w.int_repr.dtype == np.int8 and w.zero_point == 0 for w in weights)
  assert min(w.scale for w in weights) == pytest.approx(1.19e-7, rel=1e-2)
  assert max(w.scale for w in weights) == pytest.approx(1.62e-2, rel=1e-2)

  sd = torch_reader.load_state_dict(paths.model_file(EDGEFACE))
  assert len(sd) == 300 - 43 * 4 + 43 * 2
  assert sum(v.size for v in sd.values()) == 2_242_620
  assert all(v.dtype == np.float32 for v in sd.values())
  w, _ = packed["model.stages.1.blocks.0.mlp.fc1._packed_params._packed_params"]
  np.testing.assert_array_equal(sd["model.stages.1.blocks.0.mlp.fc1.weight"],
                                w.int_repr.astype(np.float32) * np.float32(w.scale))
  expected_shapes = {
      "model.stem.0.weight": (32, 3, 4, 4),
      "model.stages.3.downsample.1.weight": (192, 100, 2, 2),
      "model.stages.2.blocks.0.conv_dw.weight": (100, 1, 7, 7),
      "model.stages.2.blocks.8.convs.1.weight": (34, 1, 3, 3),
      "model.stages.1.blocks.2.pos_embd.token_projection.weight": (64, 64, 1, 1),
      "model.stages.2.blocks.8.xca.temperature": (4, 1, 1),
      "model.stages.2.blocks.8.xca.qkv.weight": (300, 100),
      "model.stages.3.blocks.1.mlp.fc1.weight": (768, 192),
      "model.head.fc.weight": (512, 192),
      "model.head.fc.bias": (512,),
  }
  assert {k: sd[k].shape for k in expected_shapes} == expected_shapes
  assert not sd["model.stages.3.blocks.2.xca.qkv.weight"].any()  # the inert stage-3 SDTA


def test_xiaoccer_checkpoint_contents(xiaoccer_raw):
  assert xiaoccer_raw["epoch"] == 68
  sd = torch_reader.load_state_dict(paths.model_file(XIAOCCER))
  assert len(sd) == len(xiaoccer_raw["net_state_dict"]) == 333
  counters = [v for k, v in sd.items() if k.endswith("num_batches_tracked")]
  assert len(counters) == 50
  assert all(c.shape == () and c.dtype == np.int64 and c == 65_212 for c in counters)
  running = sum(v.size for k, v in sd.items() if ".running_" in k)
  learned = sum(v.size for k, v in sd.items() if ".running_" not in k and "num_batches" not in k)
  assert (learned, running) == (999_552, 19_584)
  assert sd["linear7.conv.weight"].shape == (512, 1, 7, 6)
  assert sd["blocks.5.conv.0.weight"].shape == (256, 64, 1, 1)  # t=4 on 64 channels
  assert sd["blocks.14.conv.3.weight"].shape == (256, 1, 3, 3)
  assert sd["linear1.bn.running_var"].shape == (128,)


@pytest.fixture(scope="module", params=["edgeface", "xiaoccer"])
def model(request):
  """(name, params, apply, embedding size, golden file) of one port."""
  if request.param == "edgeface":
    params, apply = edgeface.load_edgeface(paths.model_file(EDGEFACE))
    return request.param, params, apply, 512, "edgeface_xs"
  params, apply = xiaoccer.load_xiaoccer(paths.model_file(XIAOCCER))
  return request.param, params, apply, 128, "xiaoccer_mobilefacenet"


def _unit(e):
  e = np.asarray(e, np.float64)
  return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def embedded(model, aligned_lfw):
  """Raw embeddings of the golden's synthetic images and of the LFW faces.

  One batch, one compiled forward per port: EdgeFace's large depthwise
  kernels make each compilation cost seconds.
  """
  _, params, apply, _, golden_name = model
  golden = goldens.load(golden_name)
  synthetic = goldens.images(golden)
  faces = np.concatenate(list(aligned_lfw.values())).astype(np.float32)
  emb = np.asarray(jax.jit(apply)(params, np.concatenate([synthetic, faces])))
  return golden, emb[:len(synthetic)], emb[len(synthetic):]


def test_port_matches_the_torch_reference(embedded):
  """Synthetic images through an independent PyTorch implementation, stored once."""
  golden, emb, _ = embedded
  goldens.assert_embeddings_match(emb, golden["embeddings"])
  # The images are different enough that a port ignoring its input would fail.
  off_diagonal = (_unit(emb) @ _unit(emb).T)[np.triu_indices(len(emb), 1)]
  assert off_diagonal.max() < MIN_COSINE_TO_FAIL_A_CONSTANT_PORT
  if "int8_runtime" in golden:
    # EdgeFace is released as a dynamic-int8 torch model, which also quantises
    # activations per batch: ~0.97 from the exact float network, not equal to
    # it; a wrong dequantisation scale or weight layout falls far below.
    cos = goldens.cosines(emb, golden["int8_runtime"])
    assert np.all(cos > 0.93) and cos.mean() > 0.95, cos


def test_identity_separation_on_aligned_lfw(model, embedded, aligned_lfw):
  name, _, _, dim, _ = model
  _, _, emb = embedded
  labels = np.concatenate([[i] * len(v) for i, v in enumerate(aligned_lfw.values())])
  assert emb.shape == (len(labels), dim) and emb.dtype == np.float32
  cos = _unit(emb) @ _unit(emb).T
  iu = np.triu_indices(len(labels), 1)
  same = (labels[:, None] == labels[None])[iu]
  pos, neg = cos[iu][same], cos[iu][~same]
  auc = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
  print(f"{name}: same {pos.mean():.3f} diff {neg.mean():.3f} auc {auc:.4f}")
  assert pos.mean() - neg.mean() > 0.4, name
  assert auc >= 0.95, name


def test_rate_zero_is_the_deterministic_graph(model):
  _, params, apply, _, _ = model
  x = jnp.zeros((1, 112, 112, 3))
  key = jax.random.key(0)
  clean = jax.make_jaxpr(lambda v: apply(params, v))(x)
  rate0 = jax.make_jaxpr(lambda v: apply(params, v, dropout_rate=0.0, rng=key))(x)
  no_key = jax.make_jaxpr(lambda v: apply(params, v, dropout_rate=0.1, rng=None))(x)
  with_drop = jax.make_jaxpr(lambda v: apply(params, v, dropout_rate=0.1, rng=key))(x)
  assert str(rate0) == str(clean) == str(no_key)
  assert str(with_drop) != str(clean)


def test_dropout_and_signed_input_steps(model, embedded, aligned_lfw):
  """DFANet keys pick the surrogate; under one key the input gradient points uphill."""
  name, params, apply, _, _ = model
  first = np.cumsum([0] + [len(v) for v in aligned_lfw.values()])[:-1]
  clean = _unit(embedded[2][first])  # the first photo of each person
  x = jnp.asarray(np.stack([v[0] for v in aligned_lfw.values()])[:2], jnp.float32)
  target = jnp.asarray(clean[2], jnp.float32)

  def loss(v, rng):
    # Cosine to a third person's clean embedding: what impersonation raises.
    e = apply(params, v, dropout_rate=0.05, rng=rng)
    return jnp.sum(e @ target / jnp.linalg.norm(e, axis=-1)), e

  step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value, e1), g = step(x, jax.random.key(1))
  (_, e1b), _ = step(x, jax.random.key(1))
  (_, e2), _ = step(x, jax.random.key(2))
  np.testing.assert_array_equal(e1, e1b)  # same key, same surrogate
  assert not np.allclose(e1, e2)
  # Still the same face, but visibly a different surrogate.
  sim = np.sum(_unit(e1) * clean[:2], 1)
  print(f"{name}: cos(dropout 0.05, clean) = {sim}")
  assert np.all(sim > 0.2) and np.all(sim < 0.9999), name
  g = np.asarray(g)
  assert g.shape == x.shape and np.isfinite(g).all()
  # One pixel level along sign(grad), the attack's step, through the same surrogate.
  (up, _), _ = step(x + np.sign(g), jax.random.key(1))
  (down, _), _ = step(x - np.sign(g), jax.random.key(1))
  assert down < value < up, (name, down, value, up)
