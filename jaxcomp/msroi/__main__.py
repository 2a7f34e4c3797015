"""Command line of MS-ROI semantic JPEG (thesis 001, Ch. 2).

  python -m jaxcomp.msroi compress in.png out.jpg --match-quality 50 [--heatmap heat.png]
  python -m jaxcomp.msroi compress in.png out.jpg --final-quality 55
  python -m jaxcomp.msroi evaluate --images ../shared/data/kodak [--quality 50] \
      [--output report.json] [--figure fig.png]

`compress` writes a standard .jpg: the variable-quality mosaic (levels --q-low ..
--q-high in --levels steps) encoded at Q_f, either given (--final-quality) or
searched so that the file is within --tolerance (1 %) of the size of a standard
JPEG of the image at --match-quality (default 50). `evaluate` prints Table 2.1's
columns (standard JPEG at --quality vs MS-ROI JPEG at equal size; PSNR, PSNR-S,
SSIM, MS-SSIM on luma 4:2:0 and RGB) and writes them as JSON, and Fig. 2.3 as a PNG.

--map network (default) uses MS-ROI's map with its shipped weights
(`jaxcomp.msroi.maps`); --map center a fixed centre-bias map (no network).
Errors print one line on stderr: exit 2 for usage (bad options, inverted quality
range, --levels < 1, input == output), 1 at run time (not an image, unreachable
size). Outputs are written to a temporary file beside them and renamed, so a
failed run leaves no partial file.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pathlib
import sys

import numpy as np
from PIL import Image

from jaxcomp import writers
from jaxcomp.codecs.jpeg_files import encode_jpeg
from jaxcomp.msroi import evaluate as evaluation
from jaxcomp.msroi import variable_jpeg

IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".ppm")


class UsageError(ValueError):
  """A command line that cannot run (exit code 2)."""


class _Parser(argparse.ArgumentParser):
  """argparse with one-line errors (`error: ...`, exit code 2)."""

  def error(self, message: str):
    self.exit(2, f"error: {message}\n")


def _read_image(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _qualities(args) -> tuple[int, ...]:
  try:
    return variable_jpeg.levels(args.q_low, args.q_high, args.levels, form=args.form)
  except ValueError as e:
    raise UsageError(str(e)) from e


def _same_file(a: str, b: str) -> bool:
  pa, pb = pathlib.Path(a), pathlib.Path(b)
  return pa.resolve() == pb.resolve() or (pa.exists() and pb.exists() and pa.samefile(pb))


def _compress(args) -> int:
  qualities = _qualities(args)
  for other in filter(None, (args.output, args.heatmap)):
    if _same_file(args.input, other):
      raise UsageError(f"refusing to overwrite the input {args.input} with {other}")
  if args.heatmap and _same_file(args.output, args.heatmap):
    raise UsageError("--heatmap must differ from the output file")
  image = _read_image(args.input)
  saliency = evaluation.compute_map(evaluation.map_function(args.map), image)
  options = dict(qualities=qualities, pooling=args.pooling)
  if args.final_quality is not None:
    data = variable_jpeg.encode_variable_quality(image, saliency, q_final=args.final_quality,
                                                 **options)
    q_final, note = args.final_quality, ""
  else:
    target = len(encode_jpeg(image, quality=args.match_quality))
    data, q_final = variable_jpeg.match_size(image, saliency, target, tolerance=args.tolerance,
                                             **options)
    note = f", standard JPEG q{args.match_quality}: {target} bytes"
  if args.heatmap:
    writers.write_atomic(args.heatmap, _png(np.round(saliency * 255).astype(np.uint8)))
  writers.write_atomic(args.output, data)
  print(f"wrote {args.output}: {len(data)} bytes, levels {list(qualities)}, Q_f {q_final}{note}")
  return 0


def _fmt(v) -> str:
  return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _evaluate(args) -> int:
  qualities = _qualities(args)
  folder = pathlib.Path(args.images)
  if not folder.is_dir():
    raise UsageError(f"--images {folder} is not a folder")
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:args.limit]
  if not files:
    raise FileNotFoundError(f"no lossless images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
  report, examples = evaluation.evaluate(
      [_read_image(str(f)) for f in files], [f.name for f in files],
      evaluation.map_function(args.map), quality_std=args.quality, qualities=qualities,
      tolerance=args.tolerance, threshold=args.threshold, pooling=args.pooling,
      figure_images=args.figure_images if args.figure else 0)
  report["settings"].update(images=str(folder), map=args.map)
  mean = report["mean"]
  print(f"{len(files)} images, standard JPEG q{args.quality} vs MS-ROI levels {list(qualities)} "
        f"at equal size (mean):")
  print(f"{'':10s} {'space':5s} {'bytes':>9s} {'PSNR-S':>8s} {'PSNR':>8s} {'SSIM':>7s} "
        f"{'MS-SSIM':>7s}")
  for space in evaluation.SPACES[::-1]:
    for name in ("standard", "msroi"):
      r = mean[name]
      print(f"{name:10s} {space:5s} {r['bytes']:9.0f} {_fmt(r[space]['psnr_s']):>8s} "
            f"{_fmt(r[space]['psnr']):>8s} {_fmt(r[space]['ssim']):>7s} "
            f"{_fmt(r[space]['ms_ssim']):>7s}")
  if args.figure:
    title = "MS-ROI map" if args.map == "network" else f"{args.map} map (not MS-ROI)"
    writers.write_atomic(args.figure,
                         evaluation.figure(examples, rows=report["images"], map_title=title))
  if args.output:
    writers.write_atomic(args.output, json.dumps(report, indent=2).encode())
  return 0


def _add_common(p: argparse.ArgumentParser) -> None:
  p.add_argument("--map", default="network", choices=evaluation.MAPS,
                 help="saliency map: the MS-ROI network (shipped weights) or a centre bias")
  p.add_argument("--q-low", type=int, default=30, help="Q_l, the lowest level's quality")
  p.add_argument("--q-high", type=int, default=70, help="Q_h, the highest level's quality")
  p.add_argument("--levels", type=int, default=5, help="k, the number of levels")
  p.add_argument("--form", default="experiments", choices=variable_jpeg.FORMS,
                 help="levels as in the experiments (30..70 by 10) or Eq. 2.7 as printed")
  p.add_argument("--pooling", default="mean", choices=variable_jpeg.POOLINGS,
                 help="saliency pooling per 8x8 block")
  p.add_argument("--tolerance", type=float, default=0.01,
                 help="relative size tolerance of the match (default 0.01)")


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m jaxcomp.msroi",
              description="MS-ROI semantic JPEG: variable quality from a saliency map.")
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("compress", help="image -> semantic .jpg")
  c.add_argument("input")
  c.add_argument("output")
  q = c.add_mutually_exclusive_group()
  q.add_argument("--match-quality", type=int, default=50,
                 help="match the size of a standard JPEG at this quality (default 50)")
  q.add_argument("--final-quality", type=int, help="Q_f, instead of a size match")
  c.add_argument("--heatmap", help="also write the saliency map as an 8-bit grey PNG")
  _add_common(c)
  e = sub.add_parser("evaluate", help="Table 2.1 on a folder of lossless images")
  e.add_argument("--images", required=True, help="folder of lossless images (e.g. Kodak)")
  e.add_argument("--quality", type=int, default=50, help="standard JPEG quality (default 50)")
  e.add_argument("--output", help="JSON report")
  e.add_argument("--figure", help="Fig. 2.3-like PNG")
  e.add_argument("--figure-images", type=int, default=5, help="images in the figure (default 5)")
  e.add_argument("--limit", type=int, help="only the first N images (sorted by name)")
  e.add_argument("--threshold", type=float, default=evaluation.SALIENT_THRESHOLD,
                 help="saliency >= threshold is the PSNR-S region (default 0.5)")
  _add_common(e)
  return p


_COMMANDS = {"compress": _compress, "evaluate": _evaluate}


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    for name in ("match_quality", "final_quality", "quality"):
      value = getattr(args, name, None)
      if value is not None and not 1 <= value <= 100:
        raise UsageError(f"--{name.replace('_', '-')} must lie in 1..100, got {value}")
    if args.tolerance < 0:
      raise UsageError(f"--tolerance must be >= 0, got {args.tolerance}")
    if getattr(args, "limit", None) is not None and args.limit < 1:
      raise UsageError(f"--limit must be >= 1, got {args.limit}")
    return _COMMANDS[args.command](args)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (ValueError, OSError) as e:        # PIL's "cannot identify image" is an OSError
    message = " ".join(str(e).split()) or type(e).__name__
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
