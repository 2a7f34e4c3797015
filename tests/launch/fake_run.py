"""Stands in for a launcher in the sweep tests (no training): takes
`--config C --workdir W [--config.*]`, logs the call, and by FAKE_RUN_MODES
(JSON: workdir name -> mode) finishes (writes the summary.json jaxcomp.main
would, accuracy 0.5 + seed / 100), fails (exit 1), is preempted (summary with
"preempted", exit 143) or returns at once like an asynchronous submission."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys

if __name__ == "__main__":
  p = argparse.ArgumentParser()
  p.add_argument("--config")
  p.add_argument("--workdir", type=pathlib.Path)
  args, overrides = p.parse_known_args()
  with open(os.environ["FAKE_RUN_LOG"], "a") as log:
    log.write(json.dumps([args.config, str(args.workdir), *overrides]) + "\n")
  mode = json.loads(os.environ.get("FAKE_RUN_MODES", "{}")).get(args.workdir.name, "finish")
  print(f"fake run {args.workdir.name}: {mode}")
  if mode == "fail":
    sys.exit(1)
  if mode == "submit":
    sys.exit(0)
  seed = int(re.search(r"seed=(\d+)", args.config).group(1))
  args.workdir.mkdir(parents=True, exist_ok=True)
  summary = {"preempted": mode == "preempt", "final_step": 10,
             "steady_images_per_s": 100.0 * (seed + 1)}
  if mode == "finish":
    summary["eval"] = {"accuracy": 0.5 + seed / 100, "loss": 1.0}
  (args.workdir / "summary.json").write_text(json.dumps(summary))
  sys.exit(143 if mode == "preempt" else 0)
