"""Command line of jaxcomp's learned codecs.

  python -m jaxcomp.codecs list [--long]
  python -m jaxcomp.codecs compress --model hyperprior-q3 in.png out.jcx
  python -m jaxcomp.codecs compress --checkpoint WORKDIR in.png out.jcx
  python -m jaxcomp.codecs decompress out.jcx back.png [--checkpoint WORKDIR]
  python -m jaxcomp.codecs evaluate --model hyperprior-q1 --model hyperprior-q2 \
      --images ../shared/data/kodak --output rd.json --plot rd.png
  python -m jaxcomp.codecs export --checkpoint WORKDIR weights.npz [--step S] [--dtype float32]

`decompress` reads the model from the stream header; a stream made from a
checkpoint needs `--checkpoint`. Images (and streams) of more than
`--max-pixels` pixels are refused (default `compression.DEFAULT_MAX_PIXELS`).
An error prints one line on stderr and exits 2 for a usage error (bad
arguments, the input file given as the output) or 1 for anything else; the
traceback only with `--debug`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import sys
import traceback
import warnings

import numpy as np
from PIL import Image

from jaxcomp import writers
from jaxcomp.codecs import bitstream, compression, learned, pretrained
from jaxcomp.evaluators import rate_distortion
from jaxcomp.entropy import factorized

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class UsageError(ValueError):
  """A command line that cannot be right (exit status 2)."""


def _to_rgb(im: Image.Image) -> np.ndarray:
  """uint8 `(H, W, 3)` of a Pillow image of any mode, or ValueError naming the mode.

  16-bit grey (`I;16*`, and `I` with values in 0..65535) is scaled to 8 bits
  with rounding, `round(v * 255 / 65535)` (Pillow's own conversion saturates
  it); 32-bit float (`F`) is refused; other modes go through Pillow's
  `convert("RGB")` (an alpha channel is dropped).
  """
  if im.mode in _SIXTEEN_BIT:
    v = np.asarray(im)
    if v.size and (v.min() < 0 or v.max() > 65535):
      raise ValueError(f"{im.mode} image with values in [{v.min()}, {v.max()}], outside the "
                       "16-bit range 0..65535")
    grey = ((v.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if im.mode == "F":
    raise ValueError("32-bit float images (mode F) are not supported: convert to 8 or 16 bits")
  return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def _read_image(path: str, max_pixels: int = compression.DEFAULT_MAX_PIXELS) -> np.ndarray:
  """An image file as uint8 RGB, refusing more than `max_pixels` before decoding it."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # our limit applies
    try:
      with Image.open(path) as im:
        try:
          compression.check_size(im.height, im.width, max_pixels)
        except ValueError as e:
          raise ValueError(f"{path}: {e}; raise --max-pixels to accept it") from None
        return _to_rgb(im)
    except Image.DecompressionBombError as e:
      raise ValueError(f"{path}: {e}") from None


def _check_distinct(source: str, target: str) -> None:
  """UsageError if writing `target` would overwrite `source`."""
  same = pathlib.Path(source).resolve() == pathlib.Path(target).resolve()
  if not same and os.path.exists(source) and os.path.exists(target):
    same = os.path.samefile(source, target)
  if same:
    raise UsageError(f"the output {target} is the input file: choose another output")


def _save_image(image: np.ndarray, path: str) -> None:
  """Writes `image` in the format of `path`'s extension, atomically."""
  ext = pathlib.Path(path).suffix.lower()
  fmt = Image.registered_extensions().get(ext)
  if fmt is None:
    raise UsageError(f"cannot tell the image format of {path} from its extension {ext!r} "
                     "(use e.g. .png)")
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=fmt)
  writers.write_atomic(path, buf.getvalue())


def _load(args) -> tuple:
  """`(model, params, name)` from --model or --checkpoint."""
  if getattr(args, "checkpoint", None):
    model, params, _ = pretrained.load_checkpoint(args.checkpoint)
    return model, params, "checkpoint"
  model, params, _ = pretrained.load(args.model)
  return model, params, args.model


