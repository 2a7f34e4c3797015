"""The JPEG-DL sensitivity map of a trained classifier: which DCT frequencies it is sensitive to.

  python -m jaxcomp.evaluators.sensitivity_maps --baseline=RUN [--images=2560] \
      [--out=s.json] [--plot=s.png]

For a run trained without the JPEG layer, the initial tables JPEG_DL.md's
recipe derives from it (`layers.jpeg_table_recipes.sensitivity_tables`: steps
proportional to 1 / sensitivity, the largest luma step = `q_max`), with the
model in train-mode BatchNorm (the authors') and in eval mode, their relative
difference, where the largest step sits, and the DC step against the b = 8
window (a luma DC step below 1024 / 127 = 8.06 clips bright and dark blocks).
The authors' CIFAR-100 maps put the largest step on DC; a map with a small DC
step starts clipping.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxcomp import writers
from jaxcomp.evaluators.runs import load_run
from jaxcomp.layers import jpeg_table_recipes
from jaxcomp.tasks.classification import to_unit_float


def sensitivity_report(baseline: str, *, images: int = 2560, q_max: float = 10.0
                       ) -> dict[str, Any]:
  """Tables in both BatchNorm modes from `images` augmented training images of the run."""
  task, _ = load_run(baseline)
  if task.config.model.jpeg_layer:
    raise ValueError(f"{baseline} has a JPEG layer: give a run trained without it")
  batch = task.config.train.batch_size
  out: dict[str, Any] = {"baseline": str(baseline), "dataset": task.train_ds.name,
                         "images": -(-images // batch) * batch, "q_max": q_max}
  for mode in ("train", "eval"):
    batches = task.train_iterator(seed=task.config.seed, start_step=0)
    pairs = ((to_unit_float(jnp.asarray(b["image"])), b["label"])
             for _, b in zip(range(-(-images // batch)), batches))
    luma, chroma = jpeg_table_recipes.sensitivity_tables(
        task.pretrained_logits_fn(baseline, train_mode=mode == "train"), pairs, q_max=q_max)
    out[mode] = {"luma": luma.tolist(), "chroma": None if chroma is None else chroma.tolist(),
                 "luma_dc": float(luma[0, 0]),
                 "luma_argmax": [int(i) for i in np.unravel_index(np.argmax(luma), luma.shape)],
                 "dc_clips_at_8_bits": bool(luma[0, 0] < 1024.0 / 127)}
  a, b = (np.asarray(out[m]["luma"]) for m in ("train", "eval"))
  out["train_vs_eval_max_relative_difference"] = float(np.max(np.abs(a - b) / b))
  return out


def plot(report: dict[str, Any], path: str | pathlib.Path) -> None:
  """Heat maps of the train-mode tables (luma, chroma), step values written in."""
  tables = [("luma", report["train"]["luma"]), ("chroma", report["train"]["chroma"])]
  writers.plot_tables([(f"{report['dataset']}: {name} steps", t) for name, t in tables
                       if t is not None], path, value_format="{:.2g}", panel_size=3.4,
                      fontsize=5, title_size=8, dpi=120)


def main(argv: list[str]) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--baseline", required=True, help="a run trained without the JPEG layer")
  p.add_argument("--images", type=int, default=2560, help="training images averaged over")
  p.add_argument("--q-max", type=float, default=10.0, help="the largest luma step")
  p.add_argument("--out", default=None, help="write the report here (JSON)")
  p.add_argument("--plot", default=None, help="PNG of the train-mode tables")
  args = p.parse_args(argv)
  return writers.report_main(
      lambda: sensitivity_report(args.baseline, images=args.images, q_max=args.q_max),
      out=args.out, plot=plot, plot_path=args.plot)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
