#!/usr/bin/env bash
# The lossy model (`lossy` in the zoo): a variable-rate mean-scale hyperprior with a
# checkerboard context network (128 channels), 64-channel transforms and a 256-channel latent,
# trained at 11 betas (3200 .. 5) on random 128x128 crops of the photos, photos-wall and
# graphics (minus 4 held-out images of each of the last two), one CPU thread. Rerunning resumes
# from the run's checkpoint; the best held-out weights are kept in RUN/best.safetensors.
#   models/recipes/lossy.sh RUN MINUTES [INIT]
# The shipped model's last segment (o in its card's training curve) is three such runs, each resumed
# from the last one's checkpoint, at LR 1.6e-5, 1e-5 and 6e-6 falling to about 1e-6: held-out loss
# 1.2577 -> 1.2431; a further 36 minutes at 6e-6 did not beat it (best 1.2449). More training at
# these rates moves it by about its noise.
# INIT: start from these weights with a fresh optimiser (the rates ramp up over the first
# 1000 steps, so that it does not undo them): models/lossy.safetensors continues the shipped
# model on another machine (0.11's was 0.10's run resumed from its checkpoint, Adam state and
# all, for 99 more minutes: its card holds both commands); models/lossy-0.9.safetensors (no
# context network) grows one that starts at zero, as 0.10's model was made (98 minutes with
# these settings); models/lossy-0.5.safetensors (96 channels, 8 betas) is widened to 256
# channels and 11 betas first, as 0.7's was. A start from nothing wants a higher rate:
# LR=1e-4 LR_FINAL=1e-5 (0.4-0.9 trained at 3e-4 .. 1e-5).
set -euo pipefail
RUN=${1:-runs/lossy}
MINUTES=${2:-60}
INIT=${3:-}
LR=${LR:-5e-5}
LR_FINAL=${LR_FINAL:-3e-6}
vlaecodec train-lossy --out "$RUN" --n 64 --m 256 --context 128 --lr "$LR" --lr-final "$LR_FINAL" --ctx-lr 6 \
  --warmup 1000 --threads 1 --val-minutes 10 --betas 3200,1600,800,428,229,122,65.4,35,18.7,10,5 --minutes "$MINUTES" \
  ${INIT:+--init "$INIT"}
vlaecodec export-lossy "$RUN" lossy --force --fit-tables 46   # tables fitted to the symbols of 46 training crops
python -m bench.rd
