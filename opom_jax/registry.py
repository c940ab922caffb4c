"""Named components (losses, update rules, projections, models, targets).

One helper for every registry, so an unknown name always fails the same way:
one line naming the kind of component and the choices.
"""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
  """A name that is not in a registry; str() is the one-line message."""

  def __str__(self) -> str:
    return str(self.args[0])


class Registry(Generic[T]):
  """An ordered name -> component mapping with a uniform lookup error."""

  def __init__(self, kind: str, items: dict[str, T] | None = None):
    self.kind = kind
    self._items: dict[str, T] = dict(items or {})

  def register(self, name: str, item: T) -> T:
    if name in self._items:
      raise ValueError(f"{self.kind} {name!r} is registered twice")
    self._items[name] = item
    return item

  def get(self, name: str) -> T:
    try:
      return self._items[name]
    except KeyError:
      raise UnknownNameError(
          f"unknown {self.kind} {name!r}; choose from {self.names()}") from None

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name) -> bool:
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    return iter(self._items)

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, name: str) -> T:
    return self.get(name)

  def items(self):
    return self._items.items()

  def values(self):
    return self._items.values()
