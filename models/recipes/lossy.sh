#!/usr/bin/env bash
# The lossy model (`lossy` in the zoo): a variable-rate mean-scale hyperprior, 64-channel
# transforms and a 256-channel latent, trained at 11 betas (3200 .. 5) on random 128x128
# crops of the photos, photos-wall and graphics (minus 4 held-out images of each of the last
# two), one CPU thread. Rerunning resumes from the run's checkpoint; the best held-out weights
# are kept in RUN/best.safetensors.
#   models/recipes/lossy.sh RUN MINUTES [INIT]
# INIT: start from these weights with a fresh optimiser: models/lossy.safetensors continues
# the shipped model on another machine; models/lossy-0.5.safetensors (96 channels, 8 betas)
# is widened to 256 channels and 11 betas first, as the shipped model was made.
set -euo pipefail
RUN=${1:-runs/lossy}
MINUTES=${2:-60}
INIT=${3:-}
vlaecodec train-lossy --out "$RUN" --n 64 --m 256 --lr 1e-4 --threads 1 --val-minutes 10 \
  --betas 3200,1600,800,428,229,122,65.4,35,18.7,10,5 --minutes "$MINUTES" ${INIT:+--init "$INIT"}
vlaecodec export-lossy "$RUN" lossy --force
python -m bench.rd
