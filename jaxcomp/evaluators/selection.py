"""The selector report of paper 003 on a trained classification run (mode "selection").

  python -m jaxcomp.main --config=configs/hrs.py:checkpoint=RUN --workdir=OUT

For every image of the eval split (`config.data`, copied from RUN by
configs/hrs.py): the original and its Pillow JPEG versions at
`config.hrs.qualities` (`selection.jpeg_versions`, 4:2:0 for RGB), RUN's logits
on all of them, then `selection.selection_report`: top-1 / top-5 accuracy and
the compression ratio (whole file and payload only) of every fixed version,
of HRS and of the label-free selectors.

The original's size is that of the file it was decoded from when the dataset
keeps files (`cifar10_jpeg75`, `cifar10_sample`, `image_folder` of JPEG / PNG
files; CIFAR-10's "original" is then itself a q75 JPEG), else that of a
Pillow PNG at zlib level 9 (IDX data such as Fashion-MNIST: lossless).

Writes to the workdir: selection.json (the report, what it ran on, the time
of each stage), selection.md (the table), selection.png (accuracy vs CR) and
selection.npz (logits [V, N, K], labels [N], sizes [V, N]: everything the
report is computed from).
"""

from __future__ import annotations

import io
import pathlib
import time
from typing import Any

import ml_collections
import numpy as np

from jaxcomp import data as data_lib
from jaxcomp import selection
from jaxcomp import writers
from jaxcomp.data import local, readers
from jaxcomp.evaluators.registry import EVALUATORS
from jaxcomp.evaluators.runs import load_run
from jaxcomp.tasks.multi_version import hrs_qualities, hrs_run_config


def _container(data_config: ml_collections.ConfigDict) -> pathlib.Path | None:
  """The zip or folder a class-folder dataset decodes, None for other datasets."""
  if data_config.name == "cifar10_sample":
    return local.SAMPLE_DIR / "cifar10_jpeg75_sample.zip"
  if data_config.name == "cifar10_jpeg75":
    path = local.find_data(data_config.path, "cifar10_jpeg75.zip", "cifar10_jpeg75.zip")
    return path / "cifar10_jpeg75.zip" if (path / "cifar10_jpeg75.zip").is_file() else path
  if data_config.name == "image_folder":
    return local.find_data(data_config.path, "", "image folder")
  return None


def stored_sizes(data_config: ml_collections.ConfigDict, ds: data_lib.ImageDataset
                 ) -> np.ndarray | None:
  """(whole-file, payload) bytes of the files `ds`'s examples were decoded from.

  Args:
    data_config: the `config.data` that opened `ds`.
    ds: a split of it (subsets included).

  Returns:
    int64 [2, len(ds)] in `ds` order (`selection.file_sizes`), or None when the
    dataset keeps no files (IDX, tfds) or `ds.read` crops or resizes them.

  Raises:
    ValueError: the files do not line up with `ds` (another count, or the first
      file does not decode to the first example), or a file is neither JPEG nor PNG.
  """
  path = _container(data_config)
  stored = getattr(ds.source, "images", None)
  if path is None or stored is None or stored.shape[1:] != ds.image_shape:
    return None        # no files, or the examples are cropped / resized from them
  with readers.open_container(path) as (members, read):
    # The members `readers.read_class_folders` decodes, in its (sorted) order.
    mine = [m for m in members if len(m.split("/")) >= 3 and m.split("/")[-3] == ds.split]
    if len(mine) != len(ds.source):
      raise ValueError(f"{path} holds {len(mine)} files under {ds.split!r}, the dataset "
                       f"{len(ds.source)} examples")
    index = np.arange(len(ds.source)) if ds.indices is None else ds.indices
    files = [read(mine[i]) for i in index]
  if len(files) and not np.array_equal(readers.decode_image(files[0]), ds[0]["image"]):
    raise ValueError(f"the first file of {path} under {ds.split!r} is not the dataset's first "
                     "example")
  return np.array([selection.file_sizes(f) for f in files], np.int64).reshape(-1, 2).T


