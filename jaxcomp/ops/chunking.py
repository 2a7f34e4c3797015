"""Batches processed a chunk of whole images at a time, so a chunk's intermediates stay in cache.

On a CPU a pipeline of many elementwise passes over a large batch (a defense,
a transform) moves every intermediate through main memory; run over chunks of
a few images (`jax.lax.map`, one compiled loop, not a Python loop) the same
passes hit the cache. `map_chunks` runs `defenses.pd_rcam_dwt`; the divisor
helpers also size the kernel-gradient chunks of `ops.conv` and the JPEG-DL
layer's bands (`ops.jpeg_transform`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax


def largest_divisor(n: int, limit: int) -> int:
  """The largest divisor of `n` (>= 1) that is at most `limit` (1 when `limit` < 1)."""
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def images_per_chunk(batch: int, bytes_per_image: int, chunk_bytes: int) -> int:
  """The largest divisor of `batch` whose images take at most `chunk_bytes` (at least 1)."""
  return largest_divisor(batch, chunk_bytes // max(1, bytes_per_image))


def map_chunks(fn: Callable[..., Any], chunk: int, *xs: Any) -> Any:
  """`fn(*xs)` computed `chunk` images at a time, for `fn` that treats images independently.

  Args:
    fn: maps arrays with a leading batch axis (or None) to a pytree of arrays with
      the same leading batch axis.
    chunk: images per call of `fn`; must divide the batch (`images_per_chunk`).
    *xs: arrays [B, ...] (or None, passed through as None).

  Returns:
    `fn(*xs)`, the chunks' outputs concatenated along the batch axis.
  """
  batch = next(x.shape[0] for x in xs if x is not None)
  if batch % chunk:
    raise ValueError(f"chunk {chunk} does not divide the batch {batch}")
  if chunk >= batch:
    return fn(*xs)
  split = lambda x: None if x is None else x.reshape(batch // chunk, chunk, *x.shape[1:])
  out = jax.lax.map(lambda args: fn(*args), tuple(split(x) for x in xs))
  return jax.tree.map(lambda o: o.reshape(batch, *o.shape[2:]), out)
