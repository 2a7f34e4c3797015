"""The accelerator suite: jaxcomp's side of every benchmark on whatever device JAX sees.

  python benchmarks/accelerator.py            # the sizes of the comparison benchmarks
  python benchmarks/accelerator.py --small    # a smoke run (~1.5 min on 2 CPU cores); its
                                              # probes are too small to be peaks (>100 % shows)

For each workload (`workloads.py`): throughput (median of timed windows after a
warm-up, compilation reported apart) and the fraction of the device's peak it
reaches: FLOP/s against a measured dense-matmul peak (float32 at JAX's default
precision, and bfloat16) and bytes/s against a measured copy bandwidth, with
FLOPs and bytes per step from XLA's cost analysis. The spec sheet of known
devices is printed beside the probes. Prints one Markdown table. Budget: the
default sizes finish in a few minutes on a current GPU or TPU (each workload
is timed for at most `--seconds`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import workloads  # noqa: E402  (benchmarks/workloads.py, beside this file)

# Dense peaks from the vendors' spec sheets: (bf16 TFLOP/s, fp32 TFLOP/s, memory TB/s).
# fp32 on NVIDIA GPUs is the non-tensor-core rate; JAX's default precision may run
# float32 matmuls as TF32 on tensor cores, which the measured probe shows.
KNOWN_DEVICES = {
    "NVIDIA H200": (989.0, 67.0, 4.8),
    "NVIDIA H100 80GB HBM3": (989.0, 67.0, 3.35),
    "NVIDIA A100-SXM4-80GB": (312.0, 19.5, 2.04),
    "NVIDIA A100-SXM4-40GB": (312.0, 19.5, 1.56),
    "TPU v4": (275.0, 275.0 / 2, 1.2),
    "TPU v5 lite": (197.0, 197.0 / 2, 0.82),
}


def _time(fn, seconds: float, min_runs: int = 3) -> float:
  """Median seconds per call over windows filling about `seconds` (after one warm-up)."""
  fn()
  times, start = [], time.perf_counter()
  while len(times) < min_runs or time.perf_counter() - start < seconds:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
    if len(times) >= 50:
      break
  return statistics.median(times)


def matmul_peak(dtype, n: int, seconds: float) -> float:
  """Measured FLOP/s of an n x n matmul in `dtype` (JAX's default precision)."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / _time(lambda: jax.block_until_ready(f(a)), seconds)


def copy_bandwidth(megabytes: int, seconds: float) -> float:
  """Measured bytes/s of reading and writing a float32 array (`x + 1`)."""
  x = jnp.zeros((megabytes * 2 ** 20 // 4,), jnp.float32)
  f = jax.jit(lambda v: v + 1.0)
  return 2 * x.nbytes / _time(lambda: jax.block_until_ready(f(x)), seconds)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--small", action="store_true", help="tiny sizes (CPU smoke run)")
  p.add_argument("--seconds", type=float, default=10.0, help="timing budget per workload")
  a = p.parse_args()
  device = jax.devices()[0]
  s = 8 if a.small else 1
  builders = [
      lambda: workloads.resnet20_train(128 // s),
      lambda: workloads.resnet20_train(128 // s, dtype=jnp.bfloat16),
      lambda: workloads.hyperprior_train(8 // min(s, 8), max(256 // s, 64)),   # sides: multiples of 64
      lambda: workloads.pgd20(128 // s),
      lambda: workloads.jpeg_layer(256 // s, 32),
      lambda: workloads.jpeg_layer(16 // min(s, 16), 224 // s * 2 if a.small else 224),
      lambda: workloads.defense(256 // s, 32),
      lambda: workloads.defense(16 // min(s, 16), 224 // s * 2 if a.small else 224),
  ]
  with open("/proc/loadavg") as f:
    load_before = f.read().split()[0]
  n, mb = (256, 16) if a.small else (8192, 1024)
  peaks = {"f32": matmul_peak(jnp.float32, n, a.seconds / 2),
           "bf16": matmul_peak(jnp.bfloat16, n, a.seconds / 2)}
  bandwidth = copy_bandwidth(mb, a.seconds / 2)
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; "
        f"load before {load_before}")
  spec = KNOWN_DEVICES.get(device.device_kind)
  print(f"measured peaks: matmul f32 {peaks['f32'] / 1e9:,.0f} GFLOP/s, bf16 "
        f"{peaks['bf16'] / 1e9:,.0f} GFLOP/s; copy {bandwidth / 1e9:,.1f} GB/s"
        + (f"; spec sheet: bf16 {spec[0]:.0f}, fp32 {spec[1]:.0f} TFLOP/s, {spec[2]:.2f} TB/s"
           if spec else "; not in the spec table"))
  print()
  print("| workload | throughput | compile s | GFLOP/s | % of matmul peak | GB/s | % of copy bw |")
  print("|---|---|---|---|---|---|---|")
  for build in builders:
    w = build()
    sec = _time(w.step, a.seconds)
    flops, nbytes = w.cost["flops"] / sec, w.cost["bytes accessed"] / sec
    peak = peaks["bf16" if "bfloat16" in w.name or "bf16" in w.name else "f32"]
    rate = w.items / sec
    shown = f"{rate / 1e6:.2f} M{w.unit}/s" if w.unit == "pixels" else f"{rate:,.0f} {w.unit}/s"
    print(f"| {w.name} | {shown} | {w.compile_s:.1f} | {flops / 1e9:,.1f} | "
          f"{100 * flops / peak:.1f} | {nbytes / 1e9:.1f} | {100 * nbytes / bandwidth:.1f} |",
          flush=True)
  with open("/proc/loadavg") as f:
    print(f"\nload after {f.read().split()[0]}; FLOPs and bytes per step: XLA cost analysis")
  return 0


if __name__ == "__main__":
  sys.exit(main())
