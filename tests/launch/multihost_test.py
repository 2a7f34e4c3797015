"""launch/multihost.sh (hosts without a scheduler) and jaxcomp.parallel's reading of
the launchers' environment: exact commands, SIGTERM forwarding, and two real
processes on this machine joining one JAX distributed runtime."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from jaxcomp import parallel

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _multihost(*args: str, env: dict | None = None, check: bool = True):
  return subprocess.run(["bash", "launch/multihost.sh", *args], cwd=ROOT, capture_output=True,
                        text=True, check=check, env=env)


def test_dry_run_one_process_per_gpu():
  out = _multihost("--coordinator", "10.0.0.1:8476", "--num-hosts", "2", "--host-id", "1",
                   "--procs-per-host", "2", "--config", "configs/jpeg_dl.py:variant=sample,seed=1",
                   "--workdir", "/shared/run", "--data-dir", "/shared/tfds", "--dry-run",
                   "--config.train.epochs=2").stdout
  tail = ("python3 -m jaxcomp.main --config=configs/jpeg_dl.py:variant=sample,seed=1 "
          "--workdir=/shared/run --config.data.data_dir=/shared/tfds --config.train.epochs=2")
  assert out.splitlines() == [
      "env JAX_COORDINATOR_ADDRESS=10.0.0.1:8476 JAX_NUM_PROCESSES=4 JAX_PROCESS_ID=2 "
      f"JAX_LOCAL_DEVICE_IDS=0 {tail}",
      "env JAX_COORDINATOR_ADDRESS=10.0.0.1:8476 JAX_NUM_PROCESSES=4 JAX_PROCESS_ID=3 "
      f"JAX_LOCAL_DEVICE_IDS=1 {tail}"]


def test_dry_run_from_torchrun_style_environment():
  env = {**os.environ, "MASTER_ADDR": "head", "MASTER_PORT": "29500", "NNODES": "3",
         "NODE_RANK": "2", "PYTHON": ".venv/bin/python"}
  out = _multihost("--config", "c.py", "--workdir", "/w", "--dry-run", env=env).stdout
  assert out == ("env JAX_COORDINATOR_ADDRESS=head:29500 JAX_NUM_PROCESSES=3 JAX_PROCESS_ID=2 "
                 ".venv/bin/python -m jaxcomp.main --config=c.py --workdir=/w\n")


@pytest.mark.parametrize("args,message", [
    (["--config", "c", "--workdir", "w"], "--coordinator is required"),
    (["--coordinator", "h", "--config", "c", "--workdir", "w"], "must be host:port"),
    (["--coordinator", "h:1", "--num-hosts", "2", "--host-id", "2", "--config", "c",
      "--workdir", "w"], "--host-id 2 must be < --num-hosts 2"),
    (["--coordinator", "h:1", "--procs-per-host", "x", "--config", "c", "--workdir", "w"],
     "--procs-per-host must be an integer"),
])
def test_argument_errors(args, message):
  env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "JAX_COORDINATOR_ADDRESS")}
  proc = _multihost(*args, "--dry-run", env=env, check=False)
  assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.parametrize("env,expected", [
    ({}, None),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"},
     {"coordinator_address": "h:1", "num_processes": 4, "process_id": 3}),
    ({"JAXCOMP_DISTRIBUTED": "1"}, {}),          # tpu_vm.sh, slurm.sh: JAX reads the rest
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "16"}, {}),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2"}, None),   # the batch shell, no step
    ({"TPU_WORKER_HOSTNAMES": "a,b"}, {}),
])
def test_distributed_kwargs(env, expected):
  assert parallel.distributed_kwargs(env) == expected


@pytest.mark.parametrize("env,message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_NUM_PROCESSES and JAX_PROCESS_ID not"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     r"JAX_PROCESS_ID=2 must be in \[0, JAX_NUM_PROCESSES=2\)"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "must be integers"),
])
def test_distributed_kwargs_errors(env, message):
  with pytest.raises(ValueError, match=message):
    parallel.distributed_kwargs(env)


FAKE_PYTHON = """#!/usr/bin/env bash
log="$(dirname "$0")/p$JAX_PROCESS_ID.log"
echo started > "$log"
trap 'echo sigterm >> "$log"; exit 143' TERM
while true; do sleep 0.05; done
"""


def test_sigterm_goes_to_every_process(fake_bin):
  python = fake_bin("python-fake", FAKE_PYTHON)
  proc = subprocess.Popen(["bash", "launch/multihost.sh", "--coordinator", "localhost:1",
                           "--procs-per-host", "3", "--python", str(python), "--config", "c",
                           "--workdir", "w"], cwd=ROOT)
  logs = [fake_bin.folder / f"p{i}.log" for i in range(3)]
  deadline = time.monotonic() + 30
  while not all(p.exists() for p in logs):
    assert time.monotonic() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=30) == 143
  assert [p.read_text() for p in logs] == ["started\nsigterm\n"] * 3


PROBE = """
from jaxcomp import parallel
parallel.initialize_distributed()
import jax, jax.numpy as jnp
from jax.experimental import multihost_utils
ids = multihost_utils.process_allgather(jnp.array([jax.process_index()]))
import sys   # one write per line: the two processes share stdout
sys.stdout.write(f"probe {jax.process_index()} {jax.process_count()} {ids.ravel().tolist()}\\n")
"""


def test_two_processes_join_one_distributed_runtime(fake_bin, tmp_path):
  # What each GPU host runs, on CPU: multihost.sh starts two processes that find each
  # other through JAX_COORDINATOR_ADDRESS and gather their process indices.
  (tmp_path / "probe.py").write_text(PROBE)
  python = fake_bin("python-probe", f'#!/bin/sh\nexec {sys.executable} {tmp_path}/probe.py\n')
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  out = _multihost("--coordinator", f"localhost:{port}", "--procs-per-host", "2", "--python",
                   str(python), "--config", "c", "--workdir", "w", env=env, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  out = out.stdout
  probes = sorted(line for line in out.splitlines() if line.startswith("probe"))
  assert probes == ["probe 0 2 [0, 1]", "probe 1 2 [0, 1]"]
