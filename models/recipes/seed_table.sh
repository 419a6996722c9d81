#!/usr/bin/env bash
# The seed's comparison (README, "The seed's comparison"): a factorized decoder, a full
# PixelCNN and the local window (VLAE), on binarized MNIST and on CIFAR-10, exported into the
# zoo, then measured by bench.seed (which writes bench/results/seed.* and the cards).
#
# Usage (from the repository root): models/recipes/seed_table.sh [MINUTES_EACH] [GPU_MINUTES]
# The binarized-MNIST VLAE and factorized models want a GPU: the shipped ones had 8.2 minutes
# each on an H100 (batch 128).  The other four had 12 minutes each on one CPU thread; the full
# PixelCNN has 6 gated layers (models/recipes/seed_full.json) so that a step fits a CPU.
set -eu
MIN=${1:-12}; GPU_MIN=${2:-8.2}
BIN="--data bmnist --hidden 64 --z-channels 4 --lr 1e-3"
GPU="$BIN --pixel-hidden 64 --batch-size 128 --steps 30000 --minutes $GPU_MIN --ckpt-minutes 2 --val-every 1000 --threads 2"
common="--minutes $MIN --ckpt-minutes 3 --val-every 250 --seed 0 --threads 1"
vlaecodec train --out runs/bmnist-local $GPU --decoder local --window 4 2
vlaecodec train --out runs/bmnist-factorized $GPU --decoder factorized
vlaecodec train --config models/recipes/seed_full.json --out runs/bmnist-full $BIN --decoder full \
  --pixel-hidden 32 --batch-size 32 --steps 1500 $common
for dec in factorized full local; do
  vlaecodec train --config models/recipes/seed_full.json --out runs/cifar-$dec --data cifar10 --decoder $dec \
    --likelihood logistic --mixtures 5 --hidden 64 --pixel-hidden 32 --z-channels 8 --batch-size 16 \
    --lr 1e-3 --steps 1500 --cifar-parts 0,1,2,3,4 $common
done
for name in bmnist-local bmnist-factorized bmnist-full cifar-factorized cifar-full cifar-local; do
  vlaecodec export "runs/$name" "$name" --force
done
python -m bench.seed --n 1000 --iw-n 500 --iw 16
