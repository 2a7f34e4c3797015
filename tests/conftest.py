"""Test set-up: 8 fake CPU devices for sharding tests, XLA:CPU flags as in main, shared-data paths."""

import os
import pathlib

# Must happen before jax is imported anywhere: every test process sees 8 CPU
# devices, so sharding tests run without an accelerator.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# ... and compile convolutions the way `python -m jaxcomp.main` does (Eigen, not YNNPACK).
from jaxcomp import cpu_compiler_flags  # noqa: E402

cpu_compiler_flags.use_eigen_convolutions()

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(
    os.environ.get("JAXCOMP_SHARED_DATA",
                   pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """`../shared/data` beside the checkout (override with $JAXCOMP_SHARED_DATA)."""
  if not SHARED_DATA.is_dir():
    pytest.fail(f"shared data not found at {SHARED_DATA}; set JAXCOMP_SHARED_DATA")
  return SHARED_DATA
