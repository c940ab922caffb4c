"""Where the data sets and model weights live.

Flags default to these; a user points them at their own copies. Order:
explicit value > OPOM_DATA_ROOT / OPOM_MODEL_ROOT > ../shared/{datasets,models}
relative to the repository root.
"""
import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
_FALLBACK = {
    "OPOM_DATA_ROOT": REPO_ROOT.parent / "shared" / "datasets",
    "OPOM_MODEL_ROOT": REPO_ROOT.parent / "shared" / "models",
}


class MissingPathError(FileNotFoundError):
  pass


def _resolve(env_var: str, value: str | os.PathLike | None, flag: str) -> pathlib.Path:
  if value:
    path = pathlib.Path(value).expanduser()
    where = f"--{flag}={value}"
  elif os.environ.get(env_var):
    path = pathlib.Path(os.environ[env_var]).expanduser()
    where = f"{env_var}={os.environ[env_var]}"
  else:
    path = _FALLBACK[env_var]
    where = f"the default {path}"
  if not path.is_dir():
    raise MissingPathError(
        f"{where} is not a directory. Set --{flag} or the environment "
        f"variable {env_var} to the folder that holds it.")
  return path


def data_root(value=None) -> pathlib.Path:
  return _resolve("OPOM_DATA_ROOT", value, "data_root")


def model_root(value=None) -> pathlib.Path:
  return _resolve("OPOM_MODEL_ROOT", value, "model_root")


def model_file(name: str, root=None) -> pathlib.Path:
  path = model_root(root) / name
  if not path.is_file():
    raise MissingPathError(
        f"model file {path} not found. Set --model_root or OPOM_MODEL_ROOT "
        "to the folder that holds the pretrained weights.")
  return path
