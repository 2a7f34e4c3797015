"""Kernel-gradient convolutions on CPU: XLA's own, `jaxcomp.ops.conv`'s GEMM forms, its C++ kernel.

  .venv/bin/python benchmarks/conv_gradients.py [--repeats 7] [--skip-layers] [--skip-steps]
      [--workloads resnet20,hyperprior]

Same process, interleaved A B A B windows, medians; `/proc/loadavg` printed
before and after (only the ratios mean anything on a shared machine).

1. Per layer (the convolutions of CIFAR ResNet-20 at batch 128 and of the
   hyperprior at batch 8 of 128^2 crops): time of the forward convolution, of
   XLA's kernel gradient (`jax.vjp` of `lax.conv_general_dilated` w.r.t. the
   kernel: one "b01f_01io->b01f"-style convolution whose window is the output
   image) and of `jaxcomp.ops.conv.conv_general_dilated`'s two CPU forms: the
   GEMM forms (im2col GEMM or chunked per-phase GEMMs) and the C++ kernel
   (`ops.conv_kernel_grad`), each a separately compiled program.
2. Whole steps (`benchmarks/workloads.py`): the ResNet-20 SGD step and the
   hyperprior Adam step, compiled with XLA's kernel term, with the GEMM forms
   and with the C++ kernel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import workloads  # benchmarks/workloads.py, beside this file
from machine_load import SETTINGS, loadavg
from jaxcomp.ops import conv as conv_lib
from jaxcomp.ops import conv_kernel_grad

NHWC = ("NHWC", "HWIO", "NHWC")
# (name, input NHWC, kernel HWIO, strides, padding)
LAYERS = [
    ("resnet20 stem 3->16", (128, 32, 32, 3), (3, 3, 3, 16), 1, ((1, 1), (1, 1))),
    ("resnet20 3x3 16->16 @32", (128, 32, 32, 16), (3, 3, 16, 16), 1, ((1, 1), (1, 1))),
    ("resnet20 3x3 16->32 s2", (128, 32, 32, 16), (3, 3, 16, 32), 2, ((1, 1), (1, 1))),
    ("resnet20 1x1 16->32 s2", (128, 32, 32, 16), (1, 1, 16, 32), 2, ((0, 0), (0, 0))),
    ("resnet20 3x3 32->32 @16", (128, 16, 16, 32), (3, 3, 32, 32), 1, ((1, 1), (1, 1))),
    ("resnet20 3x3 64->64 @8", (128, 8, 8, 64), (3, 3, 64, 64), 1, ((1, 1), (1, 1))),
    ("hyperprior g_a 5x5 3->128 s2", (8, 128, 128, 3), (5, 5, 3, 128), 2, "SAME"),
    ("hyperprior g_a 5x5 128->128 s2", (8, 64, 64, 128), (5, 5, 128, 128), 2, "SAME"),
    # ops.conv_transpose's widest phase of g_s's last 128-channel layer (5x5, stride 2).
    ("hyperprior g_s phase 3x3 128->128 @32", (8, 32, 32, 128), (3, 3, 128, 128), 1,
     ((1, 1), (1, 1))),
]


def _xla_kernel_term(conv, geo, dn, x, dk):
  """`jaxcomp.ops.conv._kernel_term` without the CPU forms: XLA's kernel gradient."""
  del geo
  return conv(x, dk, dimension_numbers=dn)


def _gemm_forms():
  """Within it, `ops.conv` takes its GEMM forms (as where the C++ kernel cannot be built)."""
  return mock.patch.object(conv_kernel_grad, "available", lambda: False)


def _interleave(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
  """Median seconds per call of each run, windows interleaved A B A B."""
  for run in runs.values():  # warm-up
    run()
  times: dict[str, list[float]] = {k: [] for k in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      t = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - t)
  return {k: statistics.median(v) for k, v in times.items()}


def layers(repeats: int) -> None:
  print("per layer: time relative to the forward convolution (lower is better)")
  print(f"  {'layer':40s} {'xla dk':>8s} {'gemm dk':>8s} {'c++ dk':>8s} {'xla/c++':>8s}"
        f" {'gemm/c++':>9s}")
  rng = np.random.default_rng(0)
  for name, x_shape, k_shape, stride, pad in LAYERS:
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    k = jnp.asarray(rng.standard_normal(k_shape, np.float32))
    kw = dict(window_strides=(stride, stride), padding=pad, dimension_numbers=NHWC)
    g = jnp.ones(jax.eval_shape(lambda x, k: lax.conv_general_dilated(x, k, **kw), x, k).shape)
    fwd = jax.jit(lambda x, k: lax.conv_general_dilated(x, k, **kw))
    xla = jax.jit(lambda x, g: jax.vjp(lambda k: lax.conv_general_dilated(x, k, **kw), k)[1](g))
    # A new function per form: jit caches traces by function, so one function would
    # give the second form the first one's trace.
    ours = lambda: lambda x, g: jax.vjp(  # noqa: E731
        lambda k: conv_lib.conv_general_dilated(x, k, **kw), k)[1](g)
    with _gemm_forms():
      gemm = jax.jit(ours()).lower(x, g).compile()
    cpp = jax.jit(ours()).lower(x, g).compile()
    t = _interleave({"fwd": lambda: jax.block_until_ready(fwd(x, k)),
                     "xla": lambda: jax.block_until_ready(xla(x, g)),
                     "gemm": lambda: jax.block_until_ready(gemm(x, g)),
                     "cpp": lambda: jax.block_until_ready(cpp(x, g))}, repeats)
    print(f"  {name:40s} {t['xla'] / t['fwd']:8.2f} {t['gemm'] / t['fwd']:8.2f} "
          f"{t['cpp'] / t['fwd']:8.2f} {t['xla'] / t['cpp']:8.2f} {t['gemm'] / t['cpp']:9.2f}",
          flush=True)


STEPS = {"resnet20": workloads.resnet20_train,             # batch 128
         "hyperprior": lambda: workloads.hyperprior_train(8, 128)}  # N128 M192, 8 x 128^2


def steps(repeats: int, names: list[str]) -> None:
  print("whole steps: time ratios (> 1: the C++ kernel's step is faster)")
  for build in (STEPS[n] for n in names):
    with mock.patch.object(conv_lib, "_kernel_term", _xla_kernel_term):
      xla = build()
    with _gemm_forms():
      gemm = build()
    cpp = build()
    t = _interleave({"xla": xla.step, "gemm": gemm.step, "cpp": cpp.step}, repeats)
    print(f"  {cpp.name:45s} xla/c++ {t['xla'] / t['cpp']:5.2f}  gemm/c++ "
          f"{t['gemm'] / t['cpp']:5.2f}  (ms: xla {1e3 * t['xla']:.1f}, gemm {1e3 * t['gemm']:.1f},"
          f" c++ {1e3 * t['cpp']:.1f}; compile s: {xla.compile_s:.0f} / {gemm.compile_s:.0f} /"
          f" {cpp.compile_s:.0f})", flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--skip-layers", action="store_true")
  p.add_argument("--skip-steps", action="store_true")
  p.add_argument("--workloads", default="resnet20,hyperprior", help="whole steps to time")
  a = p.parse_args()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, loadavg before {loadavg()}; {SETTINGS}")
  if not a.skip_layers:
    layers(a.repeats)
  if not a.skip_steps:
    steps(a.repeats, a.workloads.split(","))
  print(f"loadavg after {loadavg()}")


if __name__ == "__main__":
  sys.exit(main())
