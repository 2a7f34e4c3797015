#!/usr/bin/env bash
# Run a jaxcomp config on hosts without a scheduler (torchrun-style): run this
# same command on every host, changing only --host-id.
#
#   launch/multihost.sh --coordinator 10.0.0.1:8476 --num-hosts 2 --host-id 0 \
#       [--procs-per-host 8] --config configs/jpeg_dl.py:variant=imagenet_resnet18 \
#       --workdir /shared/runs/r18 [--data-dir /shared/tfds] [--python PY] [--dry-run] \
#       [--config.train.epochs=10 ...]
#
# Each host starts --procs-per-host processes (default 1: one process owns all of
# the host's GPUs; 8: one process per GPU, process k of a host owns GPU k). Every
# process gets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID
# (host-id * procs-per-host + k), which jaxcomp.parallel.initialize_distributed
# hands to jax.distributed.initialize, and JAX_LOCAL_DEVICE_IDS=k when a process
# owns one GPU. The coordinator is host 0's address and a free port.
# Flags may come from the environment instead, under torchrun's names:
# MASTER_ADDR + MASTER_PORT, NNODES, NODE_RANK, NPROC_PER_NODE.
#
# --workdir and the tfds --data-dir must be shared storage (NFS, Lustre, a
# bucket) that every host sees. SIGTERM or SIGINT to this script goes to every
# process: each saves a checkpoint and exits 143, and so does this script;
# running the same command again resumes from the last checkpoint.
# --dry-run prints the command of every process of this host instead.
set -euo pipefail
source "$(dirname "$0")/common.sh"

coordinator="${JAX_COORDINATOR_ADDRESS:-}"
if [[ -z "$coordinator" && -n "${MASTER_ADDR:-}" ]]; then
  coordinator="$MASTER_ADDR:${MASTER_PORT:-8476}"
fi
num_hosts="${NNODES:-1}" host_id="${NODE_RANK:-0}" procs_per_host="${NPROC_PER_NODE:-1}"
config="" workdir="" data_dir="" py="${PYTHON:-python3}" dry=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --coordinator) coordinator="$2"; shift 2 ;;
    --num-hosts) num_hosts="$2"; shift 2 ;;
    --host-id) host_id="$2"; shift 2 ;;
    --procs-per-host) procs_per_host="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --python) py="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --config.*) extra+=("$1"); shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for v in coordinator config workdir; do
  [[ -n "${!v}" ]] || { echo "--$v is required" >&2; exit 2; }
done
fail() { echo "$1" >&2; exit 2; }
for v in num_hosts host_id procs_per_host; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || fail "--${v//_/-} must be an integer, got '${!v}'"
done
(( num_hosts >= 1 && procs_per_host >= 1 )) || fail "--num-hosts and --procs-per-host must be >= 1"
(( host_id < num_hosts )) || fail "--host-id $host_id must be < --num-hosts $num_hosts"
[[ "$coordinator" == *:* ]] || fail "--coordinator must be host:port, got '$coordinator'"

args=(-m jaxcomp.main "--config=$config" "--workdir=$workdir")
[[ -n "$data_dir" ]] && args+=("--config.data.data_dir=$data_dir")
args+=("${extra[@]+"${extra[@]}"}")

# The command of local process k: its environment, then python.
process_command() {
  local k="$1"
  cmd=(env "JAX_COORDINATOR_ADDRESS=$coordinator"
       "JAX_NUM_PROCESSES=$((num_hosts * procs_per_host))"
       "JAX_PROCESS_ID=$((host_id * procs_per_host + k))")
  (( procs_per_host > 1 )) && cmd+=("JAX_LOCAL_DEVICE_IDS=$k")
  # shellcheck disable=SC2206  # --python may be a command with arguments
  cmd+=($py "${args[@]}")
}

if [[ $dry -eq 1 ]]; then
  for ((k = 0; k < procs_per_host; k++)); do
    process_command "$k"
    show "${cmd[@]}"
  done
  exit 0
fi

pids=()
forward() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap forward TERM INT
for ((k = 0; k < procs_per_host; k++)); do
  process_command "$k"
  "${cmd[@]}" &
  pids+=($!)
done
# Every process's status (143 first: a preempted run), waiting again when the
# trap cut a wait short while the process still runs.
status=0
for pid in "${pids[@]}"; do
  while true; do
    rc=0; wait "$pid" || rc=$?
    (( rc > 128 )) && kill -0 "$pid" 2>/dev/null || break
  done
  if (( rc == 143 )); then status=143; elif (( rc != 0 && status == 0 )); then status=$rc; fi
done
exit $status
