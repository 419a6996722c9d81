#!/usr/bin/env bash
# Round 3 on one GPU: the discretized-logistic-mixture VLAE from scratch, two widths side by side.
# Data: whatever of CIFAR-10 train and photos is under $VLAECODEC_DATA.
# Usage: models/train_gpu_round3.sh MINUTES OUT_DIR
set -u
MIN=${1:-7}; OUT=${2:-out}; RUNS=runs
mkdir -p "$RUNS" "$OUT"
export PYTHONPATH=.:${PYTHONPATH:-} OMP_NUM_THREADS=3 PYTHONUNBUFFERED=1
T="python3 -m cli.main train --minutes $MIN --ckpt-minutes 2 --threads 3 --resume"
COMMON="--data cifar10+photos --likelihood logistic --mixtures 5 --grey-frac 0.1 --z-channels 8 --batch-size 128 --lr 2e-3 --val-every 1000 --steps 12000"
$T --out $RUNS/dlm96 $COMMON --hidden 96 --pixel-hidden 96 > $RUNS/dlm96.log 2>&1 &
$T --out $RUNS/dlm64 $COMMON --hidden 96 --pixel-hidden 64 > $RUNS/dlm64.log 2>&1 &
wait
for r in dlm96 dlm64; do
  cp $RUNS/$r/checkpoint.safetensors "$OUT/$r.checkpoint.safetensors"
  tar -czf "$OUT/$r.tgz" -C $RUNS $r/model.safetensors $r/model.json $r/log.jsonl $r.log
done
