#!/usr/bin/env bash
# The seed's comparison on this 2-core CPU (one thread, MIN minutes each): a full-window
# PixelCNN VAE on binarized MNIST (the VLAE and factorized rows were trained on an H100, see
# their cards), and the three decoders at one size and one budget on CIFAR-10.
# The full PixelCNN has 6 gated layers (models/seed_full.json) so that a step fits the CPU.
# Usage: models/train_seed_table.sh [MINUTES_EACH]
set -eu
MIN=${1:-12}
common="--minutes $MIN --ckpt-minutes 3 --threads 1 --val-every 250 --seed 0"
vlaecodec train --config models/seed_full.json --out runs/bmnist-full --data bmnist --decoder full \
  --batch-size 32 --lr 1e-3 --hidden 64 --pixel-hidden 32 --z-channels 4 --steps 1500 $common
for dec in factorized full local; do
  vlaecodec train --config models/seed_full.json --out runs/cifar-$dec --data cifar10 --decoder $dec \
    --likelihood logistic --mixtures 5 --hidden 64 --pixel-hidden 32 --z-channels 8 --batch-size 16 \
    --lr 1e-3 --steps 1500 --cifar-parts 0,1,2,3,4 $common
done
