#!/usr/bin/env bash
# Run a jaxcomp config on a Cloud TPU VM (single host or pod slice).
#
#   launch/tpu_vm.sh --name my-tpu --zone us-central2-b --type v4-32 \
#       --config configs/jpeg_dl.py:variant=imagenet_resnet18 \
#       --workdir /mnt/bucket/runs/jpeg_dl_r18 [--data-dir gs://my-bucket/tfds] [--create] [--dry-run]
#
# The local checkout (git HEAD) is copied to every worker. --workdir must be a
# path that all workers see (e.g. a gcsfuse mount of a bucket at /mnt/bucket);
# tfds reads gs:// data dirs directly. Every worker of the slice runs the same command; jax.distributed.initialize()
# finds the coordinator from the TPU environment, each process reads its own
# slice of every global batch, orbax writes checkpoints to the (GCS) workdir, and
# re-running the same command after a preemption resumes from the last one.
# --dry-run prints the gcloud commands instead of running them.
set -euo pipefail

name="" zone="" type="v4-8" config="" workdir="" data_dir="" create=0 dry=0
version="tpu-ubuntu2204-base"
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
    --dry-run) dry=1; shift ;;
    --config.*) extra+=("$1"); shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for v in name zone config workdir; do
  [[ -n "${!v}" ]] || { echo "--${v//_/-} is required" >&2; exit 2; }
done

run() {
  if [[ $dry -eq 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

if [[ $create -eq 1 ]]; then
  run gcloud compute tpus tpu-vm create "$name" --zone "$zone" \
      --accelerator-type "$type" --version "$version"
fi
overrides=""
[[ -n "$data_dir" ]] && overrides+=" --config.data.data_dir=$data_dir"
for e in "${extra[@]+"${extra[@]}"}"; do overrides+=" $e"; done
archive="/tmp/jaxcomp-$$.tar.gz"
run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
run gcloud compute tpus tpu-vm scp "$archive" "$name:jaxcomp.tar.gz" --zone "$zone" --worker=all
remote="set -e; mkdir -p jaxcomp; tar xzf jaxcomp.tar.gz -C jaxcomp; cd jaxcomp; \
python3 -m venv .venv; .venv/bin/pip install -q -e . 'jax[tpu]' \
  -f https://storage.googleapis.com/jax-releases/libtpu_releases.html; \
.venv/bin/python -m jaxcomp.main --config=$config --workdir=$workdir$overrides"
run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$remote"
