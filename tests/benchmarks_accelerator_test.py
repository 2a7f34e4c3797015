"""benchmarks/accelerator.py: the suite runs end to end (`--small`) and prints its table."""

import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "accelerator.py"


@pytest.mark.slow   # ~1.5 min on 2 CPU cores: eight workloads compiled
def test_small_run_prints_one_row_per_workload():
  out = subprocess.run([sys.executable, str(SCRIPT), "--small", "--seconds", "0"],
                       capture_output=True, text=True, check=True, timeout=900).stdout
  assert re.search(r"^device: .+; load before [0-9.]+$", out, re.M)
  assert re.search(r"^measured peaks: matmul f32 [0-9,]+ GFLOP/s, bf16 [0-9,]+ GFLOP/s; "
                   r"copy [0-9.,]+ GB/s", out, re.M)
  rows = [line.split("|")[1:-1] for line in out.splitlines()
          if line.startswith("| ") and not line.startswith("| workload")]
  assert len(rows) == 8, out
  names = [r[0].strip() for r in rows]
  assert sum(n.startswith("ResNet-20") for n in names) == 2
  assert any(n.startswith("hyperprior") for n in names) and any(n.startswith("PGD") for n in names)
  for name, throughput, compile_s, *rest in rows:
    value = float(throughput.split()[0].replace(",", ""))
    assert value > 0, (name, throughput)
    assert float(compile_s) > 0 and all(float(x) >= 0 for x in rest), name
