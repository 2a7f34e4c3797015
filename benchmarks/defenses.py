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

Memory-traffic bound (issue 21): the least a defense must move per image is the
float32 image read once and the defended one written once (2 x H x W x 3 x 4 B).
A jitted `x + 1` over the same batch does exactly that and nothing else, so its
images/s is the bound on this machine at this moment (its bytes/s, the streaming
bandwidth, is printed too). It is timed interleaved with the defense (after a
50 ms pause each, medians of `--repeats`): this shared machine's bandwidth
drifts by 2x within minutes, and a probe timed apart carries that drift into
the fraction. On one CPU device the defense is the C++ kernel of
`ops.haar_shrink` (the line says which ran); `JAXCOMP_CPU_KERNELS=0` measures
XLA's formulation.
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
  for size in (int(s) for s in ARGS.sizes.split(",")):
    images = kodak_crops(ARGS.batch, size)
    x = jax.numpy.asarray(images)
    t0 = time.perf_counter()
    compiled = ours.lower(x, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    compiled(x, jax.random.key(0)).block_until_ready()  # warm-up
    kernel = "JaxcompHaarShrink" in compiled.as_text()
    copy = jax.jit(lambda a: a + 1).lower(x).compile()
    copy(x).block_until_ready()
    t_ours, t_copy, t_ref = [], [], []
    n_ref = min(ARGS.reference_images, ARGS.batch)
    for r in range(ARGS.repeats):
      for times, run in ((t_ours, lambda: compiled(x, jax.random.key(r + 1))),
                         (t_copy, lambda: copy(x))):
        time.sleep(0.05)
        t0 = time.perf_counter()
        run().block_until_ready()
        times.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      for img in images[:n_ref]:
        reference_defense(img, sigma=ARGS.sigma, **kw)
      t_ref.append(time.perf_counter() - t0)
    ips_ours = ARGS.batch / statistics.median(t_ours)
    ips_ref = n_ref / statistics.median(t_ref)
    bound = ARGS.batch / statistics.median(t_copy)
    bytes_min = 2 * size * size * 3 * 4
    path = "C++ kernel" if kernel else "XLA"
    print(f"  {size}x{size}: jaxcomp {ips_ours:9.1f} images/s ({path}, batch {ARGS.batch}, "
          f"compile {compile_s:.1f} s excluded) | reference {ips_ref:7.1f} images/s ({n_ref} "
          f"images) | ratio {ips_ours / ips_ref:.1f}x")
    print(f"    least-traffic bound (x + 1 on the batch, {bytes_min / 1e6:.2f} MB/image, "
          f"{bound * bytes_min / 1e9:.2f} GB/s): {bound:9.1f} images/s; jaxcomp reaches "
          f"{ips_ours / bound:.2f} of it")
  print(f"loadavg after {loadavg()}")


if __name__ == "__main__":
  sys.exit(main())
