"""Learned-codec speed: jaxcomp's hyperprior against CompressAI's `ScaleHyperprior`.

  python3.11 -m venv /work/venv-compressai && \
      /work/venv-compressai/bin/pip install -r benchmarks/requirements-compressai.txt
  .venv/bin/python benchmarks/codec.py --compressai-python /work/venv-compressai/bin/python

Both sides: bmshj2018-hyperprior with the same N, M (default 128, 192), Adam,
`R + lambda 255^2 MSE` plus the auxiliary loss, batches of `--batch` random
`--crop`-pixel crops; then compress and decompress one Kodak image (real
bitstreams: constriction here, CompressAI's rANS there) with an untrained model
of that size (speed does not depend on training). CompressAI needs numpy < 2,
so it runs in its own environment as a subprocess of this script (`--worker`),
between two jaxcomp measurements (A B A), each with `--threads` CPU threads;
medians and their ratios are printed as JSON with the load averages before and
after. Only ratios mean anything on a shared machine. Without
`--compressai-python` only jaxcomp is measured. The jaxcomp train step is
`workloads.hyperprior_train` (benchmarks/workloads.py), shared with the
accelerator suite.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

KODAK = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak" / \
    "kodim01.png"


def _parse() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--num-filters", type=int, default=128)
  p.add_argument("--num-latent", type=int, default=192)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--crop", type=int, default=128)
  p.add_argument("--steps", type=int, default=5, help="train steps per timed window")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--image", default=str(KODAK))
  p.add_argument("--compressai-python", default="")
  p.add_argument("--worker", choices=["compressai"], help=argparse.SUPPRESS)
  return p.parse_args()


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _image(path: str):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.open(path).convert("RGB"))


def measure_jaxcomp(a) -> dict[str, float]:
  """Train-step Mpix/s (`workloads.hyperprior_train`) and compress / decompress seconds."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  import workloads  # pylint: disable=g-import-not-at-top  (benchmarks/workloads.py)
  from jaxcomp.codecs import compression, learned  # pylint: disable=g-import-not-at-top

  work = workloads.hyperprior_train(a.batch, a.crop, num_filters=a.num_filters,
                                    num_latent=a.num_latent)

  def window():
    for _ in range(a.steps):
      work.step()

  window()                                   # warm-up
  step_s = _median_time(window, a.repeats) / a.steps
  model = learned.build("hyperprior", num_filters=a.num_filters, num_latent=a.num_latent)
  x = np.zeros((1, 64, 64, 3), np.float32)
  params = jax.jit(lambda k: model.init(k, x, mode="dequantize"))(
      jax.random.key(0, impl="rbg"))["params"]
  image = _image(a.image)
  tables = compression.coding_tables(model, params)
  data = compression.compress(model, params, image, tables=tables)       # warm-up
  compression.decompress(model, params, data, tables=tables)
  enc = _median_time(lambda: compression.compress(model, params, image, tables=tables), a.repeats)
  dec = _median_time(lambda: compression.decompress(model, params, data, tables=tables), a.repeats)
  return {"train_step_s": step_s, "train_mpix_s": work.items / step_s / 1e6,
          "compile_s": work.compile_s, "compress_s": enc, "decompress_s": dec,
          "bytes": len(data)}


def measure_compressai(a) -> dict[str, float]:
  """The same measurements with CompressAI (run in its own environment)."""
  import math  # pylint: disable=g-import-not-at-top

  import torch  # pylint: disable=g-import-not-at-top
  from compressai.models import ScaleHyperprior  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  net = ScaleHyperprior(a.num_filters, a.num_latent)
  main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
  aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
  opt, aux_opt = torch.optim.Adam(main, 1e-4), torch.optim.Adam(aux, 1e-3)
  x = torch.rand(a.batch, 3, a.crop, a.crop)

  def window():
    for _ in range(a.steps):
      opt.zero_grad()
      aux_opt.zero_grad()
      out = net(x)
      bpp = sum(torch.log(l).sum() for l in out["likelihoods"].values()) / (
          -math.log(2) * a.batch * a.crop ** 2)
      loss = bpp + 0.0067 * 255 ** 2 * torch.mean((out["x_hat"] - x) ** 2)
      loss.backward()
      opt.step()
      net.aux_loss().backward()
      aux_opt.step()

  window()
  step_s = _median_time(window, a.repeats) / a.steps
  net.update(force=True)
  net.eval()
  image = torch.from_numpy(_image(a.image).copy()).permute(2, 0, 1)[None].float() / 255
  with torch.no_grad():
    enc_out = net.compress(image)
    net.decompress(enc_out["strings"], enc_out["shape"])
    enc = _median_time(lambda: net.compress(image), a.repeats)
    dec = _median_time(lambda: net.decompress(enc_out["strings"], enc_out["shape"]), a.repeats)
  nbytes = sum(len(s[0]) for s in enc_out["strings"])
  return {"train_step_s": step_s, "train_mpix_s": a.batch * a.crop ** 2 / step_s / 1e6,
          "compress_s": enc, "decompress_s": dec, "bytes": nbytes}


def main() -> None:
  a = _parse()
  os.environ["OMP_NUM_THREADS"] = str(a.threads)
  if a.worker == "compressai":
    print(json.dumps(measure_compressai(a)))
    return
  from machine_load import SETTINGS, KEPT, loadavg  # pylint: disable=g-import-not-at-top
  from jaxcomp import cpu_allocator  # pylint: disable=g-import-not-at-top
  load_before = loadavg()
  first = measure_jaxcomp(a)
  report = {"setting": {k: getattr(a, k) for k in ("num_filters", "num_latent", "batch", "crop",
                                                   "steps", "repeats", "threads", "image")}}
  if a.compressai_python:
    argv = [a.compressai_python, __file__, "--worker", "compressai"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in report["setting"].items()]
    env = dict(os.environ)
    if KEPT:   # the same allocator setting on the CompressAI side (glibc's env names)
      env.update(MALLOC_MMAP_THRESHOLD_=str(cpu_allocator.MMAP_THRESHOLD),
                 MALLOC_TRIM_THRESHOLD_=str(cpu_allocator.TRIM_THRESHOLD),
                 MALLOC_ARENA_MAX=str(cpu_allocator.ARENA_MAX))
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    report["compressai"] = json.loads(out.strip().splitlines()[-1])
  second = measure_jaxcomp(a)
  report["jaxcomp"] = {k: statistics.median([first[k], second[k]]) for k in first}
  report["loadavg"] = {"before": load_before, "after": loadavg()}
  report["settings"] = SETTINGS
  if "compressai" in report:
    j, c = report["jaxcomp"], report["compressai"]
    report["ratios_jaxcomp_over_compressai"] = {
        "train_mpix_s": j["train_mpix_s"] / c["train_mpix_s"],
        "compress_s": j["compress_s"] / c["compress_s"],
        "decompress_s": j["decompress_s"] / c["decompress_s"]}
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  sys.exit(main())
