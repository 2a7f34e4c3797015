"""launch/tpu_vm.sh: the exact gcloud commands (--dry-run), and a fake gcloud that
queues, preempts and re-grants a spot slice (the script re-creates it and re-runs)."""

from __future__ import annotations

import pathlib
import shlex
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


REMOTE = ("set -e; mkdir -p jaxcomp; tar xzf jaxcomp.tar.gz -C jaxcomp; cd jaxcomp; "
          "python3 -m venv .venv; .venv/bin/pip install -q -e . 'jax[tpu]' "
          "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html; "
          "export JAXCOMP_DISTRIBUTED=1; .venv/bin/python -m jaxcomp.main "
          "--config=configs/cifar10.py:variant=tfds --workdir=gs://b/run "
          "--config.data.data_dir=gs://b/tfds --config.train.epochs=3")


def _tpu_vm(*args: str, env: dict | None = None, check: bool = True):
  return subprocess.run(["bash", "launch/tpu_vm.sh", *args], cwd=ROOT, capture_output=True,
                        text=True, check=check, env=env)


def _expected(*lines: str) -> list[str]:
  return [f"git -C {ROOT} archive --format=tar.gz -o /tmp/jaxcomp-t1.tar.gz HEAD", *lines]


def test_dry_run_on_demand_vm(monkeypatch):
  monkeypatch.delenv("TMPDIR", raising=False)
  out = _tpu_vm("--name", "t1", "--zone", "us-central2-b", "--type", "v4-32", "--create",
                "--config", "configs/cifar10.py:variant=tfds", "--workdir", "gs://b/run",
                "--data-dir", "gs://b/tfds", "--dry-run", "--config.train.epochs=3").stdout
  assert out.splitlines() == _expected(
      "gcloud compute tpus tpu-vm create t1 --zone us-central2-b --accelerator-type v4-32 "
      "--version tpu-ubuntu2204-base",
      "gcloud compute tpus tpu-vm scp /tmp/jaxcomp-t1.tar.gz t1:jaxcomp.tar.gz "
      "--zone us-central2-b --worker=all",
      "gcloud compute tpus tpu-vm ssh t1 --zone us-central2-b --worker=all --command "
      + shlex.quote(REMOTE))


def test_dry_run_queued_spot_slice_waits_and_deletes(monkeypatch):
  monkeypatch.delenv("TMPDIR", raising=False)
  out = _tpu_vm("--name", "t1", "--zone", "us-central2-b", "--type", "v5p-64", "--create",
                "--queued", "--spot", "--valid-until", "6h", "--delete", "--retries", "5",
                "--config", "configs/cifar10.py:variant=tfds", "--workdir", "gs://b/run",
                "--data-dir", "gs://b/tfds", "--dry-run", "--config.train.epochs=3").stdout
  assert out.splitlines() == _expected(
      "gcloud compute tpus queued-resources create t1 --zone us-central2-b --node-id t1 "
      "--accelerator-type v5p-64 --runtime-version tpu-ubuntu2204-base "
      "--valid-until-duration 6h --spot",
      "gcloud compute tpus queued-resources describe t1 --zone us-central2-b "
      "'--format=value(state.state)'",
      "gcloud compute tpus tpu-vm scp /tmp/jaxcomp-t1.tar.gz t1:jaxcomp.tar.gz "
      "--zone us-central2-b --worker=all",
      "gcloud compute tpus tpu-vm ssh t1 --zone us-central2-b --worker=all --command "
      + shlex.quote(REMOTE),
      "gcloud compute tpus queued-resources delete t1 --zone us-central2-b --force --quiet")


def test_argument_errors():
  proc = _tpu_vm("--dry-run", check=False)
  assert proc.returncode == 2 and "--name is required" in proc.stderr
  proc = _tpu_vm("--name", "t", "--zone", "z", "--config", "c", "--workdir", "w",
                 "--valid-until", "6h", "--dry-run", check=False)
  assert proc.returncode == 2 and "--valid-until needs --queued" in proc.stderr
  proc = _tpu_vm("--name", "t", "--zone", "z", "--config", "c", "--workdir", "w",
                 "--retries", "x", check=False)
  assert proc.returncode == 2 and "--retries must be an integer" in proc.stderr


# A fake gcloud: logs every call; the queued resource waits once, then is ACTIVE;
# the first run on the workers is cut off by a preemption (the resource becomes
# SUSPENDED, ssh fails with 255 as when the VMs vanish); the second run succeeds.
FAKE_GCLOUD = """#!/usr/bin/env bash
d="$(dirname "$0")"
echo "$*" >> "$d/calls.log"
case "$3 $4" in
  "queued-resources create") printf 'WAITING_FOR_RESOURCES\\nACTIVE\\n' > "$d/states.txt" ;;
  "queued-resources describe")
    head -n1 "$d/states.txt"; [[ $(wc -l < "$d/states.txt") -gt 1 ]] && sed -i 1d "$d/states.txt" ;;
  "tpu-vm ssh")
    n=$(cat "$d/ssh.count" 2>/dev/null || echo 0); echo $((n + 1)) > "$d/ssh.count"
    if [[ $n -lt 1 ]]; then
      echo "${FAIL_STATE:-SUSPENDED}" > "$d/states.txt"; exit "${FAIL_STATUS:-255}"
    fi ;;
esac
exit 0
"""


def _calls(folder) -> list[str]:
  return [" ".join(line.split()[2:4]) for line in (folder / "calls.log").read_text().splitlines()]


def test_preempted_spot_slice_is_recreated_and_the_run_resumed(fake_bin, tmp_path, monkeypatch):
  fake_bin("gcloud", FAKE_GCLOUD)
  fake_bin("git", "#!/bin/sh\nexit 0\n")
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  proc = _tpu_vm("--name", "t1", "--zone", "z", "--create", "--queued", "--spot", "--delete",
                 "--retries", "2", "--poll-secs", "0", "--config", "c", "--workdir", "gs://b/r")
  assert proc.returncode == 0, proc.stderr
  assert _calls(fake_bin.folder) == [
      "queued-resources create", "queued-resources describe", "queued-resources describe",
      "tpu-vm scp", "tpu-vm ssh",              # preempted during the run
      "queued-resources describe",             # SUSPENDED: re-create
      "queued-resources delete", "queued-resources create",
      "queued-resources describe", "queued-resources describe",
      "tpu-vm scp", "tpu-vm ssh",              # the same command: resumes from the checkpoint
      "queued-resources delete"]
  assert "preempted; re-creating it (retry 1 of 2)" in proc.stderr
  assert "--spot" in (fake_bin.folder / "calls.log").read_text().splitlines()[7]


def test_a_failure_that_is_no_preemption_is_not_retried(fake_bin, tmp_path, monkeypatch):
  fake_bin("gcloud", FAKE_GCLOUD)
  fake_bin("git", "#!/bin/sh\nexit 0\n")
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  monkeypatch.setenv("FAIL_STATE", "ACTIVE")   # the slice is fine: the run itself failed
  monkeypatch.setenv("FAIL_STATUS", "1")
  proc = _tpu_vm("--name", "t1", "--zone", "z", "--create", "--queued", "--retries", "2",
                 "--poll-secs", "0", "--config", "c", "--workdir", "gs://b/r", check=False)
  assert proc.returncode == 1
  assert _calls(fake_bin.folder)[-2:] == ["tpu-vm ssh", "queued-resources describe"]
  assert "queued-resources create" not in _calls(fake_bin.folder)[1:]
