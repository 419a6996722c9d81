#!/usr/bin/env bash
# Round 2 on one GPU: continue the default model with a decaying learning rate, and fine-tune
# the beta family from the round-1 default checkpoint (.carry/init/checkpoint.safetensors).
# Usage: models/train_gpu_round2.sh MINUTES OUT_DIR
set -u
MIN=${1:-8}; OUT=${2:-out}; RUNS=runs
mkdir -p "$RUNS" "$OUT"
export PYTHONPATH=.:${PYTHONPATH:-} OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
T="python3 -m cli.main train --minutes $MIN --ckpt-minutes 2 --threads 2 --resume"
for b in default beta0.5 beta2 beta4 beta8 beta16; do
  mkdir -p "$RUNS/$b"; cp .carry/init/checkpoint.safetensors "$RUNS/$b/"
done
$T --out $RUNS/default --batch-size 256 --steps 15000 --val-every 1000 > $RUNS/default.log 2>&1 &
for b in 0.5 2 4 8 16; do
  $T --out $RUNS/beta$b --beta $b --batch-size 128 --steps 14000 --val-every 1000 > $RUNS/beta$b.log 2>&1 &
done
wait
cp $RUNS/default/checkpoint.safetensors "$OUT/default.checkpoint.safetensors"
tar -czf "$OUT/default.tgz" -C $RUNS default/model.safetensors default/model.json default/log.jsonl default.log
for b in 0.5 2 4 8 16; do
  tar -czf "$OUT/beta$b.tgz" -C $RUNS beta$b/model.safetensors beta$b/model.json beta$b/log.jsonl beta$b.log
done
