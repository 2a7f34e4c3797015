"""launch/slurm.sh: the exact job script and sbatch command (--dry-run), and the job
script run under a fake SLURM (srun, scontrol): SIGTERM reaches the training
processes, and a run that checkpointed and exited 143 is requeued."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


JOB_BODY = """\
step=$!
trap 'kill -TERM "$step" 2>/dev/null' TERM
while true; do
  rc=0; wait "$step" || rc=$?
  (( rc > 128 )) && kill -0 "$step" 2>/dev/null || break
done
if (( rc == 143 && ${SLURM_RESTART_COUNT:-0} < 20 )); then
  echo "jaxcomp: preempted, checkpoint saved; requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
"""


def _slurm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", "launch/slurm.sh", *args], cwd=ROOT, capture_output=True,
                        text=True, check=check)


def test_dry_run_one_process_per_gpu():
  out = _slurm("--nodes", "4", "--gpus-per-node", "8", "--partition", "gpu", "--account", "lab",
               "--time", "24:00:00", "--setup", "source /shared/venv/bin/activate",
               "--config", "configs/jpeg_dl.py:variant=imagenet_resnet18,seed=1",
               "--workdir", "/shared/runs/r18", "--data-dir", "/shared/tfds", "--dry-run",
               "--config.train.epochs=3").stdout
  assert out == f"""\
mkdir -p /shared/runs/r18
cat > /shared/runs/r18/slurm.sbatch <<'EOF'
#!/bin/bash
#SBATCH --job-name=jaxcomp
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --time=24:00:00
#SBATCH --partition=gpu
#SBATCH --account=lab
#SBATCH --requeue
#SBATCH --signal=B:TERM@300
#SBATCH --open-mode=append
#SBATCH --output=/shared/runs/r18/slurm-%j.out
#SBATCH --chdir={ROOT}
set -uo pipefail
source /shared/venv/bin/activate
export JAXCOMP_DISTRIBUTED=1
srun python3 -m jaxcomp.main --config=configs/jpeg_dl.py:variant=imagenet_resnet18,seed=1 \
--workdir=/shared/runs/r18 --config.data.data_dir=/shared/tfds --config.train.epochs=3 &
{JOB_BODY}EOF
sbatch /shared/runs/r18/slurm.sbatch
"""


def test_dry_run_one_process_per_node_owns_all_its_gpus():
  out = _slurm("--nodes", "2", "--gpus-per-node", "4", "--procs", "host", "--wait",
               "--cpus-per-task", "48",
               "--signal-secs", "120", "--max-requeues", "3", "--sbatch-arg", "--exclusive",
               "--config", "c.py", "--workdir", "/w", "--dry-run").stdout.splitlines()
  assert "#SBATCH --ntasks-per-node=1" in out and "#SBATCH --gpus-per-node=4" in out
  assert "#SBATCH --signal=B:TERM@120" in out and "#SBATCH --exclusive" in out
  assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3" in out
  assert "#SBATCH --cpus-per-task=48" in out and "export SRUN_CPUS_PER_TASK=48" in out
  assert "if (( rc == 143 && ${SLURM_RESTART_COUNT:-0} < 3 )); then" in out
  assert out[-1] == "sbatch --wait /w/slurm.sbatch"


def test_argument_errors():
  proc = _slurm("--workdir", "/w", "--dry-run", check=False)
  assert proc.returncode == 2 and "--config is required" in proc.stderr
  proc = _slurm("--config", "c", "--workdir", "/w", "--procs", "socket", "--dry-run", check=False)
  assert proc.returncode == 2 and "--procs must be gpu or host" in proc.stderr
  proc = _slurm("--config", "c", "--workdir", "/w", "--nodes", "0", "--dry-run", check=False)
  assert proc.returncode == 2 and "must be >= 1" in proc.stderr


# A fake SLURM: srun runs its command as two tasks with the SLURM_* variables of
# a job step and forwards signals to them, as srun does; scontrol logs its calls.
FAKE_SRUN = """#!/usr/bin/env bash
pids=()
for i in 0 1; do
  SLURM_STEP_NODELIST=node[1-2] SLURM_NTASKS=2 SLURM_PROCID=$i SLURM_LOCALID=$i "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}"' TERM
