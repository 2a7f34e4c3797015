"""Keep freed memory in the process on CPU, so that XLA's temporaries are not page-faulted in anew on every step.

XLA:CPU allocates the temporaries of a compiled program with the C library's
`malloc` (buffer assignment packs them into one block the size of the
program's peak live memory, tens of MiB for a training step) and frees them
when the call ends. glibc serves blocks above its mmap threshold (128 KiB,
rising to at most 32 MiB as blocks are freed) with fresh `mmap`s, so every
call pays for the first touch of every page of that block: measured here
(docs/performance.md), the JPEG layer's fwd+bwd step on 16x224x224 images
took 10,317 minor page faults and 32 ms of system time per call, against
0-1,100 and 1.2-4.2 ms with this setting, and its median time fell from 64 to
45-50 ms.
PyTorch on CPU allocates through the same `malloc`.

`keep_freed_memory()` raises the mmap and trim thresholds
(`mallopt(M_MMAP_THRESHOLD)`, `mallopt(M_TRIM_THRESHOLD)`, both to 2 GiB - 1)
so that freed blocks stay in the heap and are reused, and makes every thread
allocate from the main heap (`mallopt(M_ARENA_MAX, 1)`): glibc's per-thread
arenas are heaps of at most 64 MiB, so larger blocks allocated on XLA's and
Eigen's worker threads were still `mmap`ed and unmapped anew on every call
(a ResNet-20 training step at batch 128 with Eigen convolutions: 80,578
minor page faults and 270 ms of system time per step with the thresholds
alone; 14,886-30,696 and 65-115 ms with this call, 0 and 15-26 ms with
`MALLOC_ARENA_MAX=1` in the environment: the rest is the heap fragmenting while
the step compiles; docs/performance.md). It is the
equivalent of starting Python with `MALLOC_MMAP_THRESHOLD_=2147483647
MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1`, and must come before
other threads allocate (it does not move arenas already made). The cost is
resident memory: the process
keeps its peak heap instead of returning it. It is process-wide (every
library in the process allocates through the same `malloc`), so jaxcomp
never calls it on import: `python -m jaxcomp.main` calls it (config key
`keep_freed_memory`, default True; host memory, so on every platform) and the
benchmarks call it once for both sides of a comparison.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Blocks below this are served from the heap (glibc 2.36 accepts any int; 32 MiB, the
# dynamic threshold's ceiling, is below a training step's temporaries and changes nothing) ...
MMAP_THRESHOLD = 2 ** 31 - 1
# ... and this much free memory at the heap top is kept (mallopt takes a C int).
TRIM_THRESHOLD = 2 ** 31 - 1
# One arena for every thread: the per-thread arenas' heaps are at most 64 MiB, so
# larger blocks allocated on XLA's worker threads were mmap-ed and unmapped anew.
ARENA_MAX = 1


@functools.cache
def _mallopt():
  """glibc's `mallopt`, or None on a C library without it (macOS, musl)."""
  name = ctypes.util.find_library("c")
  try:
    fn = ctypes.CDLL(name).mallopt
  except (OSError, AttributeError, TypeError):
    return None
  fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return fn


def keep_freed_memory(*, mmap_threshold: int = MMAP_THRESHOLD,
                      trim_threshold: int = TRIM_THRESHOLD, arena_max: int = ARENA_MAX) -> bool:
  """Makes glibc reuse freed blocks instead of unmapping them (module docstring).

  Args:
    mmap_threshold: blocks at least this large (bytes) are still `mmap`ed.
    trim_threshold: free memory at the heap top (bytes) kept before trimming.
    arena_max: the most malloc arenas (1: every thread allocates from the main heap).

  Returns:
    True when all three settings were applied, False where the C library has no
    `mallopt` (nothing changes there).
  """
  for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold),
                      ("arena_max", arena_max)):
    if not 0 < value <= 2 ** 31 - 1:
      raise ValueError(f"{name} must be in [1, 2**31 - 1] (a C int), got {value}")
  fn = _mallopt()
  if fn is None:
    return False
  return (bool(fn(_M_MMAP_THRESHOLD, mmap_threshold)) & bool(fn(_M_TRIM_THRESHOLD, trim_threshold))
          & bool(fn(_M_ARENA_MAX, arena_max)))
