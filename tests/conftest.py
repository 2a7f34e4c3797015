"""Test set-up: 8 fake CPU devices for sharding tests, XLA:CPU flags as in main, a
compilation cache per run, shared-data paths."""

import os
import pathlib
import shutil
import tempfile
import time

# Must happen before jax is imported anywhere: every test process sees 8 CPU
# devices, so sharding tests run without an accelerator.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache per test run, shared by pytest-xdist's workers (and
# the notebooks' kernels and the subprocesses tests start): a program that one test
# compiled is loaded by the others instead of compiled again (three of the slowest
# modules: 114 -> 75 s). Fresh for every run (xdist's run id); a run's folder is
# removed by the first run that starts a day later.
CACHE_ROOT = pathlib.Path(tempfile.gettempdir()) / "jaxcomp-test-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(
    CACHE_ROOT / (os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}")))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
# ... and compile convolutions the way `python -m jaxcomp.main` does (Eigen, not YNNPACK).
from jaxcomp import cpu_compiler_flags  # noqa: E402

cpu_compiler_flags.use_eigen_convolutions()

import pytest  # noqa: E402


def pytest_sessionstart(session):
  """Removes the compilation caches of runs that started over a day ago."""
  del session
  if os.environ.get("PYTEST_XDIST_WORKER") or not CACHE_ROOT.is_dir():
    return
  for run in CACHE_ROOT.iterdir():
    if time.time() - run.stat().st_mtime > 86400:
      shutil.rmtree(run, ignore_errors=True)

SHARED_DATA = pathlib.Path(
    os.environ.get("JAXCOMP_SHARED_DATA",
                   pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """`../shared/data` beside the checkout (override with $JAXCOMP_SHARED_DATA)."""
  if not SHARED_DATA.is_dir():
    pytest.fail(f"shared data not found at {SHARED_DATA}; set JAXCOMP_SHARED_DATA")
  return SHARED_DATA
