"""`python -m jaxcomp.main` end to end on real data (the packaged CIFAR-10 sample)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "jaxcomp.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


# slow: three subprocess runs of jaxcomp.main (~110 s); the trainer's resume is in train_test.py
@pytest.mark.slow
def test_main_trains_evaluates_and_resumes_on_real_data(tmp_path):
  proc = _run("--config=configs/cifar10.py:runlocal=True", f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["final_step"] == 4 and summary["eval"]["num_examples"] == 256
  assert 0.0 <= summary["eval"]["accuracy"] <= 1.0
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["data"]["name"] == "cifar10_sample"
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {"train", "eval"} <= {r["split"] for r in rows}
  assert any((tmp_path / "tensorboard").iterdir())
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
  # Again on the same workdir with more steps: it resumes from step 4.
  proc = _run("--config=configs/cifar10.py:runlocal=True", f"--workdir={tmp_path}",
              "--config.train.num_steps=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["resumed_from_step"] == 4 and summary["final_step"] == 6
  # mode=evaluate restores the latest checkpoint and evaluates only.
  proc = _run("--config=configs/cifar10.py:runlocal=True", f"--workdir={tmp_path}",
              "--config.mode=evaluate", "--config.train.num_steps=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "accuracy=" in proc.stdout
