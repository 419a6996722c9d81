#!/usr/bin/env bash
# Round 5 on one GPU: continue round 4's batch-256 run (runs/gpu4/c256, brought as
# .carry/c256.safetensors) on the data round 4 did not see: CIFAR-10 train mosaics 0,1 and
# another 88 of the photos (what fits the 64 MiB transfer), lower peak learning rate.
# Usage: models/train_gpu_round5.sh MINUTES OUT_DIR [INIT]
set -u
MIN=${1:-4}; OUT=${2:-out}; INIT=${3:-.carry/c256.safetensors}; RUNS=runs
mkdir -p "$RUNS" "$OUT"
export PYTHONPATH=.:${PYTHONPATH:-} OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
python3 -m cli.main train --init "$INIT" --fit-minutes "$MIN" --ckpt-minutes 2 --threads 2 \
  --loader-threads 10 --data cifar10+photos --grey-frac 0.1 --photo-frac 0.5 --warmup 200 \
  --val-every 1000 --steps 1000000 --batch-size 256 --lr 6e-4 --out $RUNS/r5 > $RUNS/r5.log 2>&1
tail -c 1500 $RUNS/r5.log
cp $RUNS/r5/model.safetensors "$OUT/r5.safetensors"
cp $RUNS/r5/model.json "$OUT/r5.json"
cp $RUNS/r5.log "$OUT/r5.log"
