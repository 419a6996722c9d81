#!/usr/bin/env bash
# The lossy model (`lossy` in the zoo): a variable-rate mean-scale hyperprior, 64/96 channels,
# trained on random 128x128 crops of the photos, photos-wall and graphics (minus 4 held-out
# images of each of the last two), one CPU thread. Rerunning resumes from the run's
# checkpoint; the best held-out weights are kept in RUN/best.safetensors.
#   models/recipes/lossy.sh RUN MINUTES [INIT]
# INIT: start from these weights with a fresh optimiser (e.g. models/lossy.safetensors, to
# continue the shipped model on another machine).
set -euo pipefail
RUN=${1:-runs/lossy}
MINUTES=${2:-60}
INIT=${3:-}
vlaecodec train-lossy --out "$RUN" --n 64 --m 96 --lr 3e-4 --threads 1 --val-minutes 8 \
  --minutes "$MINUTES" ${INIT:+--init "$INIT"}
vlaecodec export-lossy "$RUN" lossy --force
python -m bench.rd
