"""Time to build a compressed CIFAR-10: all 60,000 images through one BLS model (issue 17).

  .venv/bin/python benchmarks/compressed_dataset.py                  # the whole set, target < 300 s
  .venv/bin/python benchmarks/compressed_dataset.py --images 2000    # a smoke check

Builds `compressed:cifar10_jpeg75:bls2017:<model>` (train and test splits, real
`.jcx` streams, PSNR / SSIM per image, chunks written and assembled:
`jaxcomp.data.derived.build`) in a fresh temporary cache, so nothing is read from
an earlier build, and prints the wall time, images per second, the
set's summary (payload bpp, PSNR, SSIM) and /proc/loadavg before and after: the
target holds on an idle 2-core machine; a loaded one says so in its load average.
The decoded CIFAR-10 arrays themselves come from the usual cache (decoding the
zip is not part of the measurement; it is done before the clock starts).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

from jaxcomp import config_lib
from jaxcomp import data as data_lib
from jaxcomp.data import compressed, derived
from machine_load import SETTINGS, loadavg  # benchmarks/machine_load.py, beside this file


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="cifar10-bls-0.005", help="a shipped bls2017 model")
  p.add_argument("--images", type=int, default=0,
                 help="code only a seeded subset of this many images per split (0: all 60,000)")
  p.add_argument("--source", default="cifar10_jpeg75")
  args = p.parse_args()

  c = config_lib.base_config().data
  c.name = args.source
  if args.images:
    c.num_train_examples = c.num_eval_examples = args.images
  bases = {s: data_lib.get_dataset(c, s) for s in ("train", "test")}   # decoded before the clock
  spec = compressed.CodecSpec("bls2017", model=args.model)
  name = f"compressed:{args.source}:{spec}"
  summaries = {}
  print(f"loadavg before: {loadavg()}; {SETTINGS}", flush=True)
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:          # a fresh cache: nothing reused
    transform = compressed.transform(spec)
    for split, base in bases.items():
      _, summaries[split], _ = derived.build(pathlib.Path(tmp) / f"bench-{split}", name, base,
                                             transform.fn)
  seconds = time.perf_counter() - start
  print(f"loadavg after:  {loadavg()}")
  n = sum(len(b) for b in bases.values())
  print(f"{name}: {n} images in {seconds:.1f} s ({n / seconds:.0f} images/s); target for "
        f"60,000 images: < 300 s on 2 idle cores; extrapolated: {seconds * 60000 / n:.0f} s")
  for split, s in summaries.items():
    print(f"  {split}: {s['num_examples']} images, {s['bpp']:.3f} bpp payload, "
          f"{s['file_bpp']:.3f} bpp file, PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}")


if __name__ == "__main__":
  main()
