"""The results of a compressed-training sweep: one table and the figures of the thesis's Ch. 3-4.

  python -m jaxcomp.main --config=configs/compressed_training.py:experiment=report,\
checkpoints='runs/ct/*' --workdir=runs/ct-report

Reads finished classification runs (`robustness.checkpoints`; e.g. made by
`launch/sweep.py` over codec x level x model x seed) and writes to the workdir:

  results.csv / results.md   one row per run: training data (family, level), test data,
                             model, parameters, seed, test accuracy, the training set's
                             mean payload bpp, PSNR and SSIM (its `derived` summary), and
                             the mean accuracy over the corrupted sets when the run was
                             evaluated (`corruption_robustness`); the Markdown averages
                             the seeds of each arm (mean +- std), then the BDA ranking
                             and BDAD choices within each family (`family_tables`)
  fig3_4_accuracy_vs_bpp.png       accuracy vs bpp per codec family, originals a line
  fig3_5_accuracy_vs_quality.png   accuracy vs PSNR and vs SSIM
                                   (both for runs tested on the original test set; runs
                                   tested on compressed data get `*_test_compressed.png`)
  fig3_6_parameters.png            accuracy vs parameters, one line per training data
  fig4_3_clean_vs_corrupt.png      clean vs mean corrupted accuracy
  fig4_7_spectra.png               mean normalised log |DFT| of each training set (`log_spectrum`)
"""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import re
import sys
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp import checkpoint
from jaxcomp import data as data_lib
from jaxcomp import models as models_lib
from jaxcomp import writers
from jaxcomp.evaluators import corruption_scores
from jaxcomp.evaluators.adversarial import _checkpoints
from jaxcomp.evaluators.corruption_robustness import CLEAN, arm_of
from jaxcomp.evaluators.registry import EVALUATORS

COLUMNS = ("run", "arm", "seed", "family", "level", "train_data", "test", "model", "params",
           "accuracy", "bpp", "file_bpp", "psnr", "ssim", "corrupt_accuracy")
SPECTRUM_IMAGES = 2000      # training images averaged per spectrum


def family_of(name: str) -> tuple[str, str, str]:
  """A dataset source name -> (family, level, test data).

  Families: "original", "jpeg" (level Q, ":444" kept), the learned codec's
  architecture (level its model; "bls" with the thesis lambda for the shipped
  cifar10-bls-<lambda> models), "noise" (sigma), "blur" (k), "union" (the parts'
  levels joined by "+"). Test data: "original" for the `*_train:` sources,
  "compressed" otherwise.
  """
  if name.startswith("union:"):
    parts = [family_of(p) for p in name[len("union:"):].split("|")]
    return "union", "+".join(f"{f}:{lv}" for f, lv, _ in parts), "original"
  m = re.match(r"(compressed|corrupted)(_train)?:(.*)", name)
  if not m:
    return "original", "", "original"
  test = "original" if m.group(2) else "compressed"
  fields = m.group(3).split(":")
  if fields[-1] == "444" and len(fields) >= 3 and fields[-3] == "jpeg":
    return "jpeg", f"{fields[-2]}:444", test
  family, level = fields[-2], fields[-1]
  bls = re.fullmatch(r"cifar10-bls-(.*)", level)
  if family == "bls2017" and bls:
    return "bls", bls.group(1), test
  return family, level, test


def log_spectrum(images: jax.Array) -> jax.Array:
  """Fig. 4.7: the mean log-magnitude spectrum of a set, DC centred, scaled to [0, 1].

  Args:
    images: uint8 or float [N, H, W, C].

  Returns:
    float32 [H, W]: `log(1 + |DFT2(x)|)` per image and channel (x in [0, 1]), averaged
    over images and channels, `fftshift`ed, then min-max normalised.
  """
  x = jnp.asarray(images, jnp.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
  magnitude = jnp.abs(jnp.fft.fft2(x, axes=(1, 2)))
  mean = jnp.fft.fftshift(jnp.log1p(magnitude).mean(axis=(0, 3)))
  return (mean - mean.min()) / jnp.maximum(mean.max() - mean.min(), 1e-12)


def corruption_grid(run: pathlib.Path) -> dict[str | tuple[str, int], float]:
  """{"clean": accuracy, (corruption, severity): accuracy, ...} of a run's latest
  `corruption_robustness` evaluation ({} when it was not evaluated)."""
  files = sorted(run.glob("corruption_accuracy-*.json"), key=lambda p: p.stat().st_mtime)
  if not files:
    return {}
  acc = json.loads(files[-1].read_text())["accuracy"]
  return {(k if k == CLEAN else (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]))): v
          for k, v in acc.items()}


