"""RePr experiment figures and table from the runs, finished or not (docs/repr.md).

  python launch/repr_figures.py runs/repr --evaluate     # each finished run, whole test split
  python launch/repr_figures.py runs/repr --out docs [--name repr]

Reads `ROOT/<group>/<arm>_seed<k>/` workdirs of `configs/repr.py` runs (group: e.g.
"c3_noaug", "c3_aug", "resnet20"; arm: "standard" or the ranking). `--evaluate` scores
the final checkpoint of each finished run on the whole eval split (the runs' curves
use a subset) into its `test_full.json`. Otherwise it writes to --out (file names
start with --name, default "repr"):
  * repr_results.json: per group and arm, the final test accuracies per seed (whole
    test split where `test_full.json` exists, else the run's eval subset) and their
    mean / std, the best accuracy on the curve's subset, the final train accuracy,
    and the per-layer counts of every drop event;
  * repr_curves.png: train and test accuracy against epochs, seed 0, the pruned phases
    shaded (Fig. 5.1), one row per group;
  * repr_ortho_sum.png: the Ortho-sum (Eq. 5.2 summed over the filters in use) over
    training, one panel per group, dashed lines at the drops (Fig. 5.9);
  * repr_counts.png: filters dropped per layer at each drop, per ranking (seed 0).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import sys
from typing import Any

import numpy as np

from jaxcomp import writers

_COLORS = {"standard": "tab:orange", "ortho": "tab:blue", "ortho_all": "tab:purple",
           "weight_norm": "tab:green", "random": "tab:grey"}


def _runs(root: pathlib.Path) -> dict[str, dict[str, dict[int, pathlib.Path]]]:
  """{group: {arm: {seed: workdir}}} of the runs under `root` with at least one eval row,
  finished or not (`_finished`)."""
  out: dict = collections.defaultdict(lambda: collections.defaultdict(dict))
  for metrics in sorted(root.glob("*/*_seed*/metrics.jsonl")):
    if not any(r["split"] == "eval" for r in writers.read_metrics(metrics.parent)):
      continue
    m = re.fullmatch(r"(.+)_seed(\d+)", metrics.parent.name)
    out[metrics.parent.parent.name][m.group(1)][int(m.group(2))] = metrics.parent
  return out


def _finished(workdir: pathlib.Path) -> bool:
  summary = workdir / "summary.json"
  return summary.exists() and "eval" in json.loads(summary.read_text())


def _steps_per_epoch(rows: list[dict[str, Any]]) -> float:
  """Optimizer steps per epoch, from a train row's "step" and "epoch"."""
  r = next(r for r in rows if r["split"] == "train" and r.get("epoch"))
  return r["step"] / r["epoch"]


def evaluate_full(workdir: pathlib.Path) -> dict[str, float]:
  """Accuracy of the run's last checkpoint on its whole eval split -> `test_full.json`."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxcomp import checkpoint, parallel  # pylint: disable=g-import-not-at-top
  from jaxcomp.tasks import base  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(checkpoint.read_config(workdir))
  config.data.num_eval_examples = 0
  mesh = parallel.create_mesh(1, jax.devices()[:1])
  _, state, step = checkpoint.read_run(workdir)
  metrics = base.get_task(config, mesh).evaluate(checkpoint.eval_variables(state), mesh)
  writers.write_json(workdir / "test_full.json", {**metrics, "step": step})
  return metrics


def _series(rows: list[dict[str, Any]], split: str, key: str, spe: float):
  pts = [(r["step"] / spe, r[key]) for r in rows if r["split"] == split and key in r]
  return tuple(zip(*pts)) if pts else ((), ())


def _phases(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
  """(drop step, re-introduction step) of each pruned phase; one still open at the
  run's last row ends there."""
  events = [r for r in rows if r["split"] == "event"]
  drops = [e["step"] for e in events if e["event"] == "repr_drop"]
  backs = [e["step"] for e in events if e["event"] == "repr_reintroduce"]
  end = rows[-1]["step"] if rows else 0
  return list(zip(drops, backs + [end] * (len(drops) - len(backs))))


def summarize(root: pathlib.Path) -> dict[str, Any]:
  """The numbers of repr_results.json (module doc). Mean and std are over the finished
  seeds; an unfinished run is listed under "unfinished" with its last eval."""
  report: dict[str, Any] = {}
  for group, arms in _runs(root).items():
    report[group] = {}
    for arm, seeds in sorted(arms.items()):
      finals, bests, trains, counts, full, done, unfinished = [], [], [], {}, [], [], {}
      for seed, workdir in sorted(seeds.items()):
        rows = writers.read_metrics(workdir)
        evals = [r for r in rows if r["split"] == "eval"]
        counts[seed] = [e["counts"] for e in rows
                        if e["split"] == "event" and e["event"] == "repr_drop"]
        if not _finished(workdir):
          unfinished[seed] = {"epoch": evals[-1]["step"] / _steps_per_epoch(rows),
                              "test_accuracy": evals[-1]["accuracy"]}
          continue
        path = workdir / "test_full.json"
        done.append(seed)
        full.append(path.exists())
        finals.append(json.loads(path.read_text())["accuracy"] if path.exists()
                      else evals[-1]["accuracy"])
        bests.append(max(r["accuracy"] for r in evals))
        trains.append([r["accuracy"] for r in rows if r["split"] == "train"][-1])
      config = json.loads((next(iter(seeds.values())) / "config.json").read_text())
      report[group][arm] = {
          "seeds": done, "final_test_accuracy": finals,
          "final_on_whole_test_split": full,
          "mean": float(np.mean(finals)) if finals else None,
          "std": float(np.std(finals, ddof=1)) if len(finals) > 1 else None,
          "best_test_accuracy": bests, "final_train_accuracy_running": trains,
          "unfinished": unfinished,
          "drop_counts": counts, "epochs": config["train"]["epochs"],
          "train_examples": config["data"]["num_train_examples"],
          "eval_examples": config["data"]["num_eval_examples"],
          "augment": config["data"]["augment"], "model": config["model"]["name"],
          "schedule": {k: config["repr"][k] for k in ("rounds", "s1_epochs", "s2_epochs",
                                                      "fraction", "metric", "exclude_first")}}
  return report


