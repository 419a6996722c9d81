#!/usr/bin/env bash
# The fast model (`fast` in the zoo): the default model with its inner layers cut to 48
# (encoder, z-decoder) and 32 (pixel decoder) channels, its residual streams kept whole, then
# fine-tuned against the default on CIFAR-10 plus crops of the photos, photos-wall and
# graphics (held-out images excluded), one CPU thread. As it was made (two stages: the first
# matched only the teacher's posterior; the second also its pixel features):
#   models/recipes/fast.sh RUN [MINUTES_1 MINUTES_2]
set -euo pipefail
RUN=${1:-runs/fast}
M1=${2:-13}
M2=${3:-70}
python -m vlaecodec.prune --model default --inner 48 --pixel-inner 32 --out "$RUN-a/pruned.safetensors"
common=(--data cifar10+broad --photo-frac 0.7 --grey-frac 0.1 --batch-size 32 --steps 1000000
        --ckpt-minutes 4 --val-every 1000 --threads 1 --teacher default --distill 10)
vlaecodec train --out "$RUN-a" --init "$RUN-a/pruned.safetensors" "${common[@]}" --lr 5e-4 --warmup 100 \
  --fit-minutes 85 --minutes "$M1"
vlaecodec train --out "$RUN" --init "$RUN-a/model.safetensors" "${common[@]}" --lr 5e-4 --warmup 50 \
  --fit-minutes "$M2" --distill-features 1
vlaecodec export "$RUN" fast --force
