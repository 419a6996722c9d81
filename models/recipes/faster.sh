#!/usr/bin/env bash
# A narrower `fast`, in the making and not in the zoo: `fast` cut to inner widths 32 (encoder,
# z decoder) and 16 (pixel decoder), residual streams kept whole, fine-tuned against the
# default (its posterior and its pixel features) on CIFAR-10 plus crops of the photos,
# photos-wall and graphics (held-out images excluded), one CPU thread.  About 35% fewer
# multiply-adds per pixel in the pixel decoder than `fast`, and fewer in the encoder and z
# decoder, for the lossless decode's speed; after 5,241 steps it decoded kodim23 11-22% faster
# than `fast` (two runs) for 1.22% more bits (its card's notes).  models/recipes/faster-wip.safetensors
# holds the weights so far (its .json beside them: steps, time, validation); the run goes on
# from them with a fresh optimiser:
#   models/recipes/faster.sh RUN MINUTES [INIT]      (INIT: a .safetensors, default the wip)
# and it starts from scratch with INIT=prune, which cuts `fast` first (as it was begun):
#   python -m vlaecodec.prune --model fast --inner 32 --pixel-inner 16 --out RUN/pruned.safetensors
set -euo pipefail
RUN=${1:-runs/faster}
MIN=${2:-110}
INIT=${3:-models/recipes/faster-wip.safetensors}
mkdir -p "$RUN"
if [ "$INIT" = prune ]; then
  python -m vlaecodec.prune --model fast --inner 32 --pixel-inner 16 --out "$RUN/pruned.safetensors"
  INIT="$RUN/pruned.safetensors"
fi
vlaecodec train --out "$RUN" --init "$INIT" --data cifar10+broad --photo-frac 0.7 --grey-frac 0.1 \
  --batch-size 32 --lr 5e-4 --warmup 50 --steps 1000000 --fit-minutes "$MIN" --ckpt-minutes 4 \
  --val-every 1000 --threads 1 --teacher default --distill 10 --distill-features 1