def plot(report: dict[str, dict[str, float]], path: pathlib.Path, *, title: str) -> None:
  """Top-1 / top-5 accuracy (rows) vs whole-file / payload CR (columns): the JPEG versions
  as a curve from the highest quality to the lowest, the original and the selectors as points."""
  plt = writers.pyplot()
  jpegs = sorted((n for n in report if n.startswith("q")), key=lambda n: -int(n[1:]))
  fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
  for row, key in enumerate(("top1", "top5")):
    for col, (cr, what) in enumerate((("cr_file", "whole files"), ("cr_payload", "payload"))):
      ax = axes[row, col]
      ax.plot([report[n][cr] for n in jpegs], [100 * report[n][key] for n in jpegs],
              "o-", color="0.5", label="JPEG version")
      for n in jpegs:
        ax.annotate(n, (report[n][cr], 100 * report[n][key]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
      for n, marker in zip(("original",) + selection.SELECTORS, "o*sD^"):
        ax.plot(report[n][cr], 100 * report[n][key], marker, markersize=9, label=n,
                color="k" if n == "original" else None)
      ax.set_xlabel(f"compression ratio, {what} (original / selected)")
      ax.set_ylabel(f"{key} accuracy (%)")
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=8, loc="lower left")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  writers.save_figure(fig, path, dpi=110)


@EVALUATORS.register("selection")
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the selector report of `config.hrs.checkpoint` (module docstring); returns it.

  Raises:
    ConfigError: no checkpoint, bad qualities, another dataset than the run's.
    FileNotFoundError: the checkpoint is not a run with a saved step.
  """
  qualities = hrs_qualities(config)
  hrs_run_config(config, sections=("data",))
  task, variables = load_run(config.hrs.checkpoint)
  ds = data_lib.get_dataset(config.data, config.data.eval_split)
  sizes = stored_sizes(config.data, ds)
  n, chunk = len(ds), config.hrs.batch_size
  seconds = {"versions": 0.0, "classify": 0.0}
  logits, labels, files, payloads = [], [], [], []
  for start in range(0, n, chunk):
    t0 = time.perf_counter()
    images, y = ds.read(np.arange(start, min(start + chunk, n)))
    given = None if sizes is None else sizes[:, start:start + chunk]
    v = selection.jpeg_versions(images, qualities, original_sizes=given)
    t1 = time.perf_counter()
    logits.append(selection.classify_versions(task.apply_fn, variables, v.images,
                                              batch_size=chunk))
    seconds["versions"] += t1 - t0
    seconds["classify"] += time.perf_counter() - t1
    labels.append(y)
    files.append(v.file_bytes)
    payloads.append(v.payload_bytes)
  logits = np.concatenate(logits, axis=1)
  labels = np.concatenate(labels)
  files, payloads = np.concatenate(files, axis=1), np.concatenate(payloads, axis=1)
  report = selection.selection_report(logits, labels, files, payloads, qualities)

  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  title = (f"{config.data.name}/{config.data.eval_split} ({n} images), "
           f"{config.model.name}: {pathlib.Path(config.hrs.checkpoint).name}")
  result = {"report": report, "checkpoint": str(config.hrs.checkpoint),
            "dataset": config.data.name, "split": config.data.eval_split, "num_images": n,
            "model": config.model.name, "qualities": list(qualities),
            "original_sizes": ("stored files" if v.original_source == "given"
                               else "PNG (zlib level 9)"),
            "subsampling": v.subsampling, "seconds": seconds, "config": config.to_dict()}
  writers.write_json(out / "selection.json", result)
  md = selection.report_markdown(report)
  writers.write_atomic(out / "selection.md", f"## Selectors: {title}\n\n{md}\n")
  buf = io.BytesIO()
  np.savez_compressed(buf, logits=logits, labels=labels, file_bytes=files,
                      payload_bytes=payloads, qualities=np.array(qualities))
  writers.write_atomic(out / "selection.npz", buf.getvalue())
  plot(report, out / "selection.png", title=title)
  print(md)
  print(f"{n} images x {len(qualities) + 1} versions: Pillow {seconds['versions']:.0f} s, "
        f"classifier {seconds['classify']:.0f} s")
  return result
