#!/usr/bin/env bash
# Export the default model from its run folder into the zoo and measure it (cards updated).
# Usage: models/finalize_default.sh RUN_DIR
set -eu
RUN=${1:-runs/dlm96b}
vlaecodec export "$RUN" default --force
vlaecodec eval --model default --data cifar10-test --json --update-card --batch-size 200
vlaecodec eval --model default --data kodak --json --update-card
