"""Launchers: a user error ends with one line naming the flag or file, before any work starts.

Each case runs a launcher as a subprocess (all cases at once: each spends its
time importing JAX). In a case's arguments `{empty}` is an empty folder,
`{file}` a plain file, `{bad_json}` a file that is not JSON, `{photos}` a
folder with one photo file and `{work}` the run or output directory, which
must stay untouched.
"""
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys

import pytest

from opom_jax.attack import config as attack_config_lib
from opom_jax.models import zoo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "--flagfile=configs/lfw_quick.flags"
RUN = [QUICK, "--workdir={work}"]
PROTECT = ["--photos={photos}", "--output={work}"]

# (launcher, arguments, what the one error line must contain)
CASES = [
    ("generate", RUN + ["--eps=1000"], "--eps=1000"),
    ("generate", RUN + ["--eps=abc"], "--eps=abc"),
    ("generate", RUN + ["--step_size=9"], "--step_size=9"),
    ("generate", RUN + ["--upper=0"], "--upper=0"),
    ("generate", RUN + ["--max_distractors=-5"], "--max_distractors=-5"),
    ("generate", RUN + ["--checkpoint_every=-1"], "--checkpoint_every=-1"),
    ("generate", RUN + ["--n_train=15"], "--n_train=15"),
    ("generate", RUN + ["--people=Nobody_In_Lfw"], "--people=Nobody_In_Lfw"),
    ("generate", RUN + ["--people=Aaron_Eckhart"], "--people=Aaron_Eckhart"),  # 1 photo < 15
    ("generate", RUN + ["--devices=4096"], "--devices=4096"),
    ("generate", RUN + ["--methods=convex_hul"], "--methods=convex_hul"),
    ("generate", RUN + ["--surrogates=resnet1000"], "--surrogates=resnet1000"),
    ("generate", RUN + ["--targets=w600k"], "--targets=w600k"),
    ("generate", RUN + ["--model_root={empty}"], "--model_root={empty}"),
    ("generate", RUN + ["--data_root=/nonexistent/faces"], "--data_root=/nonexistent/faces"),
    ("generate", [QUICK, "--workdir={file}"], "--workdir={file}"),
    ("generate", RUN + ["--unknown_flag=1"], "unknown_flag"),
    ("run", RUN + ["--max_people=0"], "--max_people=0"),
    ("run", RUN + ["--seed=-1"], "--seed=-1"),
    ("evaluate", RUN + ["--model_root={empty}"], "--model_root={empty}"),
    ("evaluate", RUN, "{work}/masks/fi_uap.npz"),   # nothing generated yet
    ("sweep", RUN + ["--sweep=attack.eps=-8"], "--sweep=attack.eps=-8"),
    ("sweep", RUN + ["--sweep=attack.loss=fi_uap,nope"], "--sweep=attack.loss=nope"),
    ("sweep", RUN + ["--sweep=attack.rule=adam"], "--sweep=attack.rule=adam"),
    ("sweep", RUN + ["--sweep=data.max_people=0"], "--sweep=data.max_people=0"),
    ("sweep", RUN + ["--sweep=attack.epz=4"], "--sweep=attack.epz"),
    ("protect", PROTECT + ["--eps=1000"], "--eps=1000"),
    ("protect", PROTECT + ["--max_train=0"], "--max_train=0"),
    ("protect", PROTECT + ["--max_train=-1"], "--max_train=-1"),
    ("protect", PROTECT + ["--method=nope"], "--method=nope"),
    ("protect", PROTECT + ["--model_root={empty}"], "--model_root={empty}"),
    ("protect", PROTECT + ["--output={file}"], "--output={file}"),
    ("protect", PROTECT + ["--output={file}/sub"], "--output={file}/sub"),  # cannot be made
    ("protect", PROTECT + ["--photos={empty}"], "--photos={empty}"),
    ("models", ["--accuracy_file={bad_json}"], "--accuracy_file={bad_json}"),
    ("models", ["stray_argument"], "stray_argument"),
    ("lfw_verify", ["--models=nope"], "--models=nope"),
    ("lfw_verify", ["--max_pairs_per_fold=-1"], "--max_pairs_per_fold=-1"),
    ("lfw_verify", ["--batch_size=0"], "--batch_size=0"),
    ("lfw_verify", ["--pairs=/nonexistent/pairs.txt"], "--pairs=/nonexistent/pairs.txt"),
    ("lfw_verify", ["--models=foamliu_mbf", "--model_root={empty}"], "--model_root={empty}"),
    ("lfw_verify", ["--dataset=no_such_folder"], "--dataset=no_such_folder"),
    ("protect_video", ["--video=/nonexistent/in.mp4", "--output={work}/out.mp4"],
     "--video=/nonexistent/in.mp4"),
    ("protect_eval", ["--people=0", "--output={work}"], "--people=0"),
    ("protect_eval", ["--eot_probs=2", "--output={work}"], "--eot_probs=2"),
]


