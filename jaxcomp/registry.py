"""Name -> object registries: the one way a config or a command line chooses an implementation.

A registry maps a name to a factory (a class, a function). Besides exact names it
holds *prefix* entries (`"tfds:"`): a name that starts with a registered prefix
resolves to that entry and the rest of the name (`"tfds:cifar10"` -> the tfds
factory and `"cifar10"`). Unknown names fail with the list of known ones, so a
typo in a config is caught at start-up:

    DATASETS = Registry("dataset")

    @DATASETS.register("cifar10_sample")
    def cifar10_sample(data_config, split): ...

    @DATASETS.register_prefix("tfds:")
    def tfds_dataset(data_config, split, name): ...

    factory, rest = DATASETS.resolve("tfds:cifar10")

Every registry is also listed by its kind (`by_kind("task")`), which is how
config validation finds the names without a second list of them; the built-in
entries exist once their modules are imported, which `load_builtins()` does
(the one list of plugin modules, `BUILTIN_MODULES`).
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# The modules whose import registers jaxcomp's built-in entries.
BUILTIN_MODULES = (
    "jaxcomp.models", "jaxcomp.data", "jaxcomp.codecs.learned", "jaxcomp.optim",
    "jaxcomp.tasks", "jaxcomp.evaluators", "jaxcomp.attacks", "jaxcomp.defenses",
)
_BY_KIND: dict[str, "Registry"] = {}


def load_builtins() -> None:
  """Imports every module in `BUILTIN_MODULES`, so that their registries are full."""
  for module in BUILTIN_MODULES:
    importlib.import_module(module)


def by_kind(kind: str) -> "Registry":
  """The registry of `kind` ("task", "optimizer", ...), after `load_builtins()`."""
  load_builtins()
  try:
    return _BY_KIND[kind]
  except KeyError:
    raise KeyError(f"no registry of kind {kind!r}; known: {sorted(_BY_KIND)}") from None


class Registry(Generic[T]):
  """A named collection of factories of one kind ("model", "dataset", ...)."""

  def __init__(self, kind: str):
    if kind in _BY_KIND:
      raise ValueError(f"a registry of kind {kind!r} already exists")
    _BY_KIND[kind] = self
    self.kind = kind
    self._entries: dict[str, T] = {}
    self._prefixes: dict[str, T] = {}

  def register(self, name: str, obj: T | None = None) -> Any:
    """Registers `obj` under `name`; usable as `@registry.register("name")`."""
    return self._adder(self._entries, name, obj)

  def register_prefix(self, prefix: str, obj: T | None = None) -> Any:
    """Registers `obj` for every name starting with `prefix` (e.g. "tfds:")."""
    if not prefix:
      raise ValueError("a prefix must not be empty")
    return self._adder(self._prefixes, prefix, obj)

  def _adder(self, table: dict[str, T], name: str, obj: T | None) -> Any:
    def add(o: T) -> T:
      if name in self._entries or name in self._prefixes:
        raise ValueError(f"{self.kind} {name!r} is already registered")
      table[name] = o
      return o

    return add if obj is None else add(obj)

  def resolve(self, name: str) -> tuple[T, str | None]:
    """`(entry, rest)`: an exact name gives rest None, a prefixed one the text after the prefix.

    The longest matching prefix wins.

    Raises:
      KeyError: the name is neither registered nor starts with a registered prefix;
        the message lists the known names and prefixes.
    """
    if not isinstance(name, str):
      raise KeyError(f"{self.kind} name must be a string, got {name!r}")
    if name in self._entries:
      return self._entries[name], None
    for prefix in sorted(self._prefixes, key=len, reverse=True):
      if name.startswith(prefix):
        return self._prefixes[prefix], name[len(prefix):]
    raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")

  def get(self, name: str) -> T:
    """The entry registered under exactly `name` (prefix entries: use `resolve`)."""
    entry, rest = self.resolve(name)
    if rest is not None:
      raise KeyError(f"{self.kind} {name!r} needs resolve(): it is a prefix entry")
    return entry

  def __contains__(self, name: str) -> bool:
    try:
      self.resolve(name)
    except KeyError:
      return False
    return True

  def names(self) -> list[str]:
    """Registered names and prefixes (the latter shown as "<prefix>..."), sorted."""
    return sorted(self._entries) + sorted(f"{p}..." for p in self._prefixes)
