#!/usr/bin/env bash
# Run a jaxcomp config as a multi-node SLURM GPU job (sbatch + srun).
#
#   launch/slurm.sh --nodes 2 --gpus-per-node 8 [--procs gpu|host] [--partition P] \
#       [--account A] [--time 24:00:00] [--cpus-per-task 12] \
#       [--setup 'source /shared/venv/bin/activate'] \
#       --config configs/jpeg_dl.py:variant=imagenet_resnet18 --workdir /shared/runs/r18 \
#       [--data-dir /shared/tfds] [--wait] [--dry-run] [--config.train.epochs=10 ...]
#
# Writes WORKDIR/slurm.sbatch and submits it (sbatch; --wait blocks until the job
# ends and returns its exit status); the job's log is WORKDIR/slurm-<jobid>.out.
# The job runs in the current directory (a checkout, or anywhere with a
# non-editable install: --config takes a path); --setup runs first in the batch
# shell, whose environment srun passes to every task
# (e.g. activating the venv that has jaxcomp and jax[cuda12]).
# srun starts one process per GPU (--procs gpu, the default: every task sees the
# node's GPUs and JAX gives task k of a node GPU k, SLURM_LOCALID) or one per node
# (--procs host: it owns all the node's GPUs); give each task the cores its input
# pipeline needs (--cpus-per-task: the node's cores / tasks per node; SLURM's
# default is often one). jax.distributed.initialize reads
# the coordinator, process count and id from srun's SLURM_* variables
# (JAXCOMP_DISTRIBUTED=1, jaxcomp.parallel.initialize_distributed).
# --workdir and the tfds --data-dir must be on storage every node sees.
#
# Preemption: the job is --requeue'able; SLURM sends SIGTERM to the batch shell
# --signal-secs before the time limit (and on preemption or scancel --signal=TERM);
# the shell forwards it to the srun step, every process saves a checkpoint and
# exits 143, and the shell requeues the job (scontrol requeue; at most
# --max-requeues times, counted by SLURM_RESTART_COUNT). The requeued job runs
# the same command on the same workdir and resumes from that checkpoint.
# --dry-run prints the commands (mkdir, the script, sbatch) instead of running them.
set -euo pipefail
source "$(dirname "$0")/common.sh"

nodes=1 gpus=8 procs=gpu cpus="" partition="" account="" time_limit="" job_name="jaxcomp"
signal_secs=300 max_requeues=20 setup="" py="python3" wait=0 dry=0
config="" workdir="" data_dir=""
extra=() sbatch_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --gpus-per-node) gpus="$2"; shift 2 ;;
    --procs) procs="$2"; shift 2 ;;
    --cpus-per-task) cpus="$2"; shift 2 ;;
    --partition) partition="$2"; shift 2 ;;
    --account) account="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --job-name) job_name="$2"; shift 2 ;;
    --signal-secs) signal_secs="$2"; shift 2 ;;
    --max-requeues) max_requeues="$2"; shift 2 ;;
    --setup) setup="$2"; shift 2 ;;
    --python) py="$2"; shift 2 ;;
    --sbatch-arg) sbatch_args+=("$2"); shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --wait) wait=1; shift ;;
    --dry-run) dry=1; shift ;;
    --config.*) extra+=("$1"); shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for v in config workdir; do
  [[ -n "${!v}" ]] || { echo "--$v is required" >&2; exit 2; }
done
for v in nodes gpus signal_secs max_requeues; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "--${v//_/-} must be an integer, got '${!v}'" >&2; exit 2; }
done
(( nodes >= 1 && gpus >= 1 )) || { echo "--nodes and --gpus-per-node must be >= 1" >&2; exit 2; }
case "$procs" in
  gpu) tasks_per_node=$gpus ;;
  host) tasks_per_node=1 ;;
  *) echo "--procs must be gpu or host, got '$procs'" >&2; exit 2 ;;
esac

args=(-m jaxcomp.main "--config=$config" "--workdir=$workdir")
[[ -n "$data_dir" ]] && args+=("--config.data.data_dir=$data_dir")
args+=("${extra[@]+"${extra[@]}"}")
# shellcheck disable=SC2206  # --python may be a command with arguments
step=(srun $py "${args[@]}")

script="$workdir/slurm.sbatch"
batch_script() {
  echo "#!/bin/bash"
  echo "#SBATCH --job-name=$job_name"
  echo "#SBATCH --nodes=$nodes"
  echo "#SBATCH --ntasks-per-node=$tasks_per_node"
  echo "#SBATCH --gpus-per-node=$gpus"
  [[ -n "$cpus" ]] && echo "#SBATCH --cpus-per-task=$cpus"
  [[ -n "$time_limit" ]] && echo "#SBATCH --time=$time_limit"
  [[ -n "$partition" ]] && echo "#SBATCH --partition=$partition"
  [[ -n "$account" ]] && echo "#SBATCH --account=$account"
  echo "#SBATCH --requeue"
  echo "#SBATCH --signal=B:TERM@$signal_secs"
  echo "#SBATCH --open-mode=append"
  echo "#SBATCH --output=$workdir/slurm-%j.out"
  echo "#SBATCH --chdir=$PWD"
  for a in "${sbatch_args[@]+"${sbatch_args[@]}"}"; do echo "#SBATCH $a"; done
  echo "set -uo pipefail"
  [[ -n "$setup" ]] && echo "$setup"
  echo "export JAXCOMP_DISTRIBUTED=1"
  # srun of SLURM >= 22.05 no longer takes --cpus-per-task from the allocation.
  [[ -n "$cpus" ]] && echo "export SRUN_CPUS_PER_TASK=$cpus"
  if [[ "$procs" == host ]]; then
    echo "export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus - 1)))"
  fi
  echo "$(show "${step[@]}") &"
  cat <<'EOF'
step=$!
trap 'kill -TERM "$step" 2>/dev/null' TERM
while true; do
  rc=0; wait "$step" || rc=$?
  (( rc > 128 )) && kill -0 "$step" 2>/dev/null || break
done
EOF
  echo "if (( rc == 143 && \${SLURM_RESTART_COUNT:-0} < $max_requeues )); then"
  cat <<'EOF'
  echo "jaxcomp: preempted, checkpoint saved; requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
EOF
}

submit=(sbatch)
[[ $wait -eq 1 ]] && submit+=(--wait)
submit+=("$script")
run mkdir -p "$workdir"
if [[ $dry -eq 1 ]]; then
  echo "cat > $(show "$script") <<'EOF'"
  batch_script
  echo "EOF"
else
  batch_script > "$script"
fi
run "${submit[@]}"
