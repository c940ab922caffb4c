"""Data sets besides LFW: AT&T with its other people and LFW singles as distractors,
per-person failure reports, and the data settings' validation.

Small trees of links to the shared AT&T and LFW photos are built in a temp dir,
so that each test aligns a few dozen photos only.
"""
import dataclasses
import os
import pathlib

import numpy as np
from PIL import Image
import pytest

from experiments import flags as launcher_flags
from opom_jax import paths
from opom_jax.data import align
from opom_jax.data import faces as faces_lib
from opom_jax.data import splits
from opom_jax.data import tfds_builder
from opom_jax.run import config as config_lib
from opom_jax.run.config import DataConfig, RunConfig
from opom_jax.run.faces import load_faces
from opom_jax.settings import SettingError

ATT_PEOPLE = ("s3", "s4", "s10")   # s10 sorts after s4: names sort by number


@pytest.fixture(scope="module")
def att_data_root(lfw_root, tmp_path_factory):
  """<root>/att (3 AT&T people, linked) and <root>/lfw (a link to the shared LFW)."""
  root = tmp_path_factory.mktemp("data")
  att = paths.data_root() / "att_faces"
  for person in ATT_PEOPLE:
    os.makedirs(root / "att" / person)
    for photo in (att / person).iterdir():
      os.symlink(photo, root / "att" / person / photo.name)
  os.symlink(lfw_root, root / "lfw")
  return root


def _run(data_root, tmp_path, **data) -> RunConfig:
  return RunConfig(workdir=str(tmp_path / "run"), model_root=str(paths.model_root()),
                   data=DataConfig(data_root=str(data_root), cache_dir=str(tmp_path / "cache"),
                                   **data))


ATT = dict(dataset="att", max_people=2, n_train=5, min_photos=10, max_distractors=3,
           distractor_dataset="lfw", unselected_distractors=True, detect_border=0.25)


def test_att_split_protects_two_and_takes_the_third_and_lfw_singles_as_distractors(
    att_data_root, lfw_root, tmp_path):
  cfg = config_lib.validate(_run(att_data_root, tmp_path, **ATT))
  lines = []
  faces = load_faces(cfg, log=lines.append)
  train, test, dis = faces["train"], faces["test"], faces["distractor"]

  assert train["names"] == test["names"] == ["s3", "s4"]
  for split, numbers in ((train, range(1, 6)), (test, range(6, 11))):
    for person, name in enumerate(train["names"]):
      rows = np.flatnonzero(split["identity"] == person)
      assert [pathlib.Path(split["paths"][i]).name for i in rows] == [f"{n}.pgm" for n in numbers]
  lfw_singles = splits.select_distractors(splits.list_identities(lfw_root).photos)[:3]
  photos_of = {dis["names"][i]: n for i, n in enumerate(np.bincount(dis["identity"]))}
  assert photos_of == {"s10": 10, **{f"lfw/{n}": 1 for n in lfw_singles}}
  for path, person in zip(dis["paths"], dis["identity"]):
    source = att_data_root / ("att/s10" if dis["names"][person] == "s10" else "lfw")
    assert pathlib.Path(path).is_file() and pathlib.Path(path).is_relative_to(source), path

  # Grey 92x112 photos come out as 112x112 RGB crops with three equal channels.
  from_att = np.array([dis["names"][i] == "s10" for i in dis["identity"]])
  att_crops = np.concatenate([train["images"], test["images"], dis["images"][from_att]])
  assert att_crops.shape == (30, 112, 112, 3) and att_crops.dtype == np.uint8
  assert np.array_equal(att_crops[..., 0], att_crops[..., 1])
  assert np.array_equal(att_crops[..., 0], att_crops[..., 2])
  lfw_crops = dis["images"][~from_att]
  assert not np.array_equal(lfw_crops[..., 0], lfw_crops[..., 2])  # LFW stays in colour
  assert att_crops.std() > 30, "crops hold faces, not the black border"
  assert not any("not aligned" in line for line in lines), lines


def test_every_distractor_setting_has_its_own_cache(att_data_root):
  att = att_data_root / "att"
  base = dict(n_train=5, min_photos=10)
  variants = [{}, {"distractor_root": att_data_root / "lfw"}, {"unselected_distractors": True},
              {"upsample": 2}, {"border": 0.25}]
  names = {tfds_builder.make_config(att, **base, **v).name for v in variants}
  assert len(names) == len(variants)
  # The protected folder named as its own distractor folder is the default selection.
  assert (tfds_builder.make_config(att, **base, distractor_root=att).name
          == tfds_builder.make_config(att, **base).name)


