"""benchmarks/profile_step.py: the HLO root classification and one end-to-end run."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import profile_step  # noqa: E402  (benchmarks/profile_step.py)


def test_root_ops_names_the_root_of_each_fusion():
  hlo = jax.jit(lambda x: jnp.sum(jnp.exp(x) * 2.0, axis=0)).lower(
      jnp.ones((64, 32))).compile().as_text()
  roots = profile_step.root_ops(hlo)
  assert roots and "reduce" in roots.values(), roots
  assert all(name in hlo for name in roots)


def test_profile_step_prints_faults_kinds_and_thunks():
  out = subprocess.run([sys.executable, str(BENCHMARKS / "profile_step.py"), "jpeg_layer", "2x16",
                        "--calls", "2", "--warmup", "1", "--top", "3"], check=True, text=True,
                       capture_output=True, cwd=BENCHMARKS.parent).stdout
  assert "minor page faults" in out and "by kind (ms per call):" in out, out
  assert "top 3 thunks" in out and "malloc:" in out, out
