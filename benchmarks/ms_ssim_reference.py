"""Golden MS-SSIM values from pytorch-msssim 1.0 for tests/metrics_test.py.

Runs in its own environment, outside the repository (torch is not a jaxcomp dependency):

  python3 -m venv /tmp/venv-msssim && /tmp/venv-msssim/bin/pip install \
      torch==2.13.0 pytorch-msssim==1.0.0 pillow numpy
  /tmp/venv-msssim/bin/python benchmarks/ms_ssim_reference.py

(made with Python 3.11.7, torch 2.13.0+cpu, pytorch-msssim 1.0.0, Pillow 13.0.0 with
libjpeg-turbo 6.2 ABI, numpy 2.4.6). Each case is a Kodak image (or a crop of it with
odd sides, short side above pytorch-msssim's 160-pixel limit) against its Pillow JPEG
(4:2:0, standard tables) at quality 10 or 50. The file stores the case identifiers,
the SHA-256 of the decoded JPEG pixels (the test recomputes the JPEG with Pillow and
checks it got the same pixels) and `pytorch_msssim.ms_ssim(x, y, data_range=255,
size_average=False)` on float64 NCHW tensors of the uint8 values.
"""

from __future__ import annotations

import hashlib
import io
from importlib import metadata
import pathlib
import sys

import numpy as np
import PIL
import pytorch_msssim
import torch
from PIL import Image, features

ROOT = pathlib.Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
OUT = ROOT / "tests" / "data" / "ms_ssim_reference.npz"

# (image, crop (top, left, height, width) or None for the whole image, JPEG quality)
CASES = (("kodim01.png", None, 10), ("kodim01.png", None, 50),
         ("kodim23.png", (100, 150, 161, 203), 10),     # odd at every scale: 161 -> 81 -> ... -> 11
         ("kodim12.png", (40, 60, 255, 333), 50))       # 255x333 -> 128x167 -> 64x84 -> ...


def case_pair(name: str, crop, quality: int) -> tuple[np.ndarray, np.ndarray]:
  """The uint8 original (cropped) and its Pillow JPEG (4:2:0) decode, [H, W, 3] each."""
  x = np.asarray(Image.open(KODAK / name).convert("RGB"))
  if crop is not None:
    top, left, h, w = crop
    x = np.ascontiguousarray(x[top:top + h, left:left + w])
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, "JPEG", quality=quality, subsampling=2)
  return x, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def main() -> int:
  values, digests = [], []
  for name, crop, quality in CASES:
    x, y = case_pair(name, crop, quality)
    t = [torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None] for a in (x, y)]
    values.append(float(pytorch_msssim.ms_ssim(*t, data_range=255, size_average=False)[0]))
    digests.append(hashlib.sha256(y.tobytes()).hexdigest())
    print(f"{name} {crop} q{quality}: {x.shape[0]}x{x.shape[1]} MS-SSIM {values[-1]:.6f}")
  crops = np.asarray([c if c is not None else (0, 0, 0, 0) for _, c, _ in CASES], np.int64)
  versions = (f"python {sys.version.split()[0]}, torch {torch.__version__}, pytorch-msssim "
              f"{metadata.version('pytorch-msssim')}, Pillow {PIL.__version__} "
              f"(libjpeg {features.version('jpg')}), numpy {np.__version__}")
  np.savez(OUT, image=np.asarray([c[0] for c in CASES]), crop=crops,
           quality=np.asarray([c[2] for c in CASES], np.int64), ms_ssim=np.asarray(values),
           decoded_sha256=np.asarray(digests), versions=np.asarray(versions))
  print(f"wrote {OUT} ({versions})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
