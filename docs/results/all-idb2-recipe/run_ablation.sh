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
