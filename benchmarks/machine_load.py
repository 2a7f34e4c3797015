"""What a benchmark's figures depend on: the machine's load and the C allocator.

Figures for the README come from an idle machine only (load average well
under 1 on 2 cores); a benchmark's output says how idle it was.

Importing this module also makes the settings `python -m jaxcomp.main` makes:
* the process's allocator, for both sides of a comparison at once (they share
  the process): glibc keeps freed blocks for reuse
  (`jaxcomp.cpu_allocator.keep_freed_memory`), unless the environment says
  `BENCH_MALLOC=default` (glibc's own thresholds, which page-fault large
  temporaries in anew on every call); `KEPT` says whether freed memory is kept;
* XLA:CPU's convolutions by Eigen instead of YNNPACK
  (`jaxcomp.cpu_compiler_flags.use_eigen_convolutions`; the jaxcomp side only),
  unless `BENCH_XLA=default`; import this module before JAX computes anything.
`SETTINGS` names both (every benchmark prints it).
"""

from __future__ import annotations

import os

from jaxcomp import cpu_allocator, cpu_compiler_flags

# Whether freed memory is kept (False: the C library's defaults).
KEPT = os.environ.get("BENCH_MALLOC", "keep") != "default" and cpu_allocator.keep_freed_memory()
if KEPT:
  _ALLOCATOR = "malloc: freed memory kept (jaxcomp.cpu_allocator)"
elif os.environ.get("BENCH_MALLOC") == "default":
  _ALLOCATOR = "malloc: glibc defaults (BENCH_MALLOC=default)"
else:
  _ALLOCATOR = "malloc: this C library's defaults (no mallopt)"
# Whether XLA:CPU compiles convolutions with Eigen (False: XLA's default, YNNPACK).
EIGEN_CONVOLUTIONS = (os.environ.get("BENCH_XLA", "jaxcomp") != "default"
                      and cpu_compiler_flags.use_eigen_convolutions())
SETTINGS = _ALLOCATOR + "; XLA:CPU convolutions: " + (
    "Eigen (jaxcomp.cpu_compiler_flags)" if EIGEN_CONVOLUTIONS else "XLA's default (YNNPACK)")


def loadavg() -> str:
  """The 1, 5 and 15 minute load averages from /proc/loadavg ("n/a" off Linux)."""
  try:
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])
  except OSError:
    return "n/a"
