"""XLA:CPU compiler flags that make jaxcomp's workloads faster: convolutions by Eigen, not YNNPACK.

jax 0.10.2's XLA:CPU hands every convolution to YNNPACK (a `__ynn_fusion`).
On this project's 2-core AMD EPYC (AVX2) XLA's Eigen convolutions run the same
steps faster (docs/performance.md, one process, XLA's default against the
flag, medians): ResNet-20 SGD step at batch 128 669.5 -> 590.6 ms (1.13x), a
PGD-20 attack on it 6,241 -> 4,260 ms (1.46x), a hyperprior Adam step (N128
M192, 8 x 128^2) 935 -> 871 ms (1.07x); the JPEG-DL layer and the defenses
have no convolutions, so the flag does not touch them. YNNPACK keeps XLA's dots
and reductions (turning those off too made the defense ~20 % slower).

`use_eigen_convolutions()` appends `FLAG` to the `XLA_FLAGS` environment
variable. XLA reads that variable once, when JAX first starts a backend, so the
call must come before any computation; it is process-wide (every JAX program
in the process compiles with it), so jaxcomp never calls it on import:
`python -m jaxcomp.main` calls it (config key `eigen_cpu_convolutions`,
default True), as do the benchmarks (for the jaxcomp side) and the test suite.
A user's own `--xla_cpu_experimental_ynn_fusion_type` in `XLA_FLAGS` is kept
as it is. Only jaxlib versions in `VERIFIED_JAXLIB` get the flag: XLA aborts
the process on a flag or value it does not know, and the flag is experimental.
The flag only concerns XLA:CPU; GPUs and TPUs ignore it.
"""

from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_NAME = "xla_cpu_experimental_ynn_fusion_type"
# jaxlib (major, minor) series whose XLA knows FLAG and was measured faster with it.
VERIFIED_JAXLIB = ((0, 10),)


def _jaxlib_series() -> tuple[int, int] | None:
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    major, minor = jaxlib.__version__.split(".")[:2]
    return int(major), int(minor)
  except (ImportError, ValueError, AttributeError):
    return None


def _backends_initialized() -> bool:
  """Whether JAX has started its backends (then XLA_FLAGS has been read already)."""
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(xla_bridge.backends_are_initialized())


def use_eigen_convolutions() -> bool:
  """Makes XLA:CPU compile convolutions with Eigen instead of YNNPACK (module docstring).

  Returns:
    True when `FLAG` is in effect for this process's compilations: appended to
    `XLA_FLAGS` now, or already there. False, changing nothing, when the user's
    `XLA_FLAGS` set the YNNPACK fusion types otherwise, when this jaxlib is not
    in `VERIFIED_JAXLIB`, or (with a warning) when JAX's backends have started.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if _NAME in flags:
    return FLAG in flags.split()
  if _jaxlib_series() not in VERIFIED_JAXLIB:
    return False
  if _backends_initialized():
    warnings.warn("jaxcomp.cpu_compiler_flags.use_eigen_convolutions() called after JAX "
                  "started its backends: XLA_FLAGS has been read, nothing changes; call it "
                  "before the first computation", RuntimeWarning, stacklevel=2)
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
  return True
