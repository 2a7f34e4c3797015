"""Name -> object registries (models, datasets, preprocessing, attacks).

A registry maps a string name to a factory. Unknown names fail with the list of
known names, so that a typo in a config is caught at start-up.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """A named collection of factories of one kind ("model", "dataset", ...)."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str, obj: T | None = None) -> Any:
    """Registers `obj` under `name`; usable as `@registry.register("name")`."""

    def add(o: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is already registered")
      self._entries[name] = o
      return o

    return add if obj is None else add(obj)

  def get(self, name: str) -> T:
    try:
      return self._entries[name]
    except KeyError:
      raise KeyError(
          f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
      ) from None

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def names(self) -> list[str]:
    return sorted(self._entries)

