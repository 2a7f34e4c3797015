"""Command line of jaxcomp's learned codecs.

  python -m jaxcomp.codecs list
  python -m jaxcomp.codecs compress --model hyperprior-q3 in.png out.jcx
  python -m jaxcomp.codecs compress --checkpoint WORKDIR in.png out.jcx
  python -m jaxcomp.codecs decompress out.jcx back.png [--checkpoint WORKDIR]
  python -m jaxcomp.codecs evaluate --model hyperprior-q1 --model hyperprior-q2 \
      --images ../shared/data/kodak --output rd.json --plot rd.png
  python -m jaxcomp.codecs export --checkpoint WORKDIR weights.npz [--step S] [--dtype float32]

`decompress` reads the model from the stream header; a stream made from a
checkpoint needs `--checkpoint`. Errors print one line on stderr and exit 1
(argument errors exit 2).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from PIL import Image

from jaxcomp.codecs import bitstream, compression, learned, pretrained
from jaxcomp.evaluators import rate_distortion
from jaxcomp.entropy import factorized


def _read_image(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


def _load(args) -> tuple:
  """`(model, params, name)` from --model or --checkpoint."""
  if getattr(args, "checkpoint", None):
    model, params, _ = pretrained.load_checkpoint(args.checkpoint)
    return model, params, "checkpoint"
  model, params, _ = pretrained.load(args.model)
  return model, params, args.model


def _list(args) -> int:
  del args
  print("\n".join(pretrained.list_models()))
  return 0


def _compress(args) -> int:
  image = _read_image(args.input)
  model, params, name = _load(args)
  data = compression.compress(model, params, image, name=name)
  pathlib.Path(args.output).write_bytes(data)
  return 0


def _decompress(args) -> int:
  data = pathlib.Path(args.input).read_bytes()
  header, _, _ = bitstream.unpack(data)
  if header.model == "checkpoint" and not args.checkpoint:
    raise ValueError(f"{args.input} was made with a checkpoint model: pass --checkpoint WORKDIR")
  if not args.checkpoint:
    args.model = header.model
  model, params, _ = _load(args)
  Image.fromarray(compression.decompress(model, params, data)).save(args.output)
  return 0


def _evaluate(args) -> int:
  folder = pathlib.Path(args.images)
  files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".bmp", ".tif",
                                                                    ".tiff", ".ppm"))
  if not files:
    raise FileNotFoundError(f"no lossless images (.png, .bmp, .tif, .ppm) in {folder}")
  images = [_read_image(str(f)) for f in files]
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


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m jaxcomp.codecs",
                              description="Learned image codecs with real bitstreams.")
  sub = p.add_subparsers(dest="command", required=True)
  sub.add_parser("list", help="print the shipped model names, one per line")
  c = sub.add_parser("compress", help="image -> .jcx stream")
  src = c.add_mutually_exclusive_group(required=True)
  src.add_argument("--model", help="a shipped model (see `list`)")
  src.add_argument("--checkpoint", help="a jaxcomp.main run directory")
  c.add_argument("input")
  c.add_argument("output")
  d = sub.add_parser("decompress", help=".jcx stream -> image (PNG, ...)")
  d.add_argument("--checkpoint", help="run directory, for streams made from a checkpoint")
  d.add_argument("input")
  d.add_argument("output")
  e = sub.add_parser("evaluate", help="rate-distortion on a folder of images vs JPEG 4:2:0")
  src = e.add_mutually_exclusive_group(required=True)
  src.add_argument("--model", action="append", help="a shipped model; repeat for a curve")
  src.add_argument("--checkpoint", help="a jaxcomp.main run directory")
  e.add_argument("--images", required=True, help="folder of lossless images (e.g. Kodak)")
  e.add_argument("--output", default="rd.json", help="JSON report (default rd.json)")
  e.add_argument("--plot", help="plot file (default: the report's name with .png)")
  e.add_argument("--jpeg-qualities", default=",".join(map(str, rate_distortion.JPEG_QUALITIES)))
  x = sub.add_parser("export", help="checkpoint -> weights .npz (as shipped in codecs/weights)")
  x.add_argument("--checkpoint", required=True, help="a jaxcomp.main run directory")
  x.add_argument("--step", type=int, help="the checkpoint's step (default: the latest)")
  x.add_argument("--dtype", default="float16", choices=["float16", "float32"])
  x.add_argument("--training-command", help="how the run was trained, kept in the metadata")
  x.add_argument("output")
  return p


_COMMANDS = {"list": _list, "compress": _compress, "decompress": _decompress,
             "evaluate": _evaluate, "export": _export}


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    return _COMMANDS[args.command](args)
  except (ValueError, OSError, KeyError) as e:   # StreamError is a ValueError; PIL's is OSError
    message = " ".join(str(e).split()) or type(e).__name__
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
