#!/usr/bin/env bash
# Round 4 on one GPU: continue the default model from its shipped weights (fresh Adam, a new
# warm-up and cosine whose length is fitted to the time budget), two batch sizes side by side.
# Data: whatever of CIFAR-10 train and the photos is under $VLAECODEC_DATA (on the lent
# machine: mosaics 2,3 and 89 of the 177 photos, what fits its 64 MiB transfer).
# Usage: models/train_gpu_round4.sh MINUTES OUT_DIR
set -u
MIN=${1:-8}; OUT=${2:-out}; RUNS=runs
mkdir -p "$RUNS" "$OUT"
export PYTHONPATH=.:${PYTHONPATH:-} OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
T="python3 -m cli.main train --init default --fit-minutes $MIN --ckpt-minutes 2 --threads 2 --loader-threads 6"
COMMON="--data cifar10+photos --grey-frac 0.1 --photo-frac 0.5 --warmup 300 --val-every 1000 --steps 1000000"
$T --out $RUNS/c128 $COMMON --batch-size 128 --lr 8e-4 > $RUNS/c128.log 2>&1 &
$T --out $RUNS/c256 $COMMON --batch-size 256 --lr 1.2e-3 > $RUNS/c256.log 2>&1 &
wait
for r in c128 c256; do
  tail -c 3000 $RUNS/$r.log
  cp $RUNS/$r/model.safetensors "$OUT/$r.safetensors"
  cp $RUNS/$r/model.json "$OUT/$r.json"
  cp $RUNS/$r.log "$OUT/$r.log"
done