def test_alignment_failures_are_reported_per_person_and_the_rest_goes_on(lfw_root, tmp_path):
  """Ann loses one training photo (unreadable); Bob loses both (unreadable, no face): dropped."""
  root = tmp_path / "faces"
  for person in ("Ann", "Bob"):
    (root / person).mkdir(parents=True)
  gul = lfw_root / "Abdullah_Gul"
  os.symlink(gul / "Abdullah_Gul_0001.jpg", root / "Ann" / "Ann_0001.jpg")
  (root / "Ann" / "Ann_0002.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  os.symlink(gul / "Abdullah_Gul_0002.jpg", root / "Ann" / "Ann_0003.jpg")
  (root / "Bob" / "Bob_0001.jpg").write_bytes(b"not a photo at all")
  Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(root / "Bob" / "Bob_0002.png")
  os.symlink(gul / "Abdullah_Gul_0003.jpg", root / "Bob" / "Bob_0003.jpg")

  lines = []
  out = tfds_builder.load_split(root, tmp_path / "tfds", log=lines.append, n_train=2,
                                min_photos=3, include_distractors=False)
  assert out["train"]["names"] == out["test"]["names"] == ["Ann"]
  assert [pathlib.Path(p).name for p in out["train"]["paths"]] == ["Ann_0001.jpg"]
  assert [pathlib.Path(p).name for p in out["test"]["paths"]] == ["Ann_0003.jpg"]
  assert out["test"]["identity"].tolist() == [0]

  ann = [line for line in lines if "Ann" in line]
  assert len(ann) == 1 and "1 of 2" in ann[0] and "Ann_0002.jpg" in ann[0], lines
  assert align.UNREADABLE in ann[0]
  bob = [line for line in lines if "Bob" in line]
  report = next(line for line in bob if "2 of 2" in line)
  assert all(s in report for s in ("Bob_0001.jpg", align.UNREADABLE, "Bob_0002.png",
                                   align.NO_FACE)), report
  assert any("dropped Bob" in line and "train" in line for line in bob), lines


def test_failed_one_photo_distractors_share_one_line():
  skipped = [{"path": f"/d/P{i}/P{i}_0001.jpg", "reason": align.NO_FACE, "identity": f"P{i}",
              "role": "distractor"} for i in range(3)]
  lines = faces_lib.failure_report(skipped, {})
  assert len(lines) == 1 and lines[0].startswith("3 ") and align.NO_FACE in lines[0]


@pytest.fixture
def names_only_root(tmp_path):
  """faces/: two 4-photo people; many/: people with 3 photos, none with one (names only)."""
  for folder, person, count in (("faces", "Ann", 4), ("faces", "Bob", 4), ("many", "Cid", 3)):
    (tmp_path / folder / person).mkdir(parents=True)
    for i in range(count):
      (tmp_path / folder / person / f"{person}_{i:04d}.jpg").write_bytes(b"")
  return tmp_path


@pytest.mark.parametrize("setting, value, flag, problem", [
    ("data.distractor_dataset", "nowhere", "--distractor_dataset=nowhere", "not a folder"),
    ("data.distractor_dataset", "many", "--distractor_dataset=many", "no one-photo people"),
    ("data.detect_border", 2.0, "--detect_border=2.0", "out of range"),
    ("data.detect_upsample", -1, "--detect_upsample=-1", "out of range"),
])
def test_bad_data_settings_are_refused_naming_the_flag(names_only_root, tmp_path, setting,
                                                       value, flag, problem):
  ok = _run(names_only_root, tmp_path, dataset="faces", n_train=3, min_photos=4)
  config_lib.validate(ok)
  name = setting.removeprefix("data.")
  bad = dataclasses.replace(ok, data=dataclasses.replace(ok.data, **{name: value}))
  with pytest.raises(SettingError) as e:
    config_lib.validate(bad)
  message = launcher_flags.flag_message(e.value, launcher_flags.FLAG_OF_SETTING)
  assert message.startswith(flag) and problem in message, message


def test_max_test_keeps_the_first_test_photos_of_each_person():
  from opom_jax.run.faces import first_per_identity
  split = {"images": np.arange(7)[:, None], "identity": np.array([0, 0, 0, 1, 2, 2, 2]),
           "paths": [f"p{i}" for i in range(7)], "names": ["a", "b", "c"]}
  capped = first_per_identity(split, 2)
  assert capped["identity"].tolist() == [0, 0, 1, 2, 2]
  assert capped["images"][:, 0].tolist() == [0, 1, 3, 4, 5]
  assert capped["paths"] == ["p0", "p1", "p3", "p4", "p5"]
  assert capped["names"] == ["a", "b", "c"]
