"""On-disk cache of decoded arrays, keyed by the source files' identity.

Decoding 60,000 JPEGs takes a while on two cores; the arrays are saved once as
an uncompressed `.npz` (written to a temporary file, then `os.replace`d, so a
reader never sees half a file and concurrent writers are harmless) and read
back on every later run. The key covers the source path, size and
modification time of every file read, the split and the reader's version, so
a changed source is decoded again.
"""

from __future__ import annotations

import collections.abc
import hashlib
import os
import pathlib
from typing import Callable, Iterator

import numpy as np

DEFAULT_CACHE_DIR = pathlib.Path("~/.cache/jaxcomp")
Arrays = dict[str, np.ndarray]


def file_key(paths: list[pathlib.Path]) -> str:
  """Identity of files: resolved path, size, modification time (ns)."""
  parts = []
  for p in paths:
    st = p.stat()
    parts.append(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}")
  return "\n".join(parts)


def cached_arrays(cache_dir: str | os.PathLike | None, tag: str, key: str,
                  build: Callable[[], Arrays]) -> Arrays:
  """Arrays from the cache, or `build()` saved into it first.

  Args:
    cache_dir: folder of the cache; "" or None -> ~/.cache/jaxcomp.
    tag: readable file-name prefix ("cifar10_jpeg75-train").
    key: everything the arrays depend on (`file_key(...)`, split, version).
    build: makes the arrays (numeric or unicode numpy arrays, no objects).

  Returns:
    name -> array, each read from disk when first asked for.
  """
  folder = pathlib.Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  path = folder / f"{tag}-{digest}.npz"
  if not path.is_file():
    arrays = build()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  return LazyArrays(path)


class LazyArrays(collections.abc.Mapping):
  """The arrays of an `.npz` file, each loaded on access (the file is not kept open)."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    with np.load(path, allow_pickle=False) as f:
      self._names = list(f.files)

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self._names:
      raise KeyError(f"{name!r} not in {self.path} (has {self._names})")
    with np.load(self.path, allow_pickle=False) as f:
      return f[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._names)

  def __len__(self) -> int:
    return len(self._names)