def _corrupt_accuracy(run: pathlib.Path) -> float:
  values = [v for k, v in corruption_grid(run).items() if k != CLEAN]
  return float(np.mean(values)) if values else math.nan


def family_tables(rows: Sequence[dict[str, Any]],
                  grids: Mapping[str, Mapping[str | tuple[str, int], float]]) -> str:
  """Tables 4.2 and 4.3 within each family (the thesis ranks BLS, JPEG, noise and blur
  levels separately), for the runs tested on original data.

  Per (family, model) with at least two evaluated levels: the BDA ranking and the BDAD
  choice per corruption over the levels, each level represented by its seed with the
  best clean accuracy on the images of the corrupted sets (the thesis's protocol,
  Sec. 4.2, and `corruption_robustness.best_seeds`); and, beside it, the ranking by
  the mean over seeds of each level's mean corrupted accuracy (+- std, ddof 1).

  Args:
    rows: `collect`'s rows.
    grids: run name -> `corruption_grid` of that run (with its "clean" accuracy).

  Returns:
    Markdown ("" when no family has two evaluated levels).
  """
  fams: dict[tuple[str, str], dict[str, list]] = {}
  for r in rows:
    if r["family"] not in ("original", "union") and r["test"] == "original" \
        and grids.get(r["run"]):
      fams.setdefault((r["family"], r["model"]), {}).setdefault(r["level"], []).append(r)
  lines: list[str] = []
  for (fam, model), levels in sorted(fams.items()):
    if len(levels) < 2:
      continue
    levels = dict(sorted(levels.items(), key=lambda kv: _level_key(kv[0])))
    best = {lv: max(rs, key=lambda r: grids[r["run"]][CLEAN])["run"]
            for lv, rs in levels.items()}
    results = {(lv, *k): v for lv, run in best.items() for k, v in grids[run].items()
               if k != CLEAN}
    by_seed = {lv: [r["corrupt_accuracy"] for r in rs] for lv, rs in levels.items()}
    mean_order = sorted(by_seed, key=lambda lv: -np.mean(by_seed[lv]))
    bdad = corruption_scores.bdad(results)
    lines += [f"**{fam}, {model}** (best seed of each level)", "",
              "BDA ranking (Table 4.2): " + " > ".join(
                  f"{m} ({100 * a:.2f})" for m, a in corruption_scores.ranking(results)), "",
              "by the mean over seeds: " + " > ".join(
                  f"{lv} ({100 * np.mean(by_seed[lv]):.2f}"
                  + (f" +- {100 * np.std(by_seed[lv], ddof=1):.2f}, {len(by_seed[lv])} seeds)"
                     if len(by_seed[lv]) > 1 else ", 1 seed)") for lv in mean_order),
              "", "| corruption | " + " | ".join(bdad) + " |", "|---" * (1 + len(bdad)) + "|",
              "| BDAD (Table 4.3) | " + " | ".join(str(m) for m, _ in bdad.values()) + " |", ""]
  return "\n".join(lines)


def collect(runs: Sequence[pathlib.Path]) -> list[dict[str, Any]]:
  """One row (`COLUMNS`) per finished run (runs without summary.json are skipped)."""
  rows = []
  for run in runs:
    if not (run / "summary.json").is_file():
      print(f"[compressed_training] skip {run}: not finished", file=sys.stderr)
      continue
    config, state, _ = checkpoint.read_run(run)
    c = ml_collections.ConfigDict(config)
    family, level, test = family_of(c.data.name)
    arm, seed = arm_of(run.name)
    train = data_lib.get_dataset(c.data, c.data.train_split)
    summary = getattr(train.source, "summary", {}) if family not in ("original", "union") else {}
    rows.append({
        "run": run.name, "arm": arm, "seed": seed, "family": family, "level": level,
        "train_data": c.data.name, "test": test, "model": c.model.name,
        "params": models_lib.count_params(state["params"]),
        "accuracy": json.loads((run / "summary.json").read_text())["eval"]["accuracy"],
        **{k: summary.get(k, math.nan) for k in ("bpp", "file_bpp", "psnr", "ssim")},
        "corrupt_accuracy": _corrupt_accuracy(run)})
  return rows


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
  buf = io.StringIO()
  w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
  w.writeheader()
  w.writerows(rows)
  return buf.getvalue()


