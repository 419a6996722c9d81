#!/usr/bin/env bash
# Export the beta family's fine-tunes (models/train_beta_family.sh) into the zoo as beta-<B>
# and measure each on CIFAR-10 test and Kodak (results go into the cards).
# Usage: models/finalize_beta_family.sh [BETA ...]
set -eu
BETAS=${*:-"0.125 0.25 0.5 2 4 16"}
for B in $BETAS; do
  vlaecodec export "runs/ft-beta$B" "beta-$B" --force
  vlaecodec eval --model "beta-$B" --data cifar10-test --limit 1000 --json --update-card --batch-size 250
  vlaecodec eval --model "beta-$B" --data kodak --json --update-card
done
