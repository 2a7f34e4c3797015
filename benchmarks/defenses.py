"""Pixel deflection + BayesShrink: jaxcomp (batched, jitted) against the reference style.

  python benchmarks/defenses.py [--batch 256] [--deflections 100] [--window 10] [--repeats 3]

Both sides run the thesis's defense (Ch. 4.8; Table 4.1 settings by default):
K pixel deflections with window r, then `denoise_wavelet(sigma=0.04, wavelet=
'db1', mode='soft', method='BayesShrink', convert2ycbcr=True, rescale_sigma=True)`.

  * reference style (the public pixel-deflection code's structure): per image,
    a Python loop over the K deflections (uniform pixel, uniform offset in
    [-r, r]^2 redrawn until inside the image, copy the pixel from the
    original), then `skimage.restoration.denoise_wavelet(..., channel_axis=-1)`;
  * jaxcomp: `jax.jit(jaxcomp.defenses.pd_rcam_dwt)` on a batch of `--batch`.

Images are crops of the Kodak set (`../shared/data/kodak`), at 32x32 (area-
downsampled 224 crops) and 224x224. Speeds are images/s (medians); the
reference runs on fewer images (`--reference-images`), images/s is per image.

Memory-traffic bound (issue 21): per size, the bytes one image must move at
the least (read the float32 image, write the defended one: 2 x H x W x 3 x 4),
divided by the bandwidth a streaming probe measures in this process (`y = x + 1`
over a 256 MiB float32 array: 512 MiB moved per call, the fastest of 9, before and
after the runs, the higher taken), gives an
images/s bound; the line prints the fraction of it that the jaxcomp defense
reaches. On one CPU device the defense is the C++ kernel of `ops.haar_shrink`
(the line says which ran); `JAXCOMP_CPU_KERNELS=0` measures XLA's formulation.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import random
import statistics
import sys
import time

P = argparse.ArgumentParser(description=__doc__.split("\n")[0])
P.add_argument("--batch", type=int, default=256)
P.add_argument("--deflections", type=int, default=100)
P.add_argument("--window", type=int, default=10)
P.add_argument("--sigma", type=float, default=0.04)
P.add_argument("--repeats", type=int, default=3)
P.add_argument("--reference-images", type=int, default=64)
P.add_argument("--sizes", default="32,224")
P.add_argument("--kodak", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" /
                                      "data" / "kodak"))
ARGS = P.parse_args()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import skimage  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.restoration import denoise_wavelet  # noqa: E402

from jaxcomp.defenses import pd_rcam_dwt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_load import SETTINGS, loadavg  # noqa: E402


def stream_bandwidth(n_floats: int = 1 << 26, repeats: int = 9) -> float:
  """Bytes/s of a jitted `x + 1` over n_floats float32 (reads and writes each byte once):
  the fastest of `repeats` calls after two warm-ups (a bound wants the best the
  machine gives; single calls read 2-14 GB/s here when a fresh output buffer faults)."""
  x = jax.numpy.ones((n_floats,), jax.numpy.float32)
  add = jax.jit(lambda a: a + 1)
  for _ in range(2):
    add(x).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    add(x).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * 4 * n_floats / min(times)


def kodak_crops(n: int, size: int) -> np.ndarray:
  """n [size, size, 3] float32 crops in [0, 1] (224 crops, area-resized when size != 224)."""
  files = sorted(pathlib.Path(ARGS.kodak).glob("*.png"))
  if not files:
    sys.exit(f"no Kodak PNGs in {ARGS.kodak} (set --kodak)")
  rng = np.random.default_rng(0)
  out = []
  for i in range(n):
    im = np.asarray(Image.open(files[i % len(files)]).convert("RGB"))
    top, left = rng.integers(0, im.shape[0] - 224), rng.integers(0, im.shape[1] - 224)
    crop = Image.fromarray(im[top:top + 224, left:left + 224])
    if size != 224:
      crop = crop.resize((size, size), Image.BOX)
    out.append(np.asarray(crop, np.float32) / 255.0)
  return np.stack(out)


def reference_defense(img: np.ndarray, deflections: int, window: int, sigma: float) -> np.ndarray:
  """One image, the reference code's way: a Python loop, then skimage."""
  out = img.copy()
  h, w = img.shape[:2]
  for _ in range(deflections):
    x, y = random.randint(0, h - 1), random.randint(0, w - 1)
    while True:  # redraw the offset until the source lies inside the image
      a, b = random.randint(-window, window), random.randint(-window, window)
      if 0 <= x + a < h and 0 <= y + b < w:
        break
    out[x, y] = img[x + a, y + b]
  return denoise_wavelet(out, sigma=sigma, wavelet="db1", mode="soft", method="BayesShrink",
                         convert2ycbcr=True, channel_axis=-1, rescale_sigma=True)


def main() -> None:
  kw = dict(deflections=ARGS.deflections, window=ARGS.window)
  ours = jax.jit(functools.partial(pd_rcam_dwt, sigma=ARGS.sigma, **kw))
  print(f"pixel deflection (K={ARGS.deflections}, r={ARGS.window}) + BayesShrink (sigma="
        f"{ARGS.sigma}, db1, soft, YCbCr); jax {jax.__version__}, scikit-image "
        f"{skimage.__version__}, {os.cpu_count()} cpus, medians of {ARGS.repeats}; loadavg "
        f"before {loadavg()}; {SETTINGS}")
  bandwidth = stream_bandwidth()
  print(f"  streaming bandwidth (x + 1, 512 MiB moved, fastest of 9): {bandwidth / 1e9:.2f} GB/s")
  results = []
  for size in (int(s) for s in ARGS.sizes.split(",")):
    images = kodak_crops(ARGS.batch, size)
    x = jax.numpy.asarray(images)
    t0 = time.perf_counter()
    compiled = ours.lower(x, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    compiled(x, jax.random.key(0)).block_until_ready()  # warm-up
    kernel = "JaxcompHaarShrink" in compiled.as_text()
    bytes_min = 2 * size * size * 3 * 4
    t_ours, t_ref = [], []
    n_ref = min(ARGS.reference_images, ARGS.batch)
    for r in range(ARGS.repeats):
      t0 = time.perf_counter()
      compiled(x, jax.random.key(r + 1)).block_until_ready()
      t_ours.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      for img in images[:n_ref]:
        reference_defense(img, sigma=ARGS.sigma, **kw)
      t_ref.append(time.perf_counter() - t0)
    ips_ours = ARGS.batch / statistics.median(t_ours)
    ips_ref = n_ref / statistics.median(t_ref)
    path = "C++ kernel" if kernel else "XLA"
    print(f"  {size}x{size}: jaxcomp {ips_ours:9.1f} images/s ({path}, batch {ARGS.batch}, "
          f"compile {compile_s:.1f} s excluded) | reference {ips_ref:7.1f} images/s ({n_ref} "
          f"images) | ratio {ips_ours / ips_ref:.1f}x")
    results.append((size, ips_ours, bytes_min))
  after = stream_bandwidth()
  print(f"  streaming bandwidth after the runs: {after / 1e9:.2f} GB/s")
  bandwidth = max(bandwidth, after)
  for size, ips_ours, bytes_min in results:
    bound = bandwidth / bytes_min
    print(f"  {size}x{size} bound from the least traffic ({bytes_min / 1e6:.2f} MB/image, "
          f"{bandwidth / 1e9:.2f} GB/s): {bound:9.1f} images/s; jaxcomp reaches "
          f"{ips_ours / bound:.2f} of it")
  print(f"loadavg after {loadavg()}")


if __name__ == "__main__":
  sys.exit(main())