rc=0
for p in "${pids[@]}"; do
  while true; do r=0; wait "$p" || r=$?; (( r > 128 )) && kill -0 "$p" 2>/dev/null || break; done
  (( r != 0 )) && rc=$r
done
exit $rc
"""
# Stands in for a training process: records how it was started, then trains until
# SIGTERM (saves a checkpoint, exits 143), or finishes at once with MODE=finish.
FAKE_PYTHON = """#!/usr/bin/env bash
log="$(dirname "$0")/task$SLURM_PROCID"
echo "JAXCOMP_DISTRIBUTED=$JAXCOMP_DISTRIBUTED $*" > "$log"
[[ "${MODE:-}" == finish ]] && exit 0
trap 'echo sigterm >> "$log"; exit 143' TERM
while true; do sleep 0.05; done
"""


@pytest.fixture
def job(fake_bin, tmp_path):
  """Submits through a fake sbatch; returns the job script slurm.sh wrote."""
  fake_bin("sbatch", '#!/bin/sh\necho "$*" > "$(dirname "$0")/sbatch.log"\n')
  fake_bin("srun", FAKE_SRUN)
  fake_bin("scontrol", '#!/bin/sh\necho "$*" >> "$(dirname "$0")/scontrol.log"\n')
  python = fake_bin("python-fake", FAKE_PYTHON)
  workdir = tmp_path / "run"
  proc = _slurm("--nodes", "2", "--gpus-per-node", "1", "--python", str(python), "--config",
                "c.py", "--workdir", str(workdir), "--config.train.epochs=1", check=False)
  assert proc.returncode == 0, proc.stderr
  script = workdir / "slurm.sbatch"
  assert (fake_bin.folder / "sbatch.log").read_text().split() == [str(script)]
  return script


def _start(script: pathlib.Path, **env: str) -> subprocess.Popen:
  return subprocess.Popen(["bash", str(script)], env={**os.environ, "SLURM_JOB_ID": "77", **env},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(paths: list[pathlib.Path], timeout: float = 30.0) -> None:
  deadline = time.monotonic() + timeout
  while not all(p.exists() for p in paths):
    assert time.monotonic() < deadline, f"never appeared: {paths}"
    time.sleep(0.05)


def test_sigterm_reaches_every_task_and_the_job_is_requeued(job, fake_bin):
  proc = _start(job, SLURM_RESTART_COUNT="0")
  tasks = [fake_bin.folder / f"task{i}" for i in (0, 1)]
  _wait_for(tasks)
  proc.send_signal(signal.SIGTERM)   # what --signal=B:TERM@300 or a preemption does
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == 143
  for t in tasks:
    started, got = t.read_text().splitlines()
    assert started == "JAXCOMP_DISTRIBUTED=1 -m jaxcomp.main --config=c.py " \
        f"--workdir={job.parent} --config.train.epochs=1"
    assert got == "sigterm"
  assert (fake_bin.folder / "scontrol.log").read_text() == "requeue 77\n"
  assert "requeueing job 77" in err


def test_no_requeue_past_the_limit_or_after_a_finished_run(job, fake_bin):
  proc = _start(job, SLURM_RESTART_COUNT="20")   # requeued 20 times already
  _wait_for([fake_bin.folder / "task0", fake_bin.folder / "task1"])
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=30)
  assert proc.returncode == 143 and not (fake_bin.folder / "scontrol.log").exists()
  proc = _start(job, MODE="finish")
  proc.communicate(timeout=30)
  assert proc.returncode == 0 and not (fake_bin.folder / "scontrol.log").exists()
