#!/usr/bin/env bash
# Baseline vs JPEG-DL, same architecture and schedule, seeds 0..N-1, on local real data.
#
#   launch/jpeg_dl_experiment.sh ROOT VARIANT EPOCHS [SEEDS] [extra --config.* overrides]
#   launch/jpeg_dl_experiment.sh runs/jdl sample 2 3
#   PARALLEL=1 launch/jpeg_dl_experiment.sh runs/jdl cifar10 20 3   # seeds side by side
#
# For each seed: the baseline (no JPEG layer), then JPEG-DL with its tables
# initialised by sensitivity from that seed's baseline (JPEG_DL.md's recipe), in
# every arm of ARMS (default "jpeg_dl"): "jpeg_dl" (the authors' layer, b = 8),
# "jpeg_dl_auto" (bits="auto": a window that never clips), "jpeg_dl_noclip"
# (initial steps floored so nothing clips at b = 8, step_floor="no_clip").
# Finished runs are skipped; interrupted ones resume. PARALLEL=1 runs the seeds
# as concurrent processes sharing one accelerator (no memory preallocation;
# each seed's log goes to ROOT/VARIANT/seed<k>.log): small models leave most of
# a GPU idle otherwise. Then the table:
#   python launch/summarize.py ROOT/VARIANT
set -euo pipefail
root="$1" variant="$2" epochs="$3" seeds="${4:-3}"
shift $(( $# < 4 ? $# : 4 ))
py="${PYTHON:-python}"
arms="${ARMS:-jpeg_dl}"

arm_args() {
  case "$1" in
    jpeg_dl) ;;
    jpeg_dl_auto) echo "--config.model.jpeg.bits=auto" ;;
    jpeg_dl_noclip) echo "--config.model.jpeg.step_floor=no_clip" ;;
    *) echo "unknown arm $1 (jpeg_dl, jpeg_dl_auto, jpeg_dl_noclip)" >&2; return 2 ;;
  esac
}

run_seed() {
  local seed="$1"; shift
  local base="$root/$variant/baseline_seed$seed"
  [[ -f "$base/summary.json" ]] || "$py" -m jaxcomp.main \
      --config="configs/jpeg_dl.py:variant=$variant,epochs=$epochs,seed=$seed,jpeg_layer=False" \
      --workdir="$base" --config.train.progress_bar=False "$@"
  local arm extra
  for arm in $arms; do
    extra=$(arm_args "$arm")
    # shellcheck disable=SC2086  # extra is zero or one word
    [[ -f "$root/$variant/${arm}_seed$seed/summary.json" ]] || "$py" -m jaxcomp.main \
        --config="configs/jpeg_dl.py:variant=$variant,epochs=$epochs,seed=$seed,init=sensitivity,sensitivity_checkpoint=$base" \
        --workdir="$root/$variant/${arm}_seed$seed" --config.train.progress_bar=False $extra "$@"
  done
}

if [[ "${PARALLEL:-0}" == 1 ]]; then
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  mkdir -p "$root/$variant"
  pids=()
  for ((seed = 0; seed < seeds; seed++)); do
    run_seed "$seed" "$@" >"$root/$variant/seed$seed.log" 2>&1 &
    pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  exit $status
fi
for ((seed = 0; seed < seeds; seed++)); do
  run_seed "$seed" "$@"
done