def plot(root: pathlib.Path, out: pathlib.Path, name: str = "repr") -> None:
  """<name>_curves.png, <name>_ortho_sum.png and <name>_counts.png (module doc)."""
  plt = writers.pyplot()
  runs = _runs(root)
  groups = sorted(runs)
  loaded = {g: {a: writers.read_metrics(s[min(s)]) for a, s in runs[g].items()} for g in groups}
  spe = {g: {a: _steps_per_epoch(rows) for a, rows in loaded[g].items()} for g in groups}

  fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.2 * len(groups)), squeeze=False)
  for row, g in zip(axes, groups):
    shaded = next((a for a in ("ortho", *loaded[g]) if _phases(loaded[g].get(a, []))), None)
    for ax, (split, title) in zip(row, (("train", "train accuracy (running, train mode)"),
                                        ("eval", "test accuracy"))):
      for arm, rows in sorted(loaded[g].items()):
        x, y = _series(rows, split, "accuracy", spe[g][arm])
        ax.plot(x, y, label=arm, color=_COLORS.get(arm), marker="." if split == "eval" else None)
      for a, b in _phases(loaded[g][shaded]) if shaded else ():
        ax.axvspan(a / spe[g][shaded], b / spe[g][shaded], color="grey", alpha=0.15)
      ax.set_title(f"{g}: {title}")
      ax.set_xlabel("epoch")
      ax.legend(fontsize=8)
  fig.tight_layout()
  writers.save_figure(fig, out / f"{name}_curves.png", dpi=110)

  fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.2), squeeze=False)
  for ax, g in zip(axes[0], groups):
    for arm, rows in sorted(loaded[g].items()):
      x, y = _series(rows, "train", "ortho_sum", spe[g][arm])
      ax.plot(x, y, label=arm, color=_COLORS.get(arm))
      for a, _ in _phases(rows):
        ax.axvline(a / spe[g][arm], color=_COLORS.get(arm), ls="--", lw=0.7)
    ax.set_title(f"{g}: Ortho-sum (lower = less overlap)")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
  fig.tight_layout()
  writers.save_figure(fig, out / f"{name}_ortho_sum.png", dpi=110)

  panels = [(g, a) for g in groups for a in sorted(loaded[g]) if _phases(loaded[g][a])]
  fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.6 * max(len(panels), 1), 3),
                           squeeze=False)
  for ax, (g, a) in zip(axes[0], panels):
    drops = [e for e in loaded[g][a] if e["split"] == "event" and e["event"] == "repr_drop"]
    layers = list(drops[0]["counts"])
    width = 0.8 / len(drops)
    for i, e in enumerate(drops):
      ax.bar(np.arange(len(layers)) + i * width, [e["counts"][p] for p in layers], width,
             label=f"drop {i + 1} (epoch {e['step'] / spe[g][a]:.0f})")
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax.set_xticklabels([p.split("/", 1)[-1] for p in layers], rotation=90, fontsize=6)
    ax.set_title(f"{g}: {a}", fontsize=9)
    ax.legend(fontsize=6)
  axes[0][0].set_ylabel("filters dropped")
  fig.tight_layout()
  writers.save_figure(fig, out / f"{name}_counts.png", dpi=110)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("root", type=pathlib.Path)
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs"))
  p.add_argument("--name", default="repr", help="prefix of the files written")
  p.add_argument("--evaluate", action="store_true",
                 help="score each finished run without test_full.json on the whole eval split")
  args = p.parse_args()
  if args.evaluate:
    for group, arms in _runs(args.root).items():
      for arm, seeds in arms.items():
        for seed, workdir in seeds.items():
          if _finished(workdir) and not (workdir / "test_full.json").exists():
            print(group, arm, seed, evaluate_full(workdir), flush=True)
    return 0
  report = summarize(args.root)
  if not report:
    print(f"no finished runs under {args.root}", file=sys.stderr)
    return 1
  writers.write_json(args.out / f"{args.name}_results.json", report)
  plot(args.root, args.out, args.name)
  for g, arms in report.items():
    for arm, r in arms.items():
      per_seed = [round(100 * a, 2) for a in r["final_test_accuracy"]]
      mean = "-" if r["mean"] is None else f"{100 * r['mean']:.2f}"
      std = "-" if r["std"] is None else f"{100 * r['std']:.2f}"
      print(f"{g:10s} {arm:12s} n={len(r['seeds'])} test {mean} +- {std}  per seed {per_seed}"
            + "".join(f"  (seed {k} unfinished: {100 * u['test_accuracy']:.2f} at epoch "
                      f"{u['epoch']:.1f})" for k, u in r["unfinished"].items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
