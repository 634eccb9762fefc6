#!/usr/bin/env bash
# Ablations of the few-image recipe (issue 14) on ALL-IDB2, the paper's 10 folds.
# Usage: run_ablation.sh RUNS DATA [SIZES]   (env LEUKOLEARN: the CLI, default leukolearn)
# Resumable: run it again and every finished job is kept.
set -euo pipefail
RUNS=$1; DATA=$2; SIZES=${3:-10,30}
LL=${LEUKOLEARN:-leukolearn}
mkdir -p "$RUNS"
run() {  # name, then sweep options
  local name=$1; shift
  local start=$SECONDS
  "$LL" sweep all-idb2 "$DATA" --out "$RUNS/$name" --sizes "$SIZES" --jobs 2 --no-progress "$@"
  echo "$name: $((SECONDS - start)) s" >> "$RUNS/wall_times.txt"
}
# A0 the paper preset; A1 + re-initialise dead networks (replicate 0 is A0's network unless it
# died) with 3 replicates (their mean is a 3-network ensemble); A2 + scale and colour jitter.
run paper
run restarts --restarts 3 --replicates 3
run robust-restarts --preset robust-all-binary --restarts 3 --replicates 3
# The recipe itself: 5 networks per fold and size, scored as one ensemble (replicates 0-2
# are the networks of "restarts"; a sweep trains them again).
run ensemble --preset ensemble-all-binary
# The paper's CNN with 4x its filters per block, one network per job.
run wide --model wide-cnn
# An ensemble of 3 wide CNNs (replicate 0 is the "wide" arm's network unless it died).
run wide-ensemble3 --model wide-cnn --restarts 3 --replicates 3 --ensemble
# Optimiser and label smoothing, one network per job (docs/results/all-idb2-recipe/optimiser-smoothing).
run smooth01 --label-smoothing 0.1
run adam --optimizer adam
run adam-lr3e-4 --optimizer adam --lr 3e-4
# A learning-rate schedule: halve the rate after 10 epochs without a better validation loss
# (docs/results/all-idb2-recipe/lr-schedule).
run plateau --lr-schedule plateau
# Input normalisation: each channel standardised by the training images' statistics.
run input-norm --input-norm
# At the largest size (200 is capped to the 197-198 images of a fold's pool): 3 networks,
# replicate 0 is the paper preset's network unless it died.
SIZES=200 run ensemble3-197 --restarts 3 --replicates 3 --ensemble
