"""The `--sweep` grammar: a grid of RunConfigs around a base config.

`field=v1,v2;field2=w1,w2` names RunConfig fields by dotted path (`seed`,
`attack.eps`, `data.max_people`); the grid is the product of the `;` axes.
Fields joined by `+` move together: `attack.rule+attack.iters=base+16,transfer+100`.
A tuple field takes `/`-separated items (`surrogates=foamliu_mbf/edgeface_xs`).
Every point is validated like the base config (run.config.validate); a bad
field, value or point, or two points of one name, raises SettingError for the
setting `sweep`.
"""
from __future__ import annotations

import dataclasses
import itertools
import pathlib

from opom_jax.run import config as config_lib
from opom_jax.run.config import RunConfig
from opom_jax.settings import SettingError, format_value


def _field(base: RunConfig, field: str) -> tuple[str, str, type]:
  """(section, name, type of its value) of a dotted field of `base`."""
  section, _, name = field.rpartition(".")
  owner = getattr(base, section, None) if section else base
  names = {f.name for f in dataclasses.fields(owner)} if dataclasses.is_dataclass(owner) else set()
  if name not in names or dataclasses.is_dataclass(getattr(owner, name)):
    raise SettingError("sweep", field, "is not a setting (use e.g. attack.eps, data.max_people, seed)")
  return section, name, type(getattr(owner, name))


def _value(field: str, kind: type, text: str):
  if kind is tuple:
    return tuple(filter(None, text.split("/")))
  if kind is bool:
    if text.lower() not in ("true", "false", "1", "0"):
      raise SettingError("sweep", f"{field}={text}", "is not true or false")
    return text.lower() in ("true", "1")
  try:
    return kind(text)
  except ValueError:
    raise SettingError("sweep", f"{field}={text}", f"is not a{'n' if kind is int else ''} "
                       f"{kind.__name__}") from None


def _replace(cfg: RunConfig, section: str, name: str, value) -> RunConfig:
  if section:
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})
  return dataclasses.replace(cfg, **{name: value})


def _axis(part: str, base: RunConfig) -> list[list[tuple[str, str, str, object]]]:
  """One `;` part: a list of points, each a list of (field, section, name, value)."""
  fields_text, equals, values = part.partition("=")
  if not equals or not values.strip():
    raise SettingError("sweep", part, "is not 'field=v1,v2'")
  fields = [f.strip() for f in fields_text.split("+")]
  owners = [_field(base, f) for f in fields]
  axis = []
  for value in values.split(","):
    texts = [t.strip() for t in value.split("+")]
    if len(texts) != len(fields):
      raise SettingError("sweep", f"{fields_text.strip()}={value.strip()}",
                         f"needs one value per field of {'+'.join(fields)}")
    axis.append([(f, section, name, _value(f, kind, t))
                 for f, (section, name, kind), t in zip(fields, owners, texts)])
  return axis


def _parts(spec: str) -> list[str]:
  return list(filter(None, (p.strip() for p in spec.split(";"))))


def swept_fields(spec: str) -> list[str]:
  """The dotted fields the grid moves, in the order they appear."""
  fields = [f.strip() for part in _parts(spec) for f in part.partition("=")[0].split("+")]
  return list(dict.fromkeys(fields))


def parse_grid(spec: str, base: RunConfig) -> list[tuple[str, RunConfig]]:
  """(point name, validated config) for every point; each point works in <base workdir>/<name>."""
  axes = [_axis(part, base) for part in _parts(spec)]
  if not axes:
    raise SettingError("sweep", spec, "is empty; give at least one 'field=v1,v2'")
  points, seen = [], set()
  for combo in itertools.product(*axes):
    cfg, label = base, []
    for _, section, name, value in itertools.chain.from_iterable(combo):
      cfg = _replace(cfg, section, name, value)
      label.append(f"{name}={format_value(value)}")
    point = "__".join(label).replace("/", "_")
    if point in seen:  # e.g. eps=8,8.0: one work directory cannot hold two points
      raise SettingError("sweep", spec, f"names the point {point} twice")
    seen.add(point)
    cfg = dataclasses.replace(cfg, workdir=str(pathlib.Path(base.workdir) / point))
    try:
      config_lib.validate(cfg)
    except SettingError as e:
      raise SettingError("sweep", f"{e.setting}={format_value(e.value)}",
                         f"{e.problem} (at the point {point})") from None
    points.append((point, cfg))
  return points
