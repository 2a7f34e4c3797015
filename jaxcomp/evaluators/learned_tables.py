"""A trained JPEG-DL layer's tables as real JPEG files: size and accuracy.

  python -m jaxcomp.evaluators.learned_tables --workdir=RUN [--baseline=BASE_RUN] [--out=x.json]

For the test split of the run's dataset:
1. export the layer's round-0 tables as integer JPEG tables (rounded, clipped to
   1..255, chroma for Cb and Cr) and encode every image with them through Pillow
   (4:4:4, standard Huffman tables): bytes of the whole file, of the
   entropy-coded segments only, and bits per pixel;
2. encode the same images as standard JPEG at every quality 1..100 (4:4:4, and
   4:2:0 for colour) and find the quality whose mean file size is nearest;
3. accuracy of the run's backbone fed the DECODED learned-table files (hard
   rounding by libjpeg instead of the soft layer), next to the run's own
   accuracy with the soft layer on the original images, and (with --baseline)
   the baseline classifier on the original images and on the standard JPEG files
   of equal size.

The layer works on YCbCr with a +0.5 chroma offset and zero padding; a JPEG file
uses +128 and edge padding. The DCT coefficients differ only in the chroma DC
term (and at padded borders, none for 32x32 / 28x28 images), so the exported
tables mean the same thing.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import jax
import numpy as np

from jaxcomp import writers
from jaxcomp.codecs import jpeg_files
from jaxcomp.evaluators.runs import load_run
from jaxcomp.layers import jpeg_table_recipes


def _accuracy(logits_fn, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
  fn = jax.jit(logits_fn)
  correct = 0
  for i in range(0, len(images), batch):
    x = np.asarray(images[i:i + batch], np.float32) / 255.0
    correct += int((np.argmax(fn(x), -1) == labels[i:i + batch]).sum())
  return correct / len(images)


def _sizes(images: np.ndarray, **options) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
  files = [jpeg_files.encode_jpeg(im, **options) for im in images]
  whole = np.asarray([len(f) for f in files], np.float64)
  coded = np.asarray([jpeg_files.entropy_coded_bytes(f) for f in files], np.float64)
  return whole, coded, files


def evaluate(workdir: str, baseline: str | None = None) -> dict[str, Any]:
  """The report described in the module docstring, as a dict."""
  task, variables = load_run(workdir)
  if not task.config.model.jpeg_layer:
    raise ValueError(f"{workdir} was trained without a JPEG layer (model.jpeg_layer=False)")
  ds = task.eval_ds
  images, labels = ds.read(np.arange(len(ds)))
  pixels = images.shape[1] * images.shape[2]
  luma, chroma = jpeg_table_recipes.export_tables(variables["params"]["jpeg_layer"])
  tables = (luma,) if chroma is None else (luma, chroma)
  whole, coded, files = _sizes(images, qtables=tables, subsampling="4:4:4")
  decoded = np.stack([jpeg_files.decode_jpeg(f) for f in files])
  backbone = task.model.clone(jpeg_layer=None)
  backbone_logits = lambda x: backbone.apply(variables, x, train=False)[0]
  report: dict[str, Any] = {
      "workdir": str(workdir), "dataset": ds.name, "split": ds.split, "images": len(ds),
      "tables": {"luma": luma.tolist(), "chroma": None if chroma is None else chroma.tolist()},
      "layer_diagnostic": task.log_jpeg_diagnostic(variables["params"]),
      "learned": {"bytes": whole.mean(), "entropy_coded_bytes": coded.mean(),
                  "bpp": 8 * whole.mean() / pixels, "entropy_coded_bpp": 8 * coded.mean() / pixels,
                  "accuracy_decoded_files": _accuracy(backbone_logits, decoded, labels),
                  "accuracy_soft_layer": _accuracy(lambda x: task.apply_fn(variables, x),
                                                   images, labels)},
  }
  subsamplings = ("4:4:4",) if images.shape[-1] == 1 else ("4:4:4", "4:2:0")
  base_logits = None
  if baseline:
    base_task, base_vars = load_run(baseline)
    base_logits = lambda x: base_task.apply_fn(base_vars, x)
    report["baseline"] = {"workdir": str(baseline),
                          "accuracy_original": _accuracy(base_logits, images, labels)}
  for sub in subsamplings:
    curve = {q: _sizes(images, quality=q, subsampling=sub)[:2] for q in range(1, 101)}
    q_eq = min(curve, key=lambda q: abs(curve[q][0].mean() - whole.mean()))
    entry = {"quality_of_equal_size": q_eq, "bytes": curve[q_eq][0].mean(),
             "entropy_coded_bytes": curve[q_eq][1].mean(),
             "bpp": 8 * curve[q_eq][0].mean() / pixels}
    if base_logits is not None:
      _, _, std_files = _sizes(images, quality=q_eq, subsampling=sub)
      std_decoded = np.stack([jpeg_files.decode_jpeg(f) for f in std_files])
      entry["baseline_accuracy_decoded_files"] = _accuracy(base_logits, std_decoded, labels)
    report[f"standard_{sub}"] = entry
  return report


def plot_tables(report: dict[str, Any], path: str | pathlib.Path) -> None:
  """Heat maps of the learned tables beside the IJG tables of the equal-size quality."""
  from jaxcomp.ops.jpeg_tables import quality_tables  # pylint: disable=g-import-not-at-top
  q = report["standard_4:4:4"]["quality_of_equal_size"]
  std_luma, std_chroma = quality_tables(q)
  learned = [report["tables"]["luma"], report["tables"]["chroma"]]
  panels = [("learned luma", learned[0]), (f"IJG luma q{q}", std_luma)]
  if learned[1] is not None:
    panels += [("learned chroma", learned[1]), (f"IJG chroma q{q}", std_chroma)]
  writers.plot_tables(panels, path, value_format="{:.0f}", dpi=110)


def main(argv: list[str]) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a JPEG-DL run")
  p.add_argument("--baseline", default=None, help="the matching run without the layer")
  p.add_argument("--out", default=None, help="write the report here (JSON)")
  p.add_argument("--plot", default=None, help="PNG of learned vs standard tables")
  args = p.parse_args(argv)
  return writers.report_main(lambda: evaluate(args.workdir, args.baseline), out=args.out,
                             plot=plot_tables, plot_path=args.plot)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
