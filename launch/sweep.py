"""Run a grid of jaxcomp runs, one workdir each, through a launcher, and track them.

  python launch/sweep.py --config configs/jpeg_dl.py:variant=cifar10 --workdir-root runs/jdl \\
      --grid seed=0,1,2 --grid jpeg_layer=False,True [--parallel 2] [--dry-run]
  python launch/sweep.py --grid-file launch/grids/jpeg_dl_imagenet.toml \\
      --workdir-root /shared/runs/jdl_imagenet --parallel 9 \\
      --launcher "slurm --nodes 4 --gpus-per-node 8 --wait" --config.data.data_dir=/shared/tfds
  python launch/sweep.py --grid-file launch/grids/jpeg_dl_imagenet.toml --workdir-root ... --status
  python launch/sweep.py --grid-file launch/grids/jpeg_dl_imagenet.toml --estimate --device a100

The grid (`launch/grid.py`): `--grid key=v1,v2` (a config argument; "config.a.b"
for an override) or a TOML `--grid-file`. Extra `--config.*` flags go to every run.
Launchers: "local" (default: `python -m jaxcomp.main` on this machine, --parallel
at a time) or a command taking `--config C --workdir W --config.*`: "slurm ...",
"tpu ..." and "multihost ..." name launch/slurm.sh, tpu_vm.sh and multihost.sh;
"{index}" and "{name}" in it become the run's index and name (one TPU per run:
"tpu --name jdl-{index} --zone Z --create --spot --delete").

Tracking: `<root>/sweep.json` holds the grid and each run's state, updated as
runs end: finished (its summary.json, not preempted), preempted or partial (a
checkpoint; resumed when launched again), failed (the launcher's exit status;
its output is in `<root>/logs/<name>.log`), submitted (the launcher returned
before the run ended, e.g. sbatch without --wait), pending. Running the same
command again skips the finished runs and resumes or retries the others;
--status only reports. `python launch/summarize.py <root>` makes the table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import shlex
import subprocess
import sys
import threading
from typing import Any

import grid as grid_lib
from jaxcomp import writers

LAUNCH_DIR = pathlib.Path(__file__).resolve().parent
LAUNCHERS = {"slurm": "slurm.sh", "tpu": "tpu_vm.sh", "multihost": "multihost.sh"}
PREEMPTED = 143   # jaxcomp.main's exit status after a SIGTERM checkpoint


def finished_summary(workdir: pathlib.Path) -> dict[str, Any] | None:
  """The run's summary.json if it ran to the end (not preempted), else None."""
  try:
    summary = json.loads((workdir / "summary.json").read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None
  return None if summary.get("preempted") else summary


def workdir_state(workdir: pathlib.Path) -> str:
  """"finished" | "preempted" (summary says so) | "partial" (a checkpoint) | "pending"."""
  if finished_summary(workdir) is not None:
    return "finished"
  if (workdir / "summary.json").exists():
    return "preempted"
  ckpts = workdir / "checkpoints"
  return "partial" if ckpts.is_dir() and any(ckpts.iterdir()) else "pending"


def launcher_prefix(launcher: str, index: int, name: str) -> list[str]:
  """The launcher's words, its short name resolved and {index} / {name} filled in."""
  words = [w.replace("{index}", str(index)).replace("{name}", name)
           for w in shlex.split(launcher)]
  if words and words[0] in LAUNCHERS:
    words = ["bash", str(LAUNCH_DIR / LAUNCHERS[words[0]]), *words[1:]]
  return words


def command(run: grid_lib.Run, index: int, workdir: pathlib.Path, args: argparse.Namespace,
            extra: list[str]) -> list[str]:
  """The command that runs `run` in `workdir`."""
  if args.launcher == "local":
    return [*shlex.split(args.python), "-m", "jaxcomp.main", f"--config={run.config}",
            f"--workdir={workdir}", *run.overrides, *extra]
  return [*launcher_prefix(args.launcher, index, run.name), "--config", run.config,
          "--workdir", str(workdir), *run.overrides, *extra]


class Tracker:
  """`<root>/sweep.json`: the grid and every run's state, written after each change."""

  def __init__(self, root: pathlib.Path, grid: grid_lib.Grid):
    self.path = root / "sweep.json"
    self.grid = grid
    self.runs: dict[str, dict[str, Any]] = {}
    if self.path.exists():
      self.runs = {r["name"]: r for r in json.loads(self.path.read_text())["runs"]}
    self._lock = threading.Lock()

  def update(self, name: str, **fields: Any) -> None:
    with self._lock:
      self.runs.setdefault(name, {"name": name}).update(fields)
      writers.write_json(self.path, {"grid": self.grid.to_json(),
                                     "runs": list(self.runs.values())})


def launch(index: int, run: grid_lib.Run, cmd: list[str], workdir: pathlib.Path,
           log: pathlib.Path, tracker: Tracker, env: dict[str, str]) -> str:
  """Runs one command, its output to `log`; returns and records the run's state."""
  tracker.update(run.name, state="running", command=cmd, log=str(log), returncode=None)
  log.parent.mkdir(parents=True, exist_ok=True)
  with open(log, "ab") as out:
    rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
  if rc == 0:
    state = "finished" if workdir_state(workdir) == "finished" else "submitted"
  else:
    state = "preempted" if rc == PREEMPTED else "failed"
  tracker.update(run.name, state=state, returncode=rc)
  print(f"[{index}] {state} {run.name}" + (f" (exit {rc}; log {log})" if rc else ""),
        flush=True)
  return state


def report_status(root: pathlib.Path, runs: list[grid_lib.Run]) -> None:
  """Prints each run's state: its workdir's, or, with nothing there yet, the
  recorded one (failed, submitted, running)."""
  recorded = {}
  if (root / "sweep.json").exists():
    recorded = {r["name"]: r for r in json.loads((root / "sweep.json").read_text())["runs"]}
  counts: dict[str, int] = {}
  for run in runs:
    state = workdir_state(root / run.name)
    if state == "pending" and recorded.get(run.name, {}).get("state") in (
        "failed", "submitted", "running"):
      state = recorded[run.name]["state"]
    counts[state] = counts.get(state, 0) + 1
    print(f"{state:9s} {run.name}")
  print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", help="config file[:args] (with --grid)")
  p.add_argument("--grid", action="append", default=[],
                 help="key=v1,v2 (repeatable); with --grid-file, replaces that axis")
  p.add_argument("--grid-file", help="a TOML grid (launch/grids/)")
  p.add_argument("--workdir-root", help="one workdir per run under it, and sweep.json")
  p.add_argument("--launcher", default="local",
                 help='"local", or a command prefix: "slurm ...", "tpu ...", "multihost ..."')
  p.add_argument("--python", default=sys.executable, help="the local launcher's interpreter")
  p.add_argument("--parallel", type=int, default=1, help="runs launched at a time")
  p.add_argument("--dry-run", action="store_true", help="print the commands")
  p.add_argument("--status", action="store_true", help="report each run's state")
  p.add_argument("--estimate", action="store_true", help="steps and accelerator-hours")
  p.add_argument("--device", default="a100", help="--estimate: device type (cost.PEAK_TFLOPS)")
  p.add_argument("--utilization", type=float, default=None,
                 help="--estimate: assumed fraction of the peak (default cost.UTILIZATION)")
  p.add_argument("--images-per-s", type=float, default=0.0,
                 help="--estimate: measured training images/s per device, instead")
  args, extra = p.parse_known_args()
  unknown = [e for e in extra if not e.startswith("--config.")]
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  try:
    if args.grid_file:
      grid = grid_lib.with_cli_axes(grid_lib.from_file(args.grid_file), args.grid)
    elif args.config:
      grid = grid_lib.from_cli(args.config, args.grid)
    else:
      p.error("--config (with --grid) or --grid-file is required")
    runs = grid.runs()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.estimate:
    import cost  # pylint: disable=g-import-not-at-top  (imports jax)
    cost.print_estimate(runs, extra, device=args.device, utilization=args.utilization,
                        images_per_s=args.images_per_s)
    return 0
  if not args.workdir_root:
    p.error("--workdir-root is required")
  root = pathlib.Path(args.workdir_root)
  if args.status:
    report_status(root, runs)
    return 0
  todo = []
  for index, run in enumerate(runs):
    workdir = root / run.name
    finished = workdir_state(workdir) == "finished"
    cmd = command(run, index, workdir, args, extra)
    if args.dry_run:
      print(f"# skip {run.name} (finished)" if finished else shlex.join(cmd))
    elif finished:
      print(f"[{index}] skip {run.name} (finished)", flush=True)
    else:
      todo.append((index, run, cmd, workdir))
  if args.dry_run or not todo:
    return 0
  tracker = Tracker(root, grid)
  for index, run in enumerate(runs):
    if run.name not in tracker.runs:
      tracker.update(run.name, params=run.params, workdir=str(root / run.name),
                     state=workdir_state(root / run.name))
  env = dict(os.environ)
  if args.launcher == "local" and args.parallel > 1:
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"   # runs share the accelerator
  with concurrent.futures.ThreadPoolExecutor(max(args.parallel, 1)) as pool:
    futures = []
    for index, run, cmd, workdir in todo:
      print(f"[{index}] run {run.name}", flush=True)
      futures.append(pool.submit(launch, index, run, cmd, workdir,
                                 root / "logs" / f"{run.name}.log", tracker, env))
    states = [f.result() for f in futures]
  failed = states.count("failed") + states.count("preempted")
  print(f"{len(runs)} runs: {len(runs) - len(todo)} skipped, "
        f"{states.count('finished')} finished, {states.count('submitted')} submitted, "
        f"{failed} failed or preempted")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