def _places(root):
  (root / "empty").mkdir()
  (root / "file").write_text("not a folder")
  (root / "bad.json").write_text("{not json")
  (root / "photos").mkdir()
  (root / "photos" / "me.jpg").write_bytes(b"only the name is read before the mask is learned")
  return {"empty": root / "empty", "file": root / "file", "bad_json": root / "bad.json",
          "photos": root / "photos", "work": root / "work"}


def _run(launcher, args, env=None):
  return subprocess.run([sys.executable, "-m", f"experiments.{launcher}", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})


def _assert_one_line_error(proc, names):
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode != 0, proc.stdout[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
  assert names in lines[0], lines[0]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  """(process, places) of every case, run four at a time."""
  def one(case):
    launcher, args, _ = case
    places = _places(tmp_path_factory.mktemp(launcher))
    return _run(launcher, [a.format(**places) for a in args]), places
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    return list(pool.map(one, CASES))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[0]}:{c[1][-1]}" for c in CASES])
def test_bad_flag_is_named_in_one_line(outcomes, index):
  proc, places = outcomes[index]
  _assert_one_line_error(proc, CASES[index][2].format(**places))
  assert not places["work"].exists()  # nothing started


def test_evaluate_names_a_corrupt_masks_file(tmp_path):
  masks = tmp_path / "work" / "masks" / "convex_hull.npz"
  masks.parent.mkdir(parents=True)
  masks.write_bytes(b"PK\x03\x04 truncated")
  proc = _run("evaluate", [QUICK, f"--workdir={tmp_path / 'work'}", "--methods=convex_hull"])
  _assert_one_line_error(proc, str(masks))
  assert [p.name for p in masks.parent.iterdir()] == ["convex_hull.npz"]


def test_missing_default_data_root_says_what_to_set(tmp_path):
  proc = _run("generate", [f"--workdir={tmp_path / 'work'}"],
              env={"OPOM_DATA_ROOT": str(tmp_path / "none")})
  _assert_one_line_error(proc, "OPOM_DATA_ROOT")
  assert not (tmp_path / "work").exists()


def _flag_lines(path):
  lines = pathlib.Path(REPO, path).read_text().splitlines()
  return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_best_setting_is_one_setting_in_the_flagfiles_and_protects_default():
  from experiments.flags import FLAG_OF_SETTING  # pylint: disable=g-import-not-at-top
  from opom_jax.attack import best_setting  # pylint: disable=g-import-not-at-top
  flag_of = {f"--{FLAG_OF_SETTING['attack.' + k]}": v for k, v in best_setting.ATTACK.items()}
  given = dict(line.split("=", 1) for line in _flag_lines("configs/best_attack.flags"))
  assert {k: type(flag_of[k])(v) for k, v in given.items() if k in flag_of} == flag_of
  assert set(given) == set(flag_of)
  best = _flag_lines("configs/lfw_best.flags")
  assert "--flagfile=configs/best_attack.flags" in best
  assert f"--surrogates={','.join(best_setting.SURROGATES)}" in best
  spec = next(line for line in _flag_lines("configs/transfer_loo_best.flags")
              if line.startswith("--settings="))
  first, _, best = spec.removeprefix("--settings=").partition("|")
  assert first == "base"  # the best setting beside the base one, in one table
  fields, _, values = best.partition("=")
  in_loo = dict(zip((f.removeprefix("attack.") for f in fields.split("+")), values.split("+")))
  assert {k: type(best_setting.ATTACK[k])(v) for k, v in in_loo.items()} == best_setting.ATTACK
  # One model per weight family, the whole zoo.
  assert len({zoo.weights_of(s) for s in best_setting.SURROGATES}) == len(best_setting.SURROGATES)
  assert {zoo.weights_of(s) for s in best_setting.SURROGATES} == {zoo.weights_of(n) for n in zoo.names()}
  # experiments.protect learns with it when no flag says otherwise; experiments.run does not.
  show = ("from absl import flags; import experiments.LAUNCHER; flags.FLAGS(['x']); "
          "from experiments import attack_flags as a; import json; c = a.attack_config('convex_hull'); "
          "print(json.dumps([a.SURROGATES.value, {k: getattr(c, k) for k in %r}]))" % sorted(best_setting.ATTACK))
  for launcher, expect_best in (("protect", True), ("protect_video", True), ("run", False)):
    out = subprocess.run([sys.executable, "-c", show.replace("LAUNCHER", launcher)], cwd=REPO, text=True,
                         capture_output=True, timeout=300, check=True).stdout
    surrogates, attack = json.loads(out.splitlines()[-1])
    default = attack_config_lib.AttackConfig()
    if expect_best:
      assert surrogates == list(best_setting.SURROGATES) and attack == best_setting.ATTACK
    else:
      assert surrogates == ["foamliu_mbf"]
      assert attack == {k: getattr(default, k) for k in best_setting.ATTACK}
