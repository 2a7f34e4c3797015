"""Run (or print) a grid of jaxcomp runs: one workdir per combination of overrides.

  python launch/sweep.py --config configs/jpeg_dl.py:variant=cifar10 \
      --workdir-root runs/jpeg_dl --grid seed=0,1,2 --grid model.jpeg_layer=False,True [--dry-run]

Each combination runs `python -m jaxcomp.main` in turn (a finished run is
skipped: its workdir has summary.json; an interrupted one resumes). Use
`--launcher "launch/tpu_vm.sh --name X --zone Z"` to send each run to a TPU VM.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import shlex
import subprocess
import sys


def combinations(grid: list[str]) -> list[dict[str, str]]:
  """["a=1,2", "b=x"] -> [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]."""
  axes = []
  for item in grid:
    if "=" not in item:
      raise SystemExit(f"--grid {item!r} must be key=v1,v2,...")
    key, values = item.split("=", 1)
    axes.append([(key, v) for v in values.split(",")])
  return [dict(c) for c in itertools.product(*axes)]


def commands(args: argparse.Namespace) -> list[tuple[pathlib.Path, list[str]]]:
  out = []
  for combo in combinations(args.grid):
    name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in combo.items()) or "run"
    workdir = pathlib.Path(args.workdir_root) / name
    overrides = [f"--config.{k}={v}" for k, v in combo.items()]
    if args.launcher:
      cmd = [*shlex.split(args.launcher), "--config", args.config, "--workdir", str(workdir),
             *overrides]
    else:
      cmd = [sys.executable, "-m", "jaxcomp.main", f"--config={args.config}",
             f"--workdir={workdir}", *overrides]
    out.append((workdir, cmd))
  return out


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True)
  p.add_argument("--workdir-root", required=True)
  p.add_argument("--grid", action="append", default=[], help="key=v1,v2 (repeatable)")
  p.add_argument("--launcher", default="", help="command prefix, e.g. launch/tpu_vm.sh ...")
  p.add_argument("--dry-run", action="store_true")
  args = p.parse_args()
  for workdir, cmd in commands(args):
    if args.dry_run:
      print(shlex.join(cmd))
      continue
    if (workdir / "summary.json").exists() and not args.launcher:
      print(f"skip {workdir} (finished)")
      continue
    print(f"run {workdir}", flush=True)
    subprocess.run(cmd, check=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
