"""Mean +- std over seeds of the final eval metrics of `<arm>_seed<k>` workdirs.

  python launch/summarize.py runs/jdl/sample [--metric accuracy]

Prints one Markdown row per arm (the workdir name without `_seed<k>`).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import sys

import numpy as np


def collect(root: pathlib.Path, metric: str) -> dict[str, list[float]]:
  arms: dict[str, list[float]] = collections.defaultdict(list)
  for summary in sorted(root.glob("*_seed*/summary.json")):
    arm = re.sub(r"_seed\d+$", "", summary.parent.name)
    data = json.loads(summary.read_text())
    if "eval" in data:
      arms[arm].append(float(data["eval"][metric]))
  return dict(arms)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("root", type=pathlib.Path)
  p.add_argument("--metric", default="accuracy")
  args = p.parse_args()
  arms = collect(args.root, args.metric)
  if not arms:
    print(f"no finished runs under {args.root}", file=sys.stderr)
    return 1
  print(f"| arm | runs | {args.metric} mean +- std | per seed |")
  print("|---|---|---|---|")
  for arm, values in sorted(arms.items()):
    v = np.asarray(values) * (100 if args.metric == "accuracy" else 1)
    print(f"| {arm} | {len(v)} | {v.mean():.2f} +- {v.std(ddof=1) if len(v) > 1 else 0:.2f} | "
          + ", ".join(f"{x:.2f}" for x in v) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