def _describe(metadata: dict) -> str:
  """One line on what a shipped model is and was trained on, from its metadata."""
  crop = int(metadata.get("crop", 0))
  data = f"{crop}x{crop} crops" if crop else "whole dataset images (crop=0), not photo crops"
  config = next((w.split("=", 1)[1].split(":")[0] for w in
                 str(metadata.get("training_command", "")).split() if w.startswith("--config=")),
                "?")
  return (f"{metadata.get('architecture', '?')}, lambda={metadata.get('lmbda', '?')}, "
          f"{metadata.get('step', '?')} steps on {data} ({config})")


def _list(args) -> int:
  for name in pretrained.list_models():
    print(f"{name}\t{_describe(pretrained.load(name)[2])}" if args.long else name)
  return 0


def _compress(args) -> int:
  _check_distinct(args.input, args.output)
  image = _read_image(args.input, args.max_pixels)
  model, params, name = _load(args)
  data = compression.compress(model, params, image, name=name, max_pixels=args.max_pixels)
  writers.write_atomic(args.output, data)
  return 0


def _decompress(args) -> int:
  _check_distinct(args.input, args.output)
  data = pathlib.Path(args.input).read_bytes()
  header, _, _ = bitstream.unpack(data)
  compression.check_size(header.height, header.width, args.max_pixels)
  if header.model == "checkpoint" and not args.checkpoint:
    raise ValueError(f"{args.input} was made with a checkpoint model: pass --checkpoint WORKDIR")
  if not args.checkpoint:
    args.model = header.model
  model, params, _ = _load(args)
  _save_image(compression.decompress(model, params, data, max_pixels=args.max_pixels),
              args.output)
  return 0


def _evaluate(args) -> int:
  folder = pathlib.Path(args.images)
  files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".bmp", ".tif",
                                                                    ".tiff", ".ppm"))
  if not files:
    raise FileNotFoundError(f"no lossless images (.png, .bmp, .tif, .ppm) in {folder}")
  images = [_read_image(str(f), args.max_pixels) for f in files]
  names = [f.name for f in files]
  results = []
  for model_name in [None] if args.checkpoint else args.model:
    args.model = model_name
    model, params, name = _load(args)
    results.append(rate_distortion.evaluate_model(model, params, images, names, name=name))
    mean = results[-1]["mean"]
    excess = [r["payload_vs_estimate"] for r in results[-1]["images"]]
    print(f"{name}: {mean['bpp']:.4f} bpp, {mean['psnr']:.2f} dB"
          + (f", MS-SSIM {mean['ms_ssim']:.4f}" if "ms_ssim" in mean else "")
          + f"; stream payload vs likelihood estimate {min(excess):+.2%} .. {max(excess):+.2%}")
  qualities = [int(q) for q in args.jpeg_qualities.split(",")]
  jpeg = rate_distortion.jpeg_curve(images, qualities)
  summary = rate_distortion.summarize(results, jpeg)
  report = {"images": str(folder), "models": results, "jpeg_420": jpeg, **summary}
  pathlib.Path(args.output).write_text(json.dumps(report, indent=2))
  plot_path = args.plot or str(pathlib.Path(args.output).with_suffix(".png"))
  bd = summary["bd_rate_vs_jpeg_percent"]
  rate_distortion.plot(results, jpeg, plot_path, title=f"{folder.name}: learned codec vs JPEG 4:2:0"
                  + (f" (BD-rate {bd:+.1f} %)" if bd is not None else ""))
  print(f"BD-rate vs JPEG 4:2:0: {bd:+.1f} %" if bd is not None else
        f"BD-rate vs JPEG 4:2:0: n/a ({summary.get('bd_rate_note')})")
  print(f"wrote {args.output} and {plot_path}")
  return 0


