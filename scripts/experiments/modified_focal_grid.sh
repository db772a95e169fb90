#!/usr/bin/env bash
# The modified-focal question (docs/results.md §2): focal vs the proposal's modified focal loss at
# gamma in {0.5, 1, 2} x max_weight in {3, 10, 100, none}, on the CPU preset.
#   bash scripts/experiments/modified_focal_grid.sh [SEEDS] [ITERS] [OUT] [key=value ...]
# SEEDS: a count (3 = seeds 0,1,2) or a list (0,1,2). docs/results.md §2 was made with: 1 500 runs/mfl_grid
# runtime.threads=1. Every arm gets the same data, initialisation and schedule; compare is
# resumable, so an interrupted grid continues where it stopped. Focal is trained once (in the
# gamma=2 folder); the other folders are paired against their max_weight=10 arm.
set -euo pipefail
SEEDS=${1:-3}
ITERS=${2:-1000}
OUT=${3:-runs/mfl_grid}
shift $(( $# < 3 ? $# : 3 ))
FD=${FOCALDET:-focaldet}
C=(lt_stamps_cpu --seeds "$SEEDS" "train.max_iters=$ITERS" "train.milestones=[$((ITERS * 85 / 100))]"
   train.eval_interval=0 "train.ckpt_interval=$ITERS" "$@")
$FD compare "${C[@]}" --losses focal --sweep modified_focal.max_weight=3,10,100,null \
    modified_focal.gamma=2 --out "$OUT/gamma2"
for g in 1 0.5; do
  $FD compare "${C[@]}" --sweep modified_focal.max_weight=3,10,100,null modified_focal.gamma=$g \
      --baseline modified_focal-max_weight10 --out "$OUT/gamma$g"
done
