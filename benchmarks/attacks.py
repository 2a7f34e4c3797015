"""PGD-20 throughput: jaxcomp's jit-compiled PGD against torchattacks on the same ResNet-20.

  pip install -r benchmarks/requirements-torch.txt   # torch, torchattacks
  python benchmarks/attacks.py [--batch 128] [--repeats 5] [--threads 2]

Both sides attack the CIFAR ResNet-20 (jaxcomp "resnet20" in `ImageClassifier`;
`torch_resnet.ResNet20` in PyTorch, eval mode, random initialisation: speed does
not depend on the weights) with L-inf PGD, eps 8/255, step 2/255, 20 steps,
random start, cross-entropy, on the same batch of 32x32x3 images in [0, 1]
(the jaxcomp side is `workloads.pgd20`, benchmarks/workloads.py),
in this one process with the same number of threads. Each side runs
`--repeats` timed attacks, interleaved A B A B so that machine noise hits
both; JAX's compilation is timed apart. Medians and their ratio are printed;
only the ratio means much on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

P = argparse.ArgumentParser(description=__doc__.split("\n")[0])
P.add_argument("--batch", type=int, default=128)
P.add_argument("--repeats", type=int, default=5)
P.add_argument("--threads", type=int, default=2)
ARGS = P.parse_args()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)  # before either framework starts its pools

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchattacks  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402  (benchmarks/workloads.py: the jaxcomp side)
from machine_load import SETTINGS, loadavg  # noqa: E402
from torch_resnet import ResNet20  # noqa: E402

torch.set_num_threads(ARGS.threads)
EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 20


def jax_runner():
  """`workloads.pgd20`: the same seeded batch, PGD compiled once."""
  work = workloads.pgd20(ARGS.batch, seed=0)
  return (lambda seed: work.step()), work.compile_s


def torch_runner(images: np.ndarray, labels: np.ndarray):
  model = ResNet20().eval()
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(labels.astype(np.int64))
  attack = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)

  def run(seed: int) -> float:
    torch.manual_seed(seed)
    adv = attack(x, y)
    with torch.no_grad():
      return float((model(adv).argmax(1) != y).float().mean())
  return run


def main() -> None:
  load_before = loadavg()
  rng = np.random.default_rng(0)  # the batch of workloads.pgd20(seed=0)
  images = rng.random((ARGS.batch, 32, 32, 3), dtype=np.float32)
  labels = rng.integers(0, 10, ARGS.batch).astype(np.int32)
  jrun, compile_s = jax_runner()
  jrun(0)  # warm-up
  trun = torch_runner(images, labels)
  trun(0)  # warm-up
  times = {"jaxcomp": [], "torchattacks": []}
  for r in range(ARGS.repeats):
    for name, run in (("jaxcomp", jrun), ("torchattacks", trun)):
      t0 = time.perf_counter()
      run(r + 1)
      times[name].append(time.perf_counter() - t0)
  ips = {k: ARGS.batch / statistics.median(v) for k, v in times.items()}
  print(f"PGD-20 (L-inf 8/255, step 2/255, random start) on ResNet-20, batch {ARGS.batch} of "
        f"32x32x3, {ARGS.threads} threads, median of {ARGS.repeats}")
  print(f"  jax {jax.__version__}, torch {torch.__version__}, torchattacks "
        f"{torchattacks.__version__}, {os.cpu_count()} cpus")
  print(f"  loadavg before {load_before}, after {loadavg()}; {SETTINGS}")
  print(f"  jaxcomp compile: {compile_s:.1f} s (excluded)")
  for k, v in ips.items():
    print(f"  {k:12s} {v:8.1f} images/s")
  print(f"  ratio jaxcomp / torchattacks = {ips['jaxcomp'] / ips['torchattacks']:.2f}")


if __name__ == "__main__":
  sys.exit(main())
