"""Forward+backward throughput: jaxcomp's JpegLayer against kornia's differentiable JPEG.

  pip install -r benchmarks/requirements-torch.txt   # torch 2.13 (CPU), kornia 0.9
  python benchmarks/jpeg_layer.py [--sizes 256x32x32,16x224x224] [--repeats 7] [--threads 2]

(Here: `PYTHONPATH=.:.venv/lib/python3.11/site-packages /work/venv-torch/bin/python
benchmarks/jpeg_layer.py`, the torch venv's python with jaxcomp's packages on the path.)

Both sides take the same batch of RGB images in [0, 1] (uniform noise, seeded: the
cost does not depend on the content) and run one forward and one backward pass of
`sum(out**2)`, in this one process with `--threads` threads each:
- jaxcomp: `JpegLayer()` (one round, quality-50 tables, soft quantizer, alpha 5),
  jit-compiled, gradients with respect to the images and the 128 table entries.
- kornia: `kornia.enhance.jpeg_codec_differentiable(x, quality=50)` (4:2:0, its
  differentiable rounding), gradients with respect to the images and the quality.
The timed calls alternate A B A B so that machine noise hits both; JAX's compile
time is printed apart; medians and their ratio are printed. A second jaxcomp line
times the training case (gradients with respect to the tables only).

The jaxcomp side is `workloads.jpeg_layer` (benchmarks/workloads.py), shared
with the accelerator suite. The load averages before and after are printed:
figures for the README come from an idle machine only.

Each timed call follows a pause (`--gap`, 50 ms) so that the other side's threads
are idle when it starts: torch's libgomp threads spin for milliseconds after each
kornia call by default, on the same two cores. Back to back (`--gap 0`), 2026-12-01
00:52-00:56 UTC, 256x32x32: jaxcomp 6.94-7.40 ms right after kornia (73-74 ms);
with torch's threads told to sleep instead (`OMP_WAIT_POLICY=PASSIVE`) 3.18-5.96 ms,
kornia 67-105 ms; with the pause and the default policy jaxcomp 6.36-6.77 ms,
kornia 66-84 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

P = argparse.ArgumentParser(description=__doc__.split("\n")[0])
P.add_argument("--sizes", default="256x32x32,16x224x224", help="BxHxW,...")
P.add_argument("--repeats", type=int, default=7)
P.add_argument("--threads", type=int, default=2)
P.add_argument("--no-kornia", action="store_true", help="time jaxcomp only")
P.add_argument("--gap", type=float, default=0.05,
               help="seconds of pause before each timed call (module docstring)")
ARGS = P.parse_args()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)   # before either framework starts
if hasattr(os, "sched_setaffinity"):                 # XLA:CPU sizes its pool by affinity
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:ARGS.threads])

import jax  # noqa: E402
import numpy as np  # noqa: E402

import workloads  # noqa: E402  (benchmarks/workloads.py, beside this file)
from machine_load import SETTINGS, loadavg  # noqa: E402


def jax_step(batch: int, size: int, wrt_images: bool):
  """`workloads.jpeg_layer`: a compiled fwd+bwd step and its compile time (s)."""
  work = workloads.jpeg_layer(batch, size, wrt_images=wrt_images, seed=0)
  return work.step, work.compile_s


def kornia_step(images: np.ndarray):
  import kornia  # noqa: PLC0415 (optional dependency)
  import torch  # noqa: PLC0415
  torch.set_num_threads(ARGS.threads)
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  quality = torch.tensor([50.0])

  def run():
    xi = x.clone().requires_grad_(True)
    qi = quality.clone().requires_grad_(True)
    out = kornia.enhance.jpeg_codec_differentiable(xi, qi)
    (out ** 2).sum().backward()
  return run


def timed(run) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def main() -> None:
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {ARGS.threads} threads, "
        f"{ARGS.gap * 1e3:.0f} ms before each timed call, loadavg before {loadavg()}; "
        f"{SETTINGS}")
  for size in ARGS.sizes.split(","):
    b, h, w = (int(v) for v in size.split("x"))
    if h != w:
      raise ValueError(f"--sizes: square images only (workloads.jpeg_layer), got {size}")
    # The images of workloads.jpeg_layer(seed=0).
    images = np.random.default_rng(0).random((b, h, w, 3), dtype=np.float32)
    mpix = b * h * w / 1e6
    runners = {}
    runners["jaxcomp (grad images + tables)"], compile_s = jax_step(b, h, True)
    runners["jaxcomp (grad tables only)"], compile_train_s = jax_step(b, h, False)
    if not ARGS.no_kornia:
      runners["kornia (grad images + quality)"] = kornia_step(images)
    for run in runners.values():                      # warm-up, not timed
      run()
    times = {name: [] for name in runners}
    for _ in range(ARGS.repeats):
      for name, run in runners.items():
        time.sleep(ARGS.gap)                          # the other side's threads go idle
        times[name].append(timed(run))
    print(f"\n{b}x{h}x{w} ({mpix:.3f} Mpix), compile {compile_s:.2f} s "
          f"(tables only: {compile_train_s:.2f} s), median of {ARGS.repeats}:")
    speed = {}
    for name, ts in times.items():
      med = statistics.median(ts)
      speed[name] = mpix / med
      print(f"  {name:34s} {med * 1e3:9.2f} ms  {speed[name]:7.2f} Mpix/s")
    if not ARGS.no_kornia:
      ref = speed["kornia (grad images + quality)"]
      for name in runners:
        if name.startswith("jaxcomp"):
          print(f"  ratio {name} / kornia: {speed[name] / ref:.1f}x")
  print(f"loadavg after {loadavg()}")


if __name__ == "__main__":
  main()
