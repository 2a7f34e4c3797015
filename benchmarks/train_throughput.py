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
import optax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_resnet  # noqa: E402  (benchmarks/torch_resnet.py, beside this file)

from jaxcomp import models  # noqa: E402
from jaxcomp import train  # noqa: E402
from jaxcomp.models.classifier import ImageClassifier  # noqa: E402
from jaxcomp.tasks.classification import cross_entropy, to_unit_float  # noqa: E402

torch.set_num_threads(ARGS.threads)
MEAN, STD = torch_resnet.CIFAR_MEAN, torch_resnet.CIFAR_STD


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
def jax_runner(images: np.ndarray, labels: np.ndarray):
  dtype = jnp.bfloat16 if ARGS.dtype == "bfloat16" else jnp.float32
  model = ImageClassifier(backbone=models.MODELS.get("resnet20")(num_classes=10, dtype=dtype),
                          mean=MEAN, std=STD)
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  variables = dict(model.init(jax.random.PRNGKey(0), to_unit_float(batch["image"][:1])))
  params = variables.pop("params")
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))

  def loss_fn(v, b, rng, *, train):
    del rng
    (logits, _), updates = model.apply(v, to_unit_float(b["image"]), train=train,
                                       mutable=["batch_stats"])
    loss = cross_entropy(logits, b["label"], num_classes=10).mean()
    return loss, ({"loss": loss}, updates)

  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, collections=variables,
                           opt_state=tx.init(params), ema_params={}, rng=jax.random.PRNGKey(1))
  step = jax.jit(lambda s, b: train.train_step(s, b, loss_fn=loss_fn, tx=tx,
                                               schedule=lambda _: 0.1), donate_argnums=0)
  t0 = time.perf_counter()
  step = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def run(steps: int) -> float:
    s = holder["state"]
    for _ in range(steps):
      s, metrics = step(s, batch)
    holder["state"] = s
    return float(metrics["loss"])
  return run, compile_s


def main() -> None:
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (ARGS.batch, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, ARGS.batch).astype(np.int32)
  jrun, compile_s = jax_runner(images, labels)
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
  print(f"  jax {jax.__version__} ({ARGS.dtype}), torch {torch.__version__}, "
        f"{os.cpu_count()} cpus; XLA_FLAGS='{os.environ['XLA_FLAGS'].strip()}'")
  print(f"  jaxcomp compile: {compile_s:.1f} s (excluded)")
  for k, v in ips.items():
    print(f"  {k:8s} {v:8.1f} images/s   (min {ARGS.batch * ARGS.steps / max(times[k]):.1f},"
          f" max {ARGS.batch * ARGS.steps / min(times[k]):.1f})")
  print(f"  ratio jaxcomp / pytorch = {ips['jaxcomp'] / ips['pytorch']:.2f}")


if __name__ == "__main__":
  sys.exit(main())
