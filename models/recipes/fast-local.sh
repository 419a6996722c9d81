#!/usr/bin/env bash
# `fast-local`: `fast` without its latent (--no-latent: z = 0 everywhere, no encoder, no rate),
# fine-tuned from `fast` on CIFAR-10 plus crops of the photos, photos-wall and graphics (held-out
# images excluded), one CPU thread.  Its files carry no z, so neither the encoder nor the decoder
# runs the posterior or the z-decoder (two-fifths of a lossless decode's work with `fast`):
#   models/recipes/fast-local.sh RUN MINUTES [INIT]      (INIT: weights to start from, default fast)
# A further run can start from the zoo's weights: INIT=models/fast-local.safetensors (a fresh
# optimiser; a lower rate, LR=1e-4, keeps it from undoing them).
set -euo pipefail
RUN=${1:-runs/local}
MIN=${2:-95}
INIT=${3:-fast}
LR=${LR:-3e-4}
vlaecodec train --out "$RUN" --init "$INIT" --no-latent --data cifar10+broad --photo-frac 0.7 --grey-frac 0.1 \
  --batch-size 32 --lr "$LR" --warmup 100 --steps 1000000 --fit-minutes "$MIN" --ckpt-minutes 4 \
  --val-every 1000 --threads 1
vlaecodec export "$RUN" fast-local --force
