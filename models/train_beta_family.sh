#!/usr/bin/env bash
# The beta family: fine-tune the default model (beta = 1) at other betas, on this 2-core CPU.
# Each fine-tune starts from models/default.safetensors with a fresh optimizer, bf16 autocast,
# one thread, a short cosine schedule; then it is exported into the zoo as beta-<B>.
# Usage: models/train_beta_family.sh [MINUTES_EACH] [BETA ...]
set -eu
MIN=${1:-10}; shift || true
BETAS=${*:-"0.5 16 0.125 4 0.25 2"}
for B in $BETAS; do
  vlaecodec train --init default --out runs/ft-beta$B --beta "$B" \
    --data cifar10+photos --likelihood logistic --mixtures 5 --grey-frac 0.1 --z-channels 8 \
    --hidden 96 --pixel-hidden 96 --batch-size 32 --lr 5e-4 --warmup 50 --steps 600 \
    --minutes "$MIN" --ckpt-minutes 3 --val-every 300 --threads 1 --cifar-parts 0,1,2,3,4
done
