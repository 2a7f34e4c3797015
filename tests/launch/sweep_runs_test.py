"""launch/sweep.py and summarize.py on real runs of jaxcomp.main (tfds mock data,
a few steps each): a run killed after its first checkpoint resumes, finished runs
are skipped when the sweep runs again, and the table averages the seeds. The
slow test runs the whole JPEG-DL ImageNet grid (launch/grids/jpeg_dl_imagenet.toml)
this way."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys

import numpy as np
import pytest

import grid as grid_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]

PY = sys.executable
MOCK_MAIN = f"{shlex.quote(PY)} {ROOT}/tests/launch/mock_tfds_main.py"
# A few steps of batch 8 on 16 mock examples per split, one CPU device.
TINY = ["--config.train.num_steps=2", "--config.train.batch_size=8", "--config.eval.batch_size=8"]
ENV = {**os.environ, "MOCK_EXAMPLES": "16", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _kill_after_first_checkpoint(root, run: grid_lib.Run, extra: list[str]) -> None:
  """Leaves what a run killed after its step-1 checkpoint leaves: no summary.json."""
  workdir = root / run.name
  subprocess.run([*shlex.split(MOCK_MAIN), "--config", run.config, "--workdir", str(workdir),
                  *run.overrides, *extra, "--config.train.num_steps=1"], env=ENV, check=True,
                 capture_output=True)
  (workdir / "summary.json").unlink()


def _sweep_twice_and_summarize(root, grid_args: list[str], extra: list[str], runs) -> str:
  args = [PY, "launch/sweep.py", *grid_args, "--workdir-root", str(root), "--launcher",
          MOCK_MAIN, "--parallel", "2", *extra]
  first = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True)
  assert first.returncode == 0, first.stdout + first.stderr
  assert f"{len(runs)} runs: 0 skipped, {len(runs)} finished" in first.stdout
  summaries = {r.name: json.loads((root / r.name / "summary.json").read_text()) for r in runs}
  assert summaries[runs[0].name]["resumed_from_step"] == 1       # the killed run resumed
  assert all(s["resumed_from_step"] == 0 for s in list(summaries.values())[1:])
  assert all(s["final_step"] == 2 and not s["preempted"] for s in summaries.values())
  again = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
  assert again.stdout.count("skip") == len(runs) and "] run " not in again.stdout
  out = subprocess.run([PY, "launch/summarize.py", str(root)], cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout
  return out, summaries


@pytest.mark.slow   # real training runs (~40 s); the sweeps notebook runs a real grid in the default suite
def test_tiny_grid_of_real_runs_resumes_skips_and_tabulates(tmp_path):
  root = tmp_path / "runs"
  extra = [*TINY, "--config.model.name=convnet_c2_32", "--config.train.progress_bar=False"]
  grid_args = ["--config", "configs/cifar10.py:variant=tfds", "--grid", "config.seed=0,1"]
  runs = grid_lib.from_cli("configs/cifar10.py:variant=tfds", ["config.seed=0,1"]).runs()
  _kill_after_first_checkpoint(root, runs[0], extra)
  out, summaries = _sweep_twice_and_summarize(root, grid_args, extra, runs)
  acc = 100 * np.asarray([summaries[r.name]["eval"]["accuracy"] for r in runs])
  assert out.splitlines()[2] == (f"| 2/2 | {acc.mean():.2f} +- {acc.std(ddof=1):.2f} | "
                                 f"{acc[0]:.2f}, {acc[1]:.2f} |")


@pytest.mark.slow
def test_jpeg_dl_imagenet_grid_end_to_end_on_mock_data(tmp_path):
  # 3 backbones x {baseline, JPEG-DL 1 round, 5 rounds} x seeds 0, 1 at 32x32.
  root = tmp_path / "imagenet"
  grid_file = ROOT / "launch" / "grids" / "jpeg_dl_imagenet.toml"
  runs = grid_lib.with_cli_axes(grid_lib.from_file(grid_file), ["seed=0,1"]).runs()
  extra = [*TINY, "--config.data.image_size=32"]
  _kill_after_first_checkpoint(root, runs[0], extra)
  out, summaries = _sweep_twice_and_summarize(
      root, ["--grid-file", str(grid_file), "--grid", "seed=0,1"], extra, runs)
  lines = out.splitlines()
  assert lines[0] == "| variant | arm | runs | accuracy (%) mean +- std | per run |"
  assert len(lines) == 2 + 9 and all("| 2/2 |" in line for line in lines[2:])
  assert lines[2].startswith("| imagenet_squeezenet1_1 | baseline |")
  assert lines[-1].startswith("| imagenet_resnet34 | jpeg_dl_r5 |")
  assert (root / "results.png").exists() and (root / "results.csv").exists()
  configs = {r.name: json.loads((root / r.name / "config.json").read_text()) for r in runs}
  r5 = configs["variant=imagenet_resnet34_arm=jpeg_dl_r5_seed=1"]
  assert (r5["model"]["name"], r5["model"]["jpeg_layer"], r5["model"]["jpeg"]["rounds"],
          r5["seed"]) == ("resnet34", True, 5, 1)
  assert not configs["variant=imagenet_resnet18_arm=baseline_seed=0"]["model"]["jpeg_layer"]
