"""What a benchmark's figures depend on: the machine's load and the C allocator.

Figures for the README come from an idle machine only (load average well
under 1 on 2 cores); a benchmark's output says how idle it was.

Importing this module also sets the process's allocator, for both sides of a
comparison at once (they share the process): glibc keeps freed blocks for
reuse (`jaxcomp.cpu_allocator.keep_freed_memory`, what `python -m
jaxcomp.main` does), unless the environment says `BENCH_MALLOC=default`
(glibc's own thresholds, which page-fault large temporaries in anew on every
call). `ALLOCATOR` names the setting in use (every benchmark prints it), `KEPT` says
whether freed memory is kept.
"""

from __future__ import annotations

import os

from jaxcomp import cpu_allocator

# Whether freed memory is kept (False: the C library's defaults).
KEPT = os.environ.get("BENCH_MALLOC", "keep") != "default" and cpu_allocator.keep_freed_memory()
if KEPT:
  ALLOCATOR = "malloc: freed memory kept (jaxcomp.cpu_allocator)"
elif os.environ.get("BENCH_MALLOC") == "default":
  ALLOCATOR = "malloc: glibc defaults (BENCH_MALLOC=default)"
else:
  ALLOCATOR = "malloc: this C library's defaults (no mallopt)"


def loadavg() -> str:
  """The 1, 5 and 15 minute load averages from /proc/loadavg ("n/a" off Linux)."""
  try:
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])
  except OSError:
    return "n/a"
