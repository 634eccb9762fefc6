#!/bin/bash
# The cross-lab measurements of docs/results/cross-lab/README.md. Each fold model at the
# largest size (197 training images) of the paper and the robust ALL-IDB2 runs, made by
#   leukolearn sweep all-idb2 $DATA/all-idb2-103px --out $RUNS/all-idb2-paper  --preset paper-all-binary --jobs 2
#   leukolearn sweep all-idb2 $DATA/all-idb2-103px --out $RUNS/all-idb2-robust --preset robust-all-binary --sizes 200 --jobs 2
#   leukolearn sweep all-idb2 $DATA/all-idb2-103px --out $RUNS/all-idb2-robust-stain --preset robust-stain-all-binary --sizes 200 --jobs 2
# is evaluated on the cells of two other labs (PBC: normal cells; the AML-LMU sample: 5
# myeloblasts among 45 cells), in the folds both runs have finished; then the domain check.
# Usage: run_cross_lab.sh RUNS DATA FOLDS   (FOLDS e.g. "0 1 2 3 4"; PRESETS: which runs,
# default "paper robust robust-stain", RUNS/all-idb2-<preset>)
set -euo pipefail
RUNS=$1; DATA=$2; FOLDS=$3
OUT=$(cd "$(dirname "$0")" && pwd)
L=${LEUKOLEARN:-leukolearn}
PY=${PYTHON:-python}
for preset in ${PRESETS:-paper robust robust-stain}; do
  for f in $FOLDS; do
    model=$RUNS/all-idb2-$preset/weights/f0$f-n197-s0.safetensors
    $L evaluate "$model" folder "$DATA/pbc-subset" --out "$OUT/evaluations/$preset-f0$f-on-pbc" --json > /dev/null
    $L evaluate "$model" aml-lmu "$DATA/aml-cytomorphology-lmu-sample" --out "$OUT/evaluations/$preset-f0$f-on-aml" --json > /dev/null
  done
  $PY "$OUT/domain_check.py" "$RUNS/all-idb2-$preset" --other "folder:$DATA/pbc-subset" \
      --other "aml-lmu:$DATA/aml-cytomorphology-lmu-sample" --out "$OUT/domain_check_$preset.csv"
done
$PY "$OUT/aggregate.py" "$OUT/evaluations" "$OUT/cross_lab.csv"
