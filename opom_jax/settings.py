"""Allowed values of every setting, declared next to its field, and one check for them.

A config dataclass declares each field's rule in the field's metadata:

  eps: float = setting(8.0, Range(0, 64, lo_open=True))
  step_size: float = setting(1.0, Range(0, "eps", lo_open=True))   # a bound may name a sibling
  loss: str = setting("convex_hull", Choice(LOSSES.names, "loss"))

`check(config)` walks the config (and the configs nested in it) and raises
SettingError naming the first bad setting by its dotted path, e.g.
`attack.eps=1000.0 is out of range (0, 64]`. Launchers map the path back to
their flag name.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable

from opom_jax.errors import UserError
from opom_jax.registry import UnknownNameError

Bound = float | str | Callable[[], float] | None


class SettingError(UserError):
  """A setting outside its allowed values; `setting` is its dotted path in the config."""

  def __init__(self, setting: str, value: Any, problem: str):
    self.setting, self.value, self.problem = setting, value, problem
    super().__init__(f"{setting}={format_value(value)} {problem}")


class UnknownSettingName(SettingError, UnknownNameError):
  """A name not among a setting's choices: also a KeyError, like a registry lookup."""

  __str__ = SettingError.__str__


def format_value(value) -> str:
  """How a flag would spell the value: tuples comma-joined, strings unquoted."""
  if isinstance(value, (tuple, list)):
    return ",".join(map(str, value))
  return str(value)


@dataclasses.dataclass(frozen=True)
class Range:
  """lo <= value <= hi (or < with *_open); None is unbounded.

  A bound given as a string is the value of that sibling field; a callable is
  called at check time (e.g. the number of devices). `special` values are
  allowed outside the range, with their meaning, e.g. ((-1, "all"),).
  """
  lo: Bound = None
  hi: Bound = None
  lo_open: bool = False
  hi_open: bool = False
  special: tuple[tuple[int, str], ...] = ()
  error = SettingError

  def problem(self, value, owner) -> str | None:
    if any(value == v for v, _ in self.special) and not isinstance(value, bool):
      return None
    lo, hi = _resolve(self.lo, owner), _resolve(self.hi, owner)
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and not math.isnan(value)
          and (lo is None or (value > lo if self.lo_open else value >= lo))
          and (hi is None or (value < hi if self.hi_open else value <= hi)))
    if ok:
      return None
    special = "".join(f" or {v} ({meaning})" for v, meaning in self.special)
    if hi is None:
      return f"must be {'>' if self.lo_open else '>='} {_bound_text(self.lo, lo)}{special}"
    if lo is None:
      return f"must be {'<' if self.hi_open else '<='} {_bound_text(self.hi, hi)}{special}"
    return (f"is out of range {'(' if self.lo_open else '['}{_bound_text(self.lo, lo)}, "
            f"{_bound_text(self.hi, hi)}{')' if self.hi_open else ']'}{special}")


@dataclasses.dataclass(frozen=True)
class Choice:
  """The value (or each element of a tuple value) is one of `names()`."""
  names: Callable[[], Iterable[str]]
  kind: str
  key: Callable[[str], str] = lambda name: name   # the part of a name that is looked up
  allow_empty: bool = False
  error = UnknownSettingName

  def problem(self, value, owner) -> str | None:
    del owner
    items = value if isinstance(value, tuple) else (value,)
    if not items and not self.allow_empty:
      return f"is empty; give at least one {self.kind}"
    names = sorted(self.names())
    for item in items:
      if not isinstance(item, str) or self.key(item) not in names:
        return f"has unknown {self.kind} {item!r}; choose from {names}"
    return None


@dataclasses.dataclass(frozen=True)
class Required:
  """A non-empty string (a path the user must give)."""
  error = SettingError

  def problem(self, value, owner) -> str | None:
    del owner
    return None if isinstance(value, str) and value else "is required"


Rule = Range | Choice | Required


def setting(default, rule: Rule):
  """A dataclass field whose allowed values are `rule`."""
  return dataclasses.field(default=default, metadata={"rule": rule})


def check(config, prefix: str = ""):
  """Raises SettingError for the first setting of `config` (or a nested config) it does not allow."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    path = f"{prefix}{field.name}"
    if dataclasses.is_dataclass(value):
      check(value, f"{path}.")
    elif "rule" in field.metadata:
      rule = field.metadata["rule"]
      problem = rule.problem(value, config)
      if problem:
        raise rule.error(path, value, problem)
  return config


def _resolve(bound: Bound, owner):
  if isinstance(bound, str):
    return getattr(owner, bound)
  return bound() if callable(bound) else bound


def _bound_text(bound: Bound, value) -> str:
  """A sibling field or a computed bound says what it is: `eps=8`, `device_count=1`."""
  if isinstance(bound, str):
    return f"{bound}={_num(value)}"
  if callable(bound):
    return f"{bound.__name__.strip('_')}={_num(value)}"
  return _num(value)


def _num(x) -> str:
  return f"{x:g}" if isinstance(x, float) else str(x)
