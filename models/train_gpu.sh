#!/usr/bin/env bash
# One round of GPU training: every run of the zoo in parallel on one GPU, each resuming its
# run folder if present.  Usage: models/train_gpu.sh MINUTES RUNS_DIR OUT_DIR
# Runs from the repo root with PYTHONPATH=. (the lent machine has torch but not the package).
set -u
MIN=${1:-8}; RUNS=${2:-runs}; OUT=${3:-out}
mkdir -p "$RUNS" "$OUT"
export PYTHONPATH=.:${PYTHONPATH:-} OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
T="python3 -m cli.main train --minutes $MIN --ckpt-minutes 2 --threads 2 --resume"
RGB="--batch-size 128 --lr 2e-3 --val-every 1000 --hidden 96 --pixel-hidden 64 --z-channels 8"
BIN="--data bmnist --batch-size 128 --lr 1e-3 --val-every 1000 --hidden 64 --pixel-hidden 64 --z-channels 4 --steps 30000"
run() { name=$1; shift; $T --out "$RUNS/$name" "$@" > "$RUNS/$name.log" 2>&1; }
run default  --data cifar10+photos $RGB --grey-frac 0.1 --steps 60000 &
run cifaronly --data cifar10 $RGB --grey-frac 0.1 --steps 60000 &
run arprior  --data cifar10+photos $RGB --grey-frac 0.1 --prior ar --steps 60000 &
run wide     --data cifar10+photos --batch-size 128 --lr 2e-3 --val-every 1000 --hidden 128 --pixel-hidden 128 --z-channels 8 --grey-frac 0.1 --steps 60000 &
run bmnist-local $BIN --decoder local --window 4 2 &
run bmnist-full  $BIN --decoder full &
run bmnist-fact  $BIN --decoder factorized &
wait
for d in "$RUNS"/*/; do n=$(basename "$d"); tar -czf "$OUT/$n.tgz" -C "$RUNS" "$n" "$n.log"; done
