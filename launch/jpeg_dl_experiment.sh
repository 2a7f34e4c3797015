#!/usr/bin/env bash
# Baseline vs JPEG-DL, same architecture and schedule, seeds 0..N-1, on local real data.
#
#   launch/jpeg_dl_experiment.sh ROOT VARIANT EPOCHS [SEEDS] [extra --config.* overrides]
#   launch/jpeg_dl_experiment.sh runs/jdl sample 2 3
#
# For each seed: the baseline (no JPEG layer), then JPEG-DL with its tables
# initialised by sensitivity from that seed's baseline (JPEG_DL.md's recipe).
# Finished runs are skipped; interrupted ones resume. Then the table:
#   python launch/summarize.py ROOT/VARIANT
set -euo pipefail
root="$1" variant="$2" epochs="$3" seeds="${4:-3}"
shift $(( $# < 4 ? $# : 4 ))
py="${PYTHON:-python}"
for ((seed = 0; seed < seeds; seed++)); do
  base="$root/$variant/baseline_seed$seed"
  jdl="$root/$variant/jpeg_dl_seed$seed"
  [[ -f "$base/summary.json" ]] || "$py" -m jaxcomp.main \
      --config="configs/jpeg_dl.py:variant=$variant,epochs=$epochs,seed=$seed,jpeg_layer=False" \
      --workdir="$base" --config.train.progress_bar=False "$@"
  [[ -f "$jdl/summary.json" ]] || "$py" -m jaxcomp.main \
      --config="configs/jpeg_dl.py:variant=$variant,epochs=$epochs,seed=$seed,init=sensitivity,sensitivity_checkpoint=$base" \
      --workdir="$jdl" --config.train.progress_bar=False "$@"
done