def arms(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Rows grouped by arm: the shared columns, `n` seeds, mean and std of the accuracies."""
  groups: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault(r["arm"], []).append(r)
  out = []
  for arm, rs in groups.items():
    a = {k: rs[0][k] for k in ("arm", "family", "level", "test", "model", "params", "bpp",
                               "file_bpp", "psnr", "ssim")}
    for k in ("accuracy", "corrupt_accuracy"):
      v = np.array([r[k] for r in rs], np.float64)
      a[k], a[f"{k}_std"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    a["n"] = len(rs)
    out.append(a)
  return sorted(out, key=lambda a: (a["test"], a["model"], a["family"], _level_key(a["level"])))


def _level_key(level: str) -> tuple:
  try:
    return (0, float(level.split(":")[0]))
  except ValueError:
    return (1, level)


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
  """The arms, seeds averaged: accuracy in %, rates in bpp (payload), PSNR in dB; the last
  column names the arm (its runs' name without `_seed<k>`), which tells apart arms that
  differ in what the other columns do not show (e.g. epochs)."""
  def f(v, fmt):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
  lines = ["| training data | level | test | model | params | seeds | accuracy % | bpp | PSNR "
           "| SSIM | corrupt acc. % | arm |", "|---" * 12 + "|"]
  for a in arms(rows):
    spread = f" +- {100 * a['accuracy_std']:.2f}" if a["n"] > 1 else ""   # no std of one seed
    lines.append(
        f"| {a['family']} | {a['level']} | {a['test']} | {a['model']} | {a['params']:,} | "
        f"{a['n']} | {100 * a['accuracy']:.2f}{spread} | "
        f"{f(a['bpp'], '.3f')} | {f(a['psnr'], '.2f')} | {f(a['ssim'], '.4f')} | "
        f"{f(100 * a['corrupt_accuracy'], '.2f')} | {a['arm']} |")
  return "\n".join(lines) + "\n"


def _by_family(arm_rows, x: str, test: str, model: str):
  fams: dict[str, list] = {}
  for a in arm_rows:
    if a["test"] == test and a["model"] == model and a["family"] not in ("original", "union") \
        and not math.isnan(a[x]):
      fams.setdefault(a["family"], []).append(a)
  return {f: sorted(v, key=lambda a: a[x]) for f, v in fams.items()}


def plot_quality(rows, path: pathlib.Path, xs: Sequence[str], *, test: str = "original") -> None:
  """Figs. 3.4 / 3.5: accuracy vs `xs` ("bpp", "psnr", "ssim") per family and model."""
  plt = writers.pyplot()
  arm_rows = arms(rows)
  models = sorted({a["model"] for a in arm_rows if a["test"] == test})
  fig, axes = plt.subplots(len(models), len(xs), figsize=(5 * len(xs), 3.8 * len(models)),
                           squeeze=False)
  for i, model in enumerate(models):
    for j, x in enumerate(xs):
      ax = axes[i, j]
      for fam, pts in _by_family(arm_rows, x, test, model).items():
        ax.errorbar([p[x] for p in pts], [100 * p["accuracy"] for p in pts],
                    [100 * p["accuracy_std"] for p in pts], marker="o", capsize=2, label=fam)
      for a in arm_rows:
        if a["family"] == "original" and a["model"] == model and a["test"] == test:
          ax.axhline(100 * a["accuracy"], color="k", label="original")
      ax.set(xlabel={"bpp": "bits per pixel (payload)", "psnr": "PSNR (dB)",
                     "ssim": "SSIM"}[x], ylabel="test accuracy (%)",
             title=f"{model}, tested on {test} data")
      ax.legend(fontsize=7)
  fig.tight_layout()
  writers.save_figure(fig, path, dpi=110)


def plot_parameters(rows, path: pathlib.Path) -> None:
  """Fig. 3.6: accuracy vs parameters, one line per (training data, test data)."""
  plt = writers.pyplot()
  lines: dict[str, list] = {}
  for a in arms(rows):
    lines.setdefault(f"{a['family']} {a['level']} (test {a['test']})".strip(), []).append(a)
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for label, pts in sorted(lines.items()):
    if len({p["model"] for p in pts}) > 1:
      pts = sorted(pts, key=lambda p: p["params"])
      ax.errorbar([p["params"] for p in pts], [100 * p["accuracy"] for p in pts],
                  [100 * p["accuracy_std"] for p in pts], marker="o", capsize=2, label=label)
  ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy (%)")
  if ax.get_legend_handles_labels()[0]:          # no line when every arm has one model
    ax.legend(fontsize=7)
  fig.tight_layout()
  writers.save_figure(fig, path, dpi=110)


def plot_clean_vs_corrupt(rows, path: pathlib.Path) -> None:
  """Fig. 4.3: clean test accuracy vs mean accuracy over the corrupted sets (best seed
  of each arm, as the robustness evaluator keeps it)."""
  plt = writers.pyplot()
  best: dict[str, dict] = {}
  for r in rows:
    if not math.isnan(r["corrupt_accuracy"]) and (
        r["arm"] not in best or r["accuracy"] > best[r["arm"]]["accuracy"]):
      best[r["arm"]] = r
  fig, ax = plt.subplots(figsize=(6.5, 5))
  for r in best.values():
    ax.scatter(100 * r["corrupt_accuracy"], 100 * r["accuracy"])
    ax.annotate(f"{r['family']} {r['level']}".strip(), (100 * r["corrupt_accuracy"],
                                                        100 * r["accuracy"]), fontsize=7)
  ax.set(xlabel="mean accuracy over the corrupted sets (%)", ylabel="clean test accuracy (%)")
  fig.tight_layout()
  writers.save_figure(fig, path, dpi=110)


def plot_spectra(spectra: dict[str, np.ndarray], path: pathlib.Path) -> None:
  """Fig. 4.7: one panel per training set."""
  plt = writers.pyplot()
  cols = min(len(spectra), 6)
  rows = -(-len(spectra) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for ax, (label, s) in zip(axes.ravel(), spectra.items()):
    ax.imshow(s, cmap="viridis", vmin=0, vmax=1)
    ax.set_title(label, fontsize=7)
  fig.tight_layout()
  writers.save_figure(fig, path, dpi=110)


def spectra(runs: Sequence[pathlib.Path], rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """`log_spectrum` of the training set of each distinct (family, level) among the rows."""
  out: dict[str, np.ndarray] = {}
  by_run = {r.name: r for r in runs}
  for row in rows:
    label = f"{row['family']} {row['level']}".strip()
    if label in out:
      continue
    c = ml_collections.ConfigDict(checkpoint.read_config(by_run[row["run"]]))
    ds = data_lib.get_dataset(c.data, c.data.train_split)
    images, _ = ds.read(np.arange(min(len(ds), SPECTRUM_IMAGES)))
    out[label] = np.asarray(jax.jit(log_spectrum)(images))
  return out


@EVALUATORS.register("compressed_training")
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Writes results.csv / results.md and the figures (module docstring) to `workdir`."""
  runs = _checkpoints(config.robustness.checkpoints)
  rows = collect(runs)
  if not rows:
    raise FileNotFoundError(f"no finished run among {config.robustness.checkpoints!r}")
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  writers.write_atomic(out / "results.csv", to_csv(rows))
  grids = {run.name: corruption_grid(run) for run in runs}
  md = to_markdown(rows)
  families = family_tables(rows, grids)
  if families:
    md += "\n### Within each family (Tables 4.2, 4.3)\n\n" + families
  writers.write_atomic(out / "results.md", md)
  for test in sorted({r["test"] for r in rows}):
    suffix = "" if test == "original" else f"_test_{test}"
    plot_quality(rows, out / f"fig3_4_accuracy_vs_bpp{suffix}.png", ["bpp"], test=test)
    plot_quality(rows, out / f"fig3_5_accuracy_vs_quality{suffix}.png", ["psnr", "ssim"],
                 test=test)
  plot_parameters(rows, out / "fig3_6_parameters.png")
  plot_clean_vs_corrupt(rows, out / "fig4_3_clean_vs_corrupt.png")
  plot_spectra(spectra(runs, rows), out / "fig4_7_spectra.png")
  print(md)
  return {"rows": rows}
