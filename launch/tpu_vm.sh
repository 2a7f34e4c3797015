#!/usr/bin/env bash
# Run a jaxcomp config on a Cloud TPU VM: one host or a pod slice, on demand,
# spot, or through a queued resource.
#
#   launch/tpu_vm.sh --name my-tpu --zone us-central2-b --type v4-32 \
#       --config configs/jpeg_dl.py:variant=imagenet_resnet18 \
#       --workdir gs://my-bucket/runs/jpeg_dl_r18 [--data-dir gs://my-bucket/tfds] \
#       [--create] [--queued] [--spot] [--retries 10] [--delete] [--dry-run]
#
# --create makes the slice first: `tpu-vm create`, or with --queued a queued
# resource (`queued-resources create`, then polled every --poll-secs until it is
# ACTIVE; --valid-until 6h gives up on the request after that long). --spot asks
# for spot capacity (cheaper; can be taken back at any time).
# The local checkout (git HEAD) is copied to every worker, installed with
# jax[tpu], and every worker runs the same command: jax.distributed.initialize
# finds the coordinator from the TPU environment (JAXCOMP_DISTRIBUTED=1), each
# process reads its own slice of every global batch, orbax writes checkpoints to
# --workdir, which must be a path every worker sees (a gs:// bucket, or a gcsfuse
# mount of one); tfds reads gs:// data dirs directly.
# Preemption: a spot or preemptible slice that is taken back (queued resource
# SUSPENDING / SUSPENDED / FAILED, TPU VM PREEMPTED / TERMINATED) is deleted,
# re-created, waited for and the command re-run, up to --retries times; the
# trainer resumes from the last checkpoint in --workdir. --delete deletes the
# slice (or queued resource) at the end, whatever the outcome.
# --dry-run prints the gcloud commands of one pass instead of running them.
set -euo pipefail
source "$(dirname "$0")/common.sh"

name="" zone="" type="v4-8" config="" workdir="" data_dir=""
version="tpu-ubuntu2204-base" create=0 queued=0 spot=0 delete=0 dry=0
retries=0 poll_secs=60 valid_until=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --create) create=1; shift ;;
    --queued) queued=1; shift ;;
    --spot) spot=1; shift ;;
    --retries) retries="$2"; shift 2 ;;
    --poll-secs) poll_secs="$2"; shift 2 ;;
    --valid-until) valid_until="$2"; shift 2 ;;
    --delete) delete=1; shift ;;
    --dry-run) dry=1; shift ;;
    --config.*) extra+=("$1"); shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for v in name zone config workdir; do
  [[ -n "${!v}" ]] || { echo "--${v//_/-} is required" >&2; exit 2; }
done
for v in retries poll_secs; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "--${v//_/-} must be an integer, got '${!v}'" >&2; exit 2; }
done
[[ -z "$valid_until" || $queued -eq 1 ]] || { echo "--valid-until needs --queued" >&2; exit 2; }

tpus=(gcloud compute tpus)
where=(--zone "$zone")

create_slice() {
  local cmd
  if [[ $queued -eq 1 ]]; then
    cmd=("${tpus[@]}" queued-resources create "$name" "${where[@]}" --node-id "$name"
         --accelerator-type "$type" --runtime-version "$version")
    [[ -n "$valid_until" ]] && cmd+=(--valid-until-duration "$valid_until")
  else
    cmd=("${tpus[@]}" tpu-vm create "$name" "${where[@]}" --accelerator-type "$type"
         --version "$version")
  fi
  [[ $spot -eq 1 ]] && cmd+=(--spot)
  run "${cmd[@]}"
}

# The slice's state: the queued resource's, else the TPU VM's.
state() {
  if [[ $queued -eq 1 ]]; then
    run "${tpus[@]}" queued-resources describe "$name" "${where[@]}" --format="value(state.state)"
  else
    run "${tpus[@]}" tpu-vm describe "$name" "${where[@]}" --format="value(state)"
  fi
}

# Polls a queued resource until it is ACTIVE (an on-demand or spot VM is ready
# when `create` returns).
wait_active() {
  [[ $queued -eq 1 ]] || return 0
  if [[ $dry -eq 1 ]]; then state; return 0; fi
  local s
  while true; do
    s=$(state)
    case "$s" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED) echo "queued resource $name is $s" >&2; return 1 ;;
    esac
    echo "queued resource $name: ${s:-unknown}; waiting ${poll_secs}s" >&2
    sleep "$poll_secs"
  done
}

preempted() {
  case "$(state 2>/dev/null)" in
    SUSPENDING|SUSPENDED|FAILED|PREEMPTED|TERMINATED) return 0 ;;
    *) return 1 ;;
  esac
}

delete_slice() {
  if [[ $queued -eq 1 ]]; then
    run "${tpus[@]}" queued-resources delete "$name" "${where[@]}" --force --quiet
  else
    run "${tpus[@]}" tpu-vm delete "$name" "${where[@]}" --quiet
  fi
}

train=(.venv/bin/python -m jaxcomp.main "--config=$config" "--workdir=$workdir")
[[ -n "$data_dir" ]] && train+=("--config.data.data_dir=$data_dir")
train+=("${extra[@]+"${extra[@]}"}")
remote="set -e; mkdir -p jaxcomp; tar xzf jaxcomp.tar.gz -C jaxcomp; cd jaxcomp; \
python3 -m venv .venv; .venv/bin/pip install -q -e . 'jax[tpu]' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html; \
export JAXCOMP_DISTRIBUTED=1; $(show "${train[@]}")"
archive="${TMPDIR:-/tmp}/jaxcomp-$name.tar.gz"

# Copies the checkout to every worker and runs the command there; its status.
run_on_workers() {
  run "${tpus[@]}" tpu-vm scp "$archive" "$name:jaxcomp.tar.gz" "${where[@]}" --worker=all \
    || return $?
  run "${tpus[@]}" tpu-vm ssh "$name" "${where[@]}" --worker=all --command "$remote"
}

run git -C "$(cd "$(dirname "$0")/.." && pwd)" archive --format=tar.gz -o "$archive" HEAD
if [[ $create -eq 1 ]]; then
  create_slice
fi
wait_active
attempt=0 status=0
while true; do
  status=0; run_on_workers || status=$?
  if (( status != 0 && attempt < retries )) && preempted; then
    attempt=$((attempt + 1))
    echo "slice $name was preempted; re-creating it (retry $attempt of $retries)" >&2
    rc=0; { delete_slice && create_slice && wait_active; } || rc=$?
    (( rc == 0 )) && continue
    status=$rc
  fi
  break
done
[[ $dry -eq 1 ]] || rm -f "$archive"
if [[ $delete -eq 1 ]]; then
  delete_slice
fi
exit "$status"
