#!/usr/bin/env bash
# The beta family: the default model fine-tuned at other betas (rate weights), one CPU thread
# each, then exported into the zoo as beta-<B> and measured (the results go into the cards).
# A higher beta puts fewer bits in z: `vlaecodec encode --lossy --beta B` picks the model.
#
# Usage (from the repository root): models/recipes/beta_family.sh [MINUTES_EACH] [BETA ...]
# INIT names the weights to start from: the shipped family was fine-tuned from the 0.2
# default, `INIT=default-0.2 models/recipes/beta_family.sh 11` (their cards hold each command).
set -eu
MIN=${1:-11}; shift || true
BETAS=${*:-"0.125 0.25 0.5 2 4 16"}
INIT=${INIT:-default}
for B in $BETAS; do
  vlaecodec train --init "$INIT" --out "runs/ft-beta$B" --beta "$B" \
    --data cifar10+photos --likelihood logistic --mixtures 5 --grey-frac 0.1 --z-channels 8 \
    --hidden 96 --pixel-hidden 96 --batch-size 32 --lr 5e-4 --warmup 50 --steps 600 \
    --minutes "$MIN" --ckpt-minutes 3 --val-every 300 --threads 1 --cifar-parts 0,1,2,3,4
  vlaecodec export "runs/ft-beta$B" "beta-$B" --force
  vlaecodec eval --model "beta-$B" --data cifar10-test --limit 1000 --json --update-card --batch-size 250
  vlaecodec eval --model "beta-$B" --data kodak --json --update-card
done
