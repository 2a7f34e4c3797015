"""One table (CSV + Markdown) and the grid's plot from every run's summary.json.

  python launch/summarize.py ROOT [--metric accuracy ...] [--out PREFIX]

ROOT is a sweep's --workdir-root (its sweep.json names the axes, metrics and
plot: launch/grid.py), or a folder of `<arm>_seed<k>` workdirs
(launch/jpeg_dl_experiment.sh). Runs are grouped by every axis but the seed;
each metric (summary.json's "eval" entry, else its top-level one, e.g.
"steady_images_per_s") is given as mean +- std (ddof 1) over the finished runs
of the group, with the value of each. Accuracies are shown in percent in the
Markdown; the CSV keeps the raw values. Writes PREFIX.csv, PREFIX.md and, when
the grid has a plot, PREFIX.png (PREFIX defaults to ROOT/results); prints the
Markdown. Unfinished runs count in "runs" (finished / all) and nowhere else.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import pathlib
import re
import sys
from typing import Any

import numpy as np

import grid as grid_lib
import sweep
from jaxcomp import writers

Record = tuple[dict[str, str], dict[str, Any] | None]   # (axis -> value, finished summary)


def collect(root: pathlib.Path) -> tuple[list[str], list[str], dict[str, str], list[Record]]:
  """(axes, metrics, plot, records) of the grid under `root`."""
  manifest = root / "sweep.json"
  if manifest.exists():
    grid = grid_lib.Grid.from_json(json.loads(manifest.read_text())["grid"])
    records = [(run.params, sweep.finished_summary(root / run.name)) for run in grid.runs()]
    return [a for a, _ in grid.axes], grid.metrics, grid.plot, records
  records = []
  for workdir in sorted(p for p in root.glob("*_seed*") if p.is_dir()):
    arm, seed = re.fullmatch(r"(.*)_seed(\d+)", workdir.name).groups()
    records.append(({"arm": arm, "seed": seed}, sweep.finished_summary(workdir)))
  return ["arm", "seed"], ["accuracy"], {"kind": "bar", "x": "arm"}, records


def metric_value(summary: dict[str, Any], metric: str) -> float:
  if metric in summary.get("eval", {}):
    return float(summary["eval"][metric])
  if metric in summary:
    return float(summary[metric])
  raise KeyError(f"metric {metric!r} is in neither summary.json's 'eval' "
                 f"({sorted(summary.get('eval', {}))}) nor its top level")


def table(axes: list[str], metrics: list[str], records: list[Record]) -> list[dict[str, Any]]:
  """One row per group of runs equal on every non-seed axis, in grid order."""
  keys = [a for a in axes if not grid_lib.is_seed(a)]
  groups: dict[tuple[str, ...], list[Record]] = {}
  for params, summary in records:
    groups.setdefault(tuple(params[k] for k in keys), []).append((params, summary))
  rows = []
  for group, members in groups.items():
    done = [s for _, s in members if s is not None]
    row: dict[str, Any] = dict(zip(keys, group))
    row["finished"], row["runs"] = len(done), len(members)
    for m in metrics:
      v = np.asarray([metric_value(s, m) for s in done], np.float64)
      row[m] = v.tolist()
      row[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
      row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0 if len(v) else float("nan")
    rows.append(row)
  return rows


def _scale(metric: str) -> tuple[float, str]:
  return (100.0, f"{metric} (%)") if "accuracy" in metric else (1.0, metric)


def to_csv(axes: list[str], metrics: list[str], rows: list[dict[str, Any]]) -> str:
  keys = [a for a in axes if not grid_lib.is_seed(a)]
  out = io.StringIO()
  w = csv.writer(out, lineterminator="\n")
  w.writerow([*keys, "finished", "runs",
              *[f"{m}_{s}" for m in metrics for s in ("mean", "std", "values")]])
  for r in rows:
    w.writerow([*(r[k] for k in keys), r["finished"], r["runs"],
                *[x for m in metrics for x in (f"{r[f'{m}_mean']:.6g}", f"{r[f'{m}_std']:.6g}",
                                                ";".join(f"{v:.6g}" for v in r[m]))]])
  return out.getvalue()


def to_markdown(axes: list[str], metrics: list[str], rows: list[dict[str, Any]]) -> str:
  keys = [a for a in axes if not grid_lib.is_seed(a)]
  head = [*keys, "runs"]
  for m in metrics:
    head += [f"{_scale(m)[1]} mean +- std", "per run"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [*(str(r[k]) for k in keys), f"{r['finished']}/{r['runs']}"]
    for m in metrics:
      s = _scale(m)[0]
      cells += [f"{s * r[f'{m}_mean']:.2f} +- {s * r[f'{m}_std']:.2f}" if r[m] else "-",
                ", ".join(f"{s * v:.2f}" for v in r[m])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(spec: dict[str, str], metrics: list[str], rows: list[dict[str, Any]],
         path: pathlib.Path) -> None:
  """The grid's figure: grouped bars (x an axis) or lines (x an axis or a metric),
  one series per `hue` value, error bars = std over seeds."""
  plt = writers.pyplot()
  x, hue, y = spec["x"], spec.get("hue"), spec.get("y", metrics[0])
  ys, ylabel = _scale(y)
  series: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    if r[y]:
      series.setdefault(str(r[hue]) if hue else y, []).append(r)
  fig, ax = plt.subplots(figsize=(7, 4))
  if spec.get("kind", "bar") == "bar":
    cats = list(dict.fromkeys(str(r[x]) for r in rows))
    width = 0.8 / max(len(series), 1)
    for i, (label, rs) in enumerate(series.items()):
      pos = [cats.index(str(r[x])) + (i - (len(series) - 1) / 2) * width for r in rs]
      ax.bar(pos, [ys * r[f"{y}_mean"] for r in rs], width, yerr=[ys * r[f"{y}_std"] for r in rs],
             label=label, capsize=3)
    ax.set_xticks(range(len(cats)), cats, rotation=15)
    lo = min(ys * (r[f"{y}_mean"] - r[f"{y}_std"]) for rs in series.values() for r in rs)
    hi = max(ys * (r[f"{y}_mean"] + r[f"{y}_std"]) for rs in series.values() for r in rs)
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
  else:
    for label, rs in series.items():
      xs = [r[f"{x}_mean"] if f"{x}_mean" in r else float(r[x]) for r in rs]
      order = np.argsort(xs)
      ax.errorbar(np.asarray(xs)[order], [ys * rs[i][f"{y}_mean"] for i in order],
                  yerr=[ys * rs[i][f"{y}_std"] for i in order], marker="o", capsize=3, label=label)
  ax.set_xlabel(x)
  ax.set_ylabel(ylabel)
  if hue:
    ax.legend(title=hue)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  writers.save_figure(fig, path, dpi=120)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("root", type=pathlib.Path)
  p.add_argument("--metric", action="append", default=None,
                 help="summary.json key (repeatable); default: the grid's metrics")
  p.add_argument("--out", type=pathlib.Path, default=None, help="PREFIX of .csv/.md/.png")
  args = p.parse_args()
  axes, metrics, spec, records = collect(args.root)
  metrics = args.metric or metrics
  if not any(s is not None for _, s in records):
    print(f"no finished runs under {args.root}", file=sys.stderr)
    return 1
  try:
    rows = table(axes, metrics, records)
  except KeyError as e:
    print(f"error: {e.args[0]}", file=sys.stderr)
    return 2
  out = args.out or args.root / "results"
  markdown = to_markdown(axes, metrics, rows)
  writers.write_atomic(out.parent / (out.name + ".csv"), to_csv(axes, metrics, rows))
  writers.write_atomic(out.parent / (out.name + ".md"), markdown)
  if spec:
    plot(spec, metrics, rows, out.parent / (out.name + ".png"))
  print(markdown, end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())
