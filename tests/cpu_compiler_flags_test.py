"""jaxcomp.cpu_compiler_flags: XLA:CPU convolutions by Eigen instead of YNNPACK, set before JAX starts."""

import os
import subprocess
import sys
import warnings

import pytest

from jaxcomp import config_lib, cpu_compiler_flags

# Compiles a jitted convolution in a fresh process (XLA reads XLA_FLAGS once) and prints
# whether YNNPACK took it (a `__ynn_fusion`), then the convolution's value at one point.
_PROBE = """
import sys
from jaxcomp import cpu_compiler_flags
if sys.argv[1] == "eigen":
  print("applied", cpu_compiler_flags.use_eigen_convolutions())
import jax, jax.numpy as jnp, numpy as np
x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 32, 32, 32)), jnp.float32)
k = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 32, 32)), jnp.float32)
f = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))
compiled = f.lower(x, k).compile()
print("ynn_convolution", "__ynn_fusion" in compiled.as_text())   # the program's only op
print("value", float(compiled(x, k)[1, 4, 4, 2]))
"""


def _probe(setting: str, xla_flags: str = "") -> dict[str, str]:
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _PROBE, setting], check=True, text=True,
                       capture_output=True, env=env).stdout
  return dict(line.split(" ", 1) for line in out.strip().splitlines())


@pytest.mark.skipif(cpu_compiler_flags._jaxlib_series() not in cpu_compiler_flags.VERIFIED_JAXLIB,
                    reason="the flag is only applied on verified jaxlib versions")
def test_flag_moves_convolutions_from_ynnpack_to_eigen_with_the_same_value():
  default, eigen = _probe("default"), _probe("eigen")
  assert default["ynn_convolution"] == "True"      # XLA's default: YNNPACK takes the convolution
  assert eigen["applied"] == "True" and eigen["ynn_convolution"] == "False"
  assert float(eigen["value"]) == pytest.approx(float(default["value"]), rel=1e-5)


def test_users_own_setting_is_kept(monkeypatch):
  own = "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type="
  monkeypatch.setenv("XLA_FLAGS", own)
  assert cpu_compiler_flags.use_eigen_convolutions() is False
  assert os.environ["XLA_FLAGS"] == own
  monkeypatch.setenv("XLA_FLAGS", f"--foo {cpu_compiler_flags.FLAG}")
  assert cpu_compiler_flags.use_eigen_convolutions() is True   # already in effect


def test_appends_to_other_flags_before_jax_starts(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.setattr(cpu_compiler_flags, "_backends_initialized", lambda: False)
  monkeypatch.setattr(cpu_compiler_flags, "_jaxlib_series", lambda: (0, 10))
  assert cpu_compiler_flags.use_eigen_convolutions() is True
  assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                     + cpu_compiler_flags.FLAG)


def test_unverified_jaxlib_gets_nothing(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setattr(cpu_compiler_flags, "_jaxlib_series", lambda: (0, 4))
  assert cpu_compiler_flags.use_eigen_convolutions() is False
  assert os.environ["XLA_FLAGS"] == ""


def test_after_jax_started_warns_and_changes_nothing(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.setattr(cpu_compiler_flags, "_backends_initialized", lambda: True)
  monkeypatch.setattr(cpu_compiler_flags, "_jaxlib_series", lambda: (0, 10))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert cpu_compiler_flags.use_eigen_convolutions() is False
  assert any("before the first computation" in str(w.message) for w in caught)
  assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"


def test_config_turns_it_on_by_default():
  assert config_lib.base_config().eigen_cpu_convolutions is True
