"""launch/grid.py, sweep.py and summarize.py without training: exact commands, grid
files, the tracking of finished / failed / preempted / submitted runs through a
fake launcher, and the table's numbers against hand computations."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

import grid as grid_lib
import summarize

ROOT = pathlib.Path(__file__).resolve().parents[2]

PY = sys.executable
FAKE = f"{PY} {ROOT}/tests/launch/fake_run.py"
IMAGENET = ROOT / "launch" / "grids" / "jpeg_dl_imagenet.toml"


def _sweep(*args: str, env: dict | None = None, check: bool = True):
  return subprocess.run([PY, "launch/sweep.py", *args], cwd=ROOT, capture_output=True,
                        text=True, check=check, env=env)


def test_dry_run_prints_one_command_per_combination():
  out = _sweep("--config", "configs/cifar10.py:variant=sample", "--workdir-root", "/tmp/sw",
               "--grid", "config.seed=0,1,2", "--grid", "model=resnet20,resnet32",
               "--dry-run", "--config.train.epochs=1").stdout.splitlines()
  assert len(out) == 6
  assert out[-1] == shlex.join([
      PY, "-m", "jaxcomp.main", "--config=configs/cifar10.py:variant=sample,model=resnet32",
      "--workdir=/tmp/sw/seed=2_model=resnet32", "--config.seed=2", "--config.train.epochs=1"])


def test_dry_run_through_cluster_launchers():
  out = _sweep("--config", "configs/jpeg_dl.py", "--workdir-root", "/shared/jdl", "--grid",
               "seed=0,1", "--launcher", "tpu --name jdl-{index} --zone z --create --delete",
               "--dry-run").stdout.splitlines()
  assert out == [f"bash {ROOT}/launch/tpu_vm.sh --name jdl-{i} --zone z --create --delete "
                 f"--config configs/jpeg_dl.py:seed={i} --workdir /shared/jdl/seed={i}"
                 for i in (0, 1)]
  out = _sweep("--grid-file", str(IMAGENET), "--workdir-root", "/shared/jdl", "--grid", "seed=0",
               "--grid", "arm=jpeg_dl_r5", "--launcher", "slurm --nodes 2 --wait", "--dry-run",
               "--config.data.data_dir=/shared/tfds").stdout.splitlines()
  assert out[0] == (
      f"bash {ROOT}/launch/slurm.sh --nodes 2 --wait --config "
      "configs/jpeg_dl.py:variant=imagenet_squeezenet1_1,rounds=5,seed=0 --workdir "
      "/shared/jdl/variant=imagenet_squeezenet1_1_arm=jpeg_dl_r5_seed=0 "
      "--config.train.progress_bar=False --config.data.data_dir=/shared/tfds")
  assert len(out) == 3


def test_the_imagenet_grid_file():
  grid = grid_lib.from_file(IMAGENET)
  runs = grid.runs()
  assert len(runs) == 27 and grid.metrics == ["accuracy"]
  assert grid.plot == {"kind": "bar", "x": "variant", "hue": "arm"}
  assert runs[0] == grid_lib.Run(
      "variant=imagenet_squeezenet1_1_arm=baseline_seed=0",
      {"variant": "imagenet_squeezenet1_1", "arm": "baseline", "seed": "0"},
      "configs/jpeg_dl.py:variant=imagenet_squeezenet1_1,jpeg_layer=False,seed=0",
      ("--config.train.progress_bar=False",))
  assert runs[-1].config == "configs/jpeg_dl.py:variant=imagenet_resnet34,rounds=5,seed=2"
  sub = grid_lib.with_cli_axes(grid, ["arm=jpeg_dl_r1", "seed=4"]).runs()
  assert [r.config.split(":")[1] for r in sub] == [
      f"variant=imagenet_{m},rounds=1,seed=4" for m in ("squeezenet1_1", "resnet18", "resnet34")]
  with pytest.raises(ValueError, match=r"\['r9'\] not among"):
    grid_lib.with_cli_axes(grid, ["arm=r9"])


def test_grid_file_errors(tmp_path):
  bad = tmp_path / "g.toml"
  bad.write_text('axes = {seed = [0]}\n')
  with pytest.raises(ValueError, match="needs `config`"):
    grid_lib.from_file(bad)
  bad.write_text('config = "c.py"\nplot = {kind = "pie", x = "seed"}\n')
  with pytest.raises(ValueError, match="plot.kind must be"):
    grid_lib.from_file(bad)
  with pytest.raises(ValueError, match="end in the same name"):
    grid_lib.from_cli("c.py", ["config.seed=0", "seed=1"]).runs()
  proc = _sweep("--config", "c.py", "--grid", "seed", "--workdir-root", "x", check=False)
  assert proc.returncode == 2 and "must be key=v1,v2" in proc.stderr


def test_tracks_every_state_then_skips_the_finished_and_relaunches_the_rest(tmp_path):
  root = tmp_path / "runs"
  log = tmp_path / "calls.jsonl"
  modes = {"seed=1_arm=a": "fail", "seed=1_arm=b": "preempt", "seed=2_arm=a": "submit"}
  env = {**os.environ, "FAKE_RUN_LOG": str(log), "FAKE_RUN_MODES": json.dumps(modes)}
  args = ("--config", "c.py", "--grid", "seed=0,1,2", "--grid", "config.arm=a,b",
          "--workdir-root", str(root), "--launcher", FAKE, "--parallel", "2")
  proc = _sweep(*args, env=env, check=False)
  assert proc.returncode == 1
  assert "6 runs: 0 skipped, 3 finished, 1 submitted, 2 failed or preempted" in proc.stdout
  manifest = json.loads((root / "sweep.json").read_text())
  states = {r["name"]: (r["state"], r["returncode"]) for r in manifest["runs"]}
  assert states == {"seed=0_arm=a": ("finished", 0), "seed=0_arm=b": ("finished", 0),
                    "seed=1_arm=a": ("failed", 1), "seed=1_arm=b": ("preempted", 143),
                    "seed=2_arm=a": ("submitted", 0), "seed=2_arm=b": ("finished", 0)}
  assert "fake run seed=1_arm=a: fail" in (root / "logs" / "seed=1_arm=a.log").read_text()
  status = _sweep(*args, "--status", env=env).stdout.splitlines()
  assert "failed    seed=1_arm=a" in status and "preempted seed=1_arm=b" in status
  assert status[-1] == "1 failed, 3 finished, 1 preempted, 1 submitted"

  env["FAKE_RUN_MODES"] = "{}"   # the failure is fixed; the preempted slice came back
  log.unlink()
  proc = _sweep(*args, env=env)
  assert "6 runs: 3 skipped, 3 finished, 0 submitted, 0 failed or preempted" in proc.stdout
  calls = sorted(json.loads(line) for line in log.read_text().splitlines())
  assert calls == [[f"c.py:seed={s}", str(root / f"seed={s}_arm={a}"), f"--config.arm={a}"]
                   for s, a in (("1", "a"), ("1", "b"), ("2", "a"))]

  out = subprocess.run([PY, "launch/summarize.py", str(root), "--metric", "accuracy",
                        "--metric", "steady_images_per_s"], cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout
  # accuracy 0.5 + seed / 100 over seeds 0, 1, 2: 51.00 +- 1.00 (%); images/s 100 (seed + 1).
  assert out.splitlines()[2] == ("| a | 3/3 | 51.00 +- 1.00 | 50.00, 51.00, 52.00 | "
                                 "200.00 +- 100.00 | 100.00, 200.00, 300.00 |")


def _write_grid(root, grid: grid_lib.Grid, values: dict[str, float | None]) -> None:
  """A sweep root by hand: the manifest and, per run name, a finished summary (value)
  or nothing (None)."""
  root.mkdir(parents=True)
  (root / "sweep.json").write_text(json.dumps({"grid": grid.to_json(), "runs": []}))
  for run in grid.runs():
    if values.get(run.name) is not None:
      (root / run.name).mkdir()
      (root / run.name / "summary.json").write_text(json.dumps(
          {"preempted": False, "eval": {"accuracy": values[run.name]}}))


def test_summarize_mean_std_over_seeds_csv_markdown_and_plot(tmp_path):
  grid = grid_lib.from_cli("c.py", ["variant=r18,r34", "arm=base,jdl", "seed=0,1,2"])
  grid.plot = {"kind": "bar", "x": "variant", "hue": "arm"}
  by_group = {("r18", "base"): (0.70, 0.72, 0.74), ("r18", "jdl"): (0.71, 0.75, None),
              ("r34", "base"): (0.80, None, None), ("r34", "jdl"): (None,) * 3}
  values = {f"variant={v}_arm={a}_seed={s}": x
            for (v, a), xs in by_group.items() for s, x in enumerate(xs)}
  root = tmp_path / "g"
  _write_grid(root, grid, values)
  out = subprocess.run([PY, "launch/summarize.py", str(root)], cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout
  # Hand values: mean(70, 72, 74) = 72, sample std = 2; mean(71, 75) = 73, std = 2.83
  # (sqrt(8)); one run: std 0; none finished: "-".
  assert out == (
      "| variant | arm | runs | accuracy (%) mean +- std | per run |\n"
      "|---|---|---|---|---|\n"
      "| r18 | base | 3/3 | 72.00 +- 2.00 | 70.00, 72.00, 74.00 |\n"
      "| r18 | jdl | 2/3 | 73.00 +- 2.83 | 71.00, 75.00 |\n"
      "| r34 | base | 1/3 | 80.00 +- 0.00 | 80.00 |\n"
      "| r34 | jdl | 0/3 | - |  |\n")
  assert (root / "results.md").read_text() == out
  with open(root / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert rows[1] == {"variant": "r18", "arm": "jdl", "finished": "2", "runs": "3",
                     "accuracy_mean": "0.73", "accuracy_std": "0.0282843",
                     "accuracy_values": "0.71;0.75"}
  assert (root / "results.png").stat().st_size > 10_000


def test_summarize_line_plot_and_the_experiment_script_layout(tmp_path):
  grid = grid_lib.from_cli("c.py", ["config.model.jpeg.rounds=1,5", "seed=0,1"])
  grid.plot = {"kind": "line", "x": "config.model.jpeg.rounds"}
  root = tmp_path / "g"
  _write_grid(root, grid, {r.name: 0.6 for r in grid.runs()})
  subprocess.run([PY, "launch/summarize.py", str(root), "--out", str(tmp_path / "t")], cwd=ROOT,
                 check=True, capture_output=True)
  assert (tmp_path / "t.png").exists() and (tmp_path / "t.csv").exists()
  # launch/jpeg_dl_experiment.sh's layout: <arm>_seed<k>, no sweep.json.
  legacy = tmp_path / "legacy"
  for arm, seed, acc in (("baseline", 0, 0.9), ("baseline", 1, 0.92), ("jpeg_dl", 0, 0.93)):
    (legacy / f"{arm}_seed{seed}").mkdir(parents=True)
    (legacy / f"{arm}_seed{seed}" / "summary.json").write_text(
        json.dumps({"eval": {"accuracy": acc}}))
  axes, metrics, plot, records = summarize.collect(legacy)
  rows = summarize.table(axes, metrics, records)
  assert [(r["arm"], r["finished"], round(r["accuracy_mean"], 6)) for r in rows] == [
      ("baseline", 2, 0.91), ("jpeg_dl", 1, 0.93)]
  proc = subprocess.run([PY, "launch/summarize.py", str(tmp_path / "empty")], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 1 and "no finished runs" in proc.stderr
