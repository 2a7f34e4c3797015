"""Launch scripts: their --dry-run output is the command a cluster would run."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tpu_vm_dry_run_runs_main_on_all_workers():
  out = subprocess.run(
      ["bash", "launch/tpu_vm.sh", "--name", "t1", "--zone", "us-central2-b", "--create",
       "--config", "configs/cifar10.py:variant=tfds", "--workdir", "/mnt/b/run",
       "--data-dir", "gs://b/tfds", "--dry-run", "--config.train.epochs=3"],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout
  lines = out.strip().splitlines()
  assert lines[0].startswith("gcloud compute tpus tpu-vm create t1")
  assert "--worker=all" in lines[-1]
  for part in ("jaxcomp.main", "configs/cifar10.py:variant=tfds", "--workdir=/mnt/b/run",
               "--config.data.data_dir=gs://b/tfds", "--config.train.epochs=3"):
    assert part in lines[-1].replace("\\", "")


def test_tpu_vm_requires_arguments():
  proc = subprocess.run(["bash", "launch/tpu_vm.sh", "--dry-run"], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 2 and "--name is required" in proc.stderr


def test_sweep_dry_run_prints_one_command_per_combination():
  out = subprocess.run(
      [sys.executable, "launch/sweep.py", "--config", "configs/cifar10.py",
       "--workdir-root", "/tmp/sweep", "--grid", "seed=0,1,2",
       "--grid", "model.jpeg_layer=False,True", "--dry-run"],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip().splitlines()
  assert len(out) == 6
  assert all("-m jaxcomp.main --config=configs/cifar10.py" in line for line in out)
  assert "--config.seed=2 --config.model.jpeg_layer=True" in out[-1]