def _export(args) -> int:
  """Saves a checkpoint's parameters, with the quantiles fitted exactly (bisection).

  The metadata is the run's codec config, the step, the lambda it was trained
  with (the quality preset's when the config leaves `lmbda` at 0) and, if given,
  the training command.
  """
  model, params, codec = pretrained.load_checkpoint(args.checkpoint, step=args.step)
  density, _ = factorized.density_from_params(params["entropy_bottleneck"])
  params["entropy_bottleneck"]["quantiles"] = np.asarray(factorized.fit_quantiles(density))
  codec["lmbda"] = codec["lmbda"] or learned.lmbda(codec["quality"], codec["distortion"])
  if args.training_command:
    codec["training_command"] = args.training_command
  pretrained.save(args.output, model, params, dtype=args.dtype, **codec)
  return 0


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
  return value


class _Parser(argparse.ArgumentParser):
  """argparse with a one-line error (exit 2) instead of the usage text and the error."""

  def error(self, message: str):
    print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m jaxcomp.codecs",
              description="Learned image codecs with real bitstreams.")
  p.add_argument("--debug", action="store_true", help="show the traceback of an error")
  common = _Parser(add_help=False)     # --debug after the command, too
  common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                      help="show the traceback of an error")
  limit = _Parser(add_help=False, parents=[common])
  limit.add_argument("--max-pixels", type=_positive_int, default=compression.DEFAULT_MAX_PIXELS,
                     help="refuse larger images and streams (default %(default)s; memory "
                          "grows with it)")
  sub = p.add_subparsers(dest="command", required=True)
  ls = sub.add_parser("list", help="print the shipped model names, one per line",
                      parents=[common])
  ls.add_argument("--long", action="store_true",
                  help="add what each model was trained on (crops or whole images, steps)")
  c = sub.add_parser("compress", help="image -> .jcx stream", parents=[limit])
  src = c.add_mutually_exclusive_group(required=True)
  src.add_argument("--model", help="a shipped model (see `list`)")
  src.add_argument("--checkpoint", help="a jaxcomp.main run directory")
  c.add_argument("input")
  c.add_argument("output")
  d = sub.add_parser("decompress", help=".jcx stream -> image (PNG, ...)", parents=[limit])
  d.add_argument("--checkpoint", help="run directory, for streams made from a checkpoint")
  d.add_argument("input")
  d.add_argument("output")
  e = sub.add_parser("evaluate", help="rate-distortion on a folder of images vs JPEG 4:2:0",
                     parents=[limit])
  src = e.add_mutually_exclusive_group(required=True)
  src.add_argument("--model", action="append", help="a shipped model; repeat for a curve")
  src.add_argument("--checkpoint", help="a jaxcomp.main run directory")
  e.add_argument("--images", required=True, help="folder of lossless images (e.g. Kodak)")
  e.add_argument("--output", default="rd.json", help="JSON report (default rd.json)")
  e.add_argument("--plot", help="plot file (default: the report's name with .png)")
  e.add_argument("--jpeg-qualities", default=",".join(map(str, rate_distortion.JPEG_QUALITIES)))
  x = sub.add_parser("export", help="checkpoint -> weights .npz (as shipped in codecs/weights)",
                     parents=[common])
  x.add_argument("--checkpoint", required=True, help="a jaxcomp.main run directory")
  x.add_argument("--step", type=int, help="the checkpoint's step (default: the latest)")
  x.add_argument("--dtype", default="float16", choices=["float16", "float32"])
  x.add_argument("--training-command", help="how the run was trained, kept in the metadata")
  x.add_argument("output")
  return p


_COMMANDS = {"list": _list, "compress": _compress, "decompress": _decompress,
             "evaluate": _evaluate, "export": _export}


def main(argv: list[str] | None = None) -> int:
  """Runs one command; returns the exit status (0, 1 error, 2 usage error)."""
  args = _parser().parse_args(argv)
  try:
    return _COMMANDS[args.command](args)
  except Exception as e:  # noqa: BLE001  (one line per error; --debug for the traceback)
    if args.debug:
      traceback.print_exc()
    message = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, (ValueError, OSError, KeyError)):   # StreamError is a ValueError
      message = f"{type(e).__name__}: {message}" + ("" if args.debug else
                                                     " (--debug shows the traceback)")
    print(f"error: {message[:2000]}", file=sys.stderr)
    return 2 if isinstance(e, UsageError) else 1


if __name__ == "__main__":
  sys.exit(main())
