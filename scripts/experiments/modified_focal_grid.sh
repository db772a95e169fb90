#!/usr/bin/env bash
# The modified-focal question (docs/results.md): focal vs the proposal's modified focal loss at
# gamma in {0.5, 1, 2} x max_weight in {3, 10, 100, none}, and EFL, on the CPU preset.
#   bash scripts/experiments/modified_focal_grid.sh [SEEDS] [ITERS] [OUT]
# Defaults: seeds 0,1,2 at the preset's 1,000 iterations (~13 runs x 3 seeds x 4 min on 2 cores).
# Every arm gets the same data, initialisation and schedule; compare is resumable, so an
# interrupted grid continues where it stopped.
set -euo pipefail
SEEDS=${1:-0,1,2}
ITERS=${2:-1000}
OUT=${3:-runs/modified_focal_grid}
FD=${FOCALDET:-focaldet}
COMMON=(configs/lt_stamps_cpu.yaml --seeds "$SEEDS" "train.max_iters=$ITERS"
        "train.milestones=[$((ITERS * 85 / 100))]" "train.eval_interval=0" "train.ckpt_interval=$ITERS")
for g in 0.5 1 2; do
  $FD compare "${COMMON[@]}" --losses focal --sweep modified_focal.max_weight=3,10,100,null \
      modified_focal.gamma=$g --out "$OUT/gamma$g"
done
$FD compare "${COMMON[@]}" --losses focal,equalized_focal --out "$OUT/efl"
