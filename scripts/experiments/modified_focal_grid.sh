#!/usr/bin/env bash
# The modified-focal question (docs/results.md §2): focal, EFL and the proposal's modified focal
# loss at gamma in {0.5, 1, 2} x max_weight in {3, 10, 100, none}, on a CPU preset, in ONE
# comparison so that every arm is paired against focal on the same seeds.
#   [CONFIG=lt_stamps_cpu] bash scripts/experiments/modified_focal_grid.sh [SEEDS] [OUT] [key=value ...]
# SEEDS: a count (3 = seeds 0,1,2) or a list (0,1,2). docs/results.md §2's first block (the demo's
# bf16 preset, docs/results/modified-focal-grid) was made with
#   bash scripts/experiments/modified_focal_grid.sh 3 runs/mfl_grid_bf16
# its 64-channel block with the 64-channel overrides that docs/results.md's introduction lists and
#   bash scripts/experiments/modified_focal_grid.sh 3 runs/mfl_grid runtime.threads=1 data.sampler=uniform data.generator.val=200
# and its from-scratch table (§2b) with
#   CONFIG=lt_stamps_cpu_scratch bash scripts/experiments/modified_focal_grid.sh 3 runs/mfl_grid3 runtime.threads=1
# the last two each started twice (one process per core): the processes share the runs through their run locks.
# compare is resumable: an interrupted grid continues where it stopped.
set -euo pipefail
SEEDS=${1:-3}
OUT=${2:-runs/mfl_grid}
shift $(( $# < 2 ? $# : 2 ))
FD=${FOCALDET:-focaldet}
CONFIG=${CONFIG:-lt_stamps_cpu}
exec $FD compare "$CONFIG" --losses focal,equalized_focal \
    --sweep modified_focal.gamma=0.5,1,2 --sweep modified_focal.max_weight=3,10,100,null --cross \
    --seeds "$SEEDS" --out "$OUT" "$@"
