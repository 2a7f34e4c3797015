#!/bin/sh
# The experiments of docs/compressed_domain.md (issue 19), and the table they make.
#
#   launch/compressed_domain.sh run <name> [seed]   # one run into $RUNS/<name>[-s<seed>]
#   launch/compressed_domain.sh all                  # every run below, one after another
#   launch/compressed_domain.sh collect              # $RUNS/*/ -> docs/compressed_domain.json
#
# Names: latents-q<1..4> (frozen encoder, cached latents), pixels (original
# JPEG-q75 pixels), decoded-q<1..4> (the codec's reconstructions), and, from
# $RUNS/latents-q1: joint-q1-a0 (encoder fine-tuned, CE only), joint-q1-rd
# (CE + 1 bpp + 0.0018 MSE, the q1 model's own rate-distortion weight) and
# frozen-q1-cont (the same extra epoch with the encoder frozen: the control).
# Every run: a fixed (seed-0) subset of 5,000 train / 1,000 test images of the
# shipped CIFAR-10 (JPEG q75) sample, upsampled 4x to 128x128 (8x8 latents),
# cResNet width 0.25, batch 128.
set -e
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/compressed_domain}
PY=${PY:-.venv/bin/python}
COMMON="--config.data.num_train_examples=5000 --config.data.num_eval_examples=1000 --config.train.progress_bar=False"
FT="--config.compressed_domain.init_from=$RUNS/latents-q1"

args() {  # name -> config arguments and extra flags
  case $1 in
    latents-q*) echo "quality=${1#latents-q},width=0.25,epochs=10" ;;
    decoded-q*) echo "variant=decoded,quality=${1#decoded-q},width=0.25,epochs=10" ;;
    pixels) echo "variant=pixels,width=0.25,epochs=10" ;;
    joint-q1-a0) echo "quality=1,width=0.25,epochs=1,lr=0.01,encoder=joint $FT" ;;
    joint-q1-rd) echo "quality=1,width=0.25,epochs=1,lr=0.01,encoder=joint,rate_weight=1.0,distortion_weight=0.0018 $FT --config.compressed_domain.eval_psnr=True" ;;
    frozen-q1-cont) echo "quality=1,width=0.25,epochs=1,lr=0.01 $FT" ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

run() {  # name [seed]
  set -- "$1" "${2:-0}" $(args "$1")
  name=$1; seed=$2; cfg=$3; shift 3
  dir=$RUNS/$name; [ "$seed" = 0 ] || dir=$dir-s$seed
  echo "=== $dir $(date -u)"
  nice -n 10 $PY -m jaxcomp.main --config=configs/compressed_domain.py:$cfg --workdir="$dir" \
    --config.seed="$seed" $COMMON "$@" > "$dir.log" 2>&1
  grep '"eval"' "$dir/metrics.jsonl" | tail -1
}

case $1 in
  run) run "$2" "$3" ;;
  all) for n in latents-q1 latents-q4 pixels latents-q2 decoded-q1 joint-q1-a0 joint-q1-rd \
                frozen-q1-cont latents-q3 decoded-q4 decoded-q2 decoded-q3; do run $n; done ;;
  collect) RUNS=$RUNS $PY - <<'EOF'
import json, os, pathlib
from jaxcomp import writers
runs = pathlib.Path(os.environ["RUNS"])
rows, partial = [], []
for metrics in sorted(runs.glob("*/metrics.jsonl")):
  d = metrics.parent
  c = json.loads((d / "config.json").read_text())
  cd = c["compressed_domain"]
  lines = [json.loads(l) for l in metrics.read_text().splitlines()]
  evals = [[e["step"], e["accuracy"]] for e in lines if e["split"] == "eval"]
  row = {"name": d.name, "input": cd["input"], "encoder": cd["encoder"],
         "codec": cd["codec"] if cd["input"] != "pixels" else "",
         "rate_weight": cd["rate_weight"], "distortion_weight": cd["distortion_weight"],
         "init_from": pathlib.Path(cd["init_from"]).name, "epochs": c["train"]["epochs"],
         "batch_size": c["train"]["batch_size"], "learning_rate": c["optim"]["learning_rate"],
         "width": cd["width"], "train_examples": c["data"]["num_train_examples"],
         "eval_examples": c["data"]["num_eval_examples"], "seed": c["seed"]}
  if not (d / "summary.json").exists():   # stopped before its end: what it logged
    last = [e for e in lines if e["split"] == "train"][-1:]
    partial.append({**row, "last_train": last[0] if last else None, "evals": evals})
    continue
  s = json.loads((d / "summary.json").read_text())
  rows.append({**row, "steps": s["final_step"], "train_seconds": round(s["train_seconds"]),
               **s["eval"], "best_accuracy": max(a for _, a in evals), "evals": evals})
out = {"setting": "CIFAR-10 (JPEG q75) sample shipped with jaxcomp: a fixed (seed-0) subset "
                  "of 5000 train / 1000 test images; 32x32 upsampled 4x (bilinear) to 128x128 for the codec "
                  "(8x8 latents); cResNet width 0.25; 2 shared CPU cores (seed 0 runs: load average 25-40; seeds 1-2 and joint-q1-rd: 3-7, this session's own parallel runs)",
       "runs": rows, "partial_runs": partial}
writers.write_atomic("docs/compressed_domain.json", json.dumps(out, indent=1) + "\n")
print(len(rows), "runs,", len(partial), "partial")
EOF
  ;;
  *) sed -n 2,15p "$0"; exit 2 ;;
esac
