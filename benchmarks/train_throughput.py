"""ResNet-20 training throughput: jaxcomp's train step against the same network in PyTorch.

  pip install -r benchmarks/requirements-torch.txt
  python benchmarks/train_throughput.py [--batch 128] [--steps 10] [--repeats 5]

Both sides train the same CIFAR ResNet-20 (16/32/64 channels, 1x1 projection
shortcuts, BatchNorm, SGD momentum 0.9, weight decay 5e-4, cross-entropy) on
the same uint8 batches of 32x32x3 images, in this one process, with the same
number of CPU threads (2 unless --threads). Compilation (JAX) and the first
steps (both) are warm-up, reported apart. Each side runs `--repeats` timed
windows of `--steps` steps, interleaved A B A B so machine noise hits both;
the medians and their ratio are printed. Only the ratio means anything on a
shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _parse() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=10, help="steps per timed window")
  p.add_argument("--repeats", type=int, default=5, help="timed windows per side")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  return p.parse_args()


ARGS = _parse()
# Thread limits must be set before either framework starts its pools.
# XLA's CPU client sizes its thread pool by the visible cores (2 here); torch is
# told explicitly below.
os.environ.setdefault("XLA_FLAGS", "")
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_resnet  # noqa: E402  (benchmarks/torch_resnet.py, beside this file)
import workloads  # noqa: E402  (benchmarks/workloads.py: the jaxcomp side)
from machine_load import SETTINGS, loadavg  # noqa: E402

torch.set_num_threads(ARGS.threads)


# ----------------------------------------------------------------- PyTorch side
def torch_runner(images: np.ndarray, labels: np.ndarray):
  model = torch_resnet.ResNet20().to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  x_u8 = torch.from_numpy(images)  # NHWC uint8, as the data pipeline yields
  y = torch.from_numpy(labels.astype(np.int64))

  def run(steps: int) -> float:
    model.train()
    for _ in range(steps):
      x = x_u8.permute(0, 3, 1, 2).float().div(255).contiguous(
          memory_format=torch.channels_last)
      opt.zero_grad(set_to_none=True)
      loss = F.cross_entropy(model(x), y)
      loss.backward()
      opt.step()
    return float(loss.detach())
  return run


# --------------------------------------------------------------------- JAX side
def jax_runner():
  """`workloads.resnet20_train`: the same seeded uint8 batch, `train.train_step`."""
  dtype = jnp.bfloat16 if ARGS.dtype == "bfloat16" else jnp.float32
  work = workloads.resnet20_train(ARGS.batch, dtype=dtype, seed=0)

  def run(steps: int) -> None:
    for _ in range(steps):
      work.step()
  return run, work.compile_s


def main() -> None:
  load_before = loadavg()
  rng = np.random.default_rng(0)  # the batch of workloads.resnet20_train(seed=0)
  images = rng.integers(0, 256, (ARGS.batch, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, ARGS.batch).astype(np.int32)
  jrun, compile_s = jax_runner()
  trun = torch_runner(images, labels)
  jrun(2)  # warm-up
  trun(2)
  times = {"jaxcomp": [], "pytorch": []}
  for _ in range(ARGS.repeats):
    for name, run in (("jaxcomp", jrun), ("pytorch", trun)):
      t0 = time.perf_counter()
      run(ARGS.steps)
      times[name].append(time.perf_counter() - t0)
  ips = {k: ARGS.batch * ARGS.steps / statistics.median(v) for k, v in times.items()}
  print(f"ResNet-20 training, batch {ARGS.batch} of 32x32x3, {ARGS.threads} threads, "
        f"{ARGS.repeats} windows of {ARGS.steps} steps (medians)")
  print(f"  loadavg before {load_before}; {SETTINGS}")
  print(f"  jax {jax.__version__} ({ARGS.dtype}), torch {torch.__version__}, "
        f"{os.cpu_count()} cpus; XLA_FLAGS='{os.environ['XLA_FLAGS'].strip()}'")
  print(f"  jaxcomp compile: {compile_s:.1f} s (excluded)")
  for k, v in ips.items():
    print(f"  {k:8s} {v:8.1f} images/s   (min {ARGS.batch * ARGS.steps / max(times[k]):.1f},"
          f" max {ARGS.batch * ARGS.steps / min(times[k]):.1f})")
  print(f"  ratio jaxcomp / pytorch = {ips['jaxcomp'] / ips['pytorch']:.2f}")
  print(f"  loadavg after {loadavg()}")


if __name__ == "__main__":
  sys.exit(main())
