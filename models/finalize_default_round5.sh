#!/usr/bin/env bash
# Make round 5's model (models/train_gpu_round4.sh then models/train_gpu_round5.sh, both on a
# lent H200) the default.  The previous default stays in the zoo as `default-0.2`, so files
# made with it still decode.  Its card's training history is carried into the new card.
# Usage: models/finalize_default_round5.sh ROUND4_CARD ROUND5_DIR
# (ROUND5_DIR holds r5.safetensors and r5.json as the lent machine returned them)
set -eu
R4=${1:-runs/gpu4/c256.json}; R5=${2:-runs/gpu5}; RUN=runs/default-r5
if [ ! -e models/default-0.2.safetensors ]; then
  git mv models/default.safetensors models/default-0.2.safetensors
  git mv models/default.json models/default-0.2.json
fi
mkdir -p $RUN && cp "$R5/r5.safetensors" $RUN/model.safetensors
python3 - "$R4" "$R5/r5.json" $RUN/model.json <<'PY'
import json, sys
from pathlib import Path
old = json.loads(Path("models/default-0.2.json").read_text())
r4, r5 = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])
old["name"] = "default-0.2"
old["superseded_by"] = "default (vlaecodec 0.3): files made with this model still decode with it"
Path("models/default-0.2.json").write_text(json.dumps(old, indent=2) + "\n")
for beta_card in Path("models").glob("beta-*.json"):  # the beta family was fine-tuned from it
    c = json.loads(beta_card.read_text())
    if c.get("init") == "default":
        c["init"] = "default-0.2"
        beta_card.write_text(json.dumps(c, indent=2) + "\n")
segments, step = [], 0
for card in (old, r4, r5):  # one history: each segment's steps counted from the first
    for s in card["training_segments"]:
        n = s["end_step"] - s["start_step"]
        segments.append({**s, "start_step": step, "end_step": step + n})
        step += n
card = {k: v for k, v in r5.items() if k not in ("init", "sha256")}
card.update(
    steps=step, training_segments=segments,
    train_seconds=round(sum(s["seconds"] for s in segments), 1),
    training_data=old["training_data"],
    training_notes=(
        "Segments 1-4: the previous default, default-0.2 (see its card). Segment 5 (H200, "
        "models/train_gpu_round4.sh, run c256): from default-0.2's weights with a fresh Adam, "
        "CIFAR-10 train mosaics 2,3 and 89 of the photos; segment 6 (H200, "
        "models/train_gpu_round5.sh): from segment 5's weights, mosaics 0,1 and 88 other photos "
        "(what fits the lent machine's 64 MiB transfer). Batch 256, bf16 autocast, the cosine "
        "schedule fitted to the minutes given (--fit-minutes). Steps are counted across segments; "
        "segments 5-6 use batch 256 against 32-128 before."),
    hardware_total="H100: 428 s; H200: {:.0f} s; CPU (AMD EPYC, 1 thread): 3443 s".format(
        sum(s["seconds"] for s in segments if "H200" in s["hardware"])),
)
Path(sys.argv[3]).write_text(json.dumps(card, indent=2) + "\n")
PY
vlaecodec export $RUN default --force
