#!/usr/bin/env bash
# The CPU speed benchmarks behind docs/benchmarks.md (`make bench` runs this): the same
# steps as the GPU script, on the CPU with the user's cache, plus the original recipe.
# Run on an otherwise idle machine: the figures are medians, but two heavy jobs on two
# cores still distort them. JSON reports go to $OUT (default bench-results/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PY=${PY:-.venv/bin/python}
export OUT=${OUT:-bench-results}
export DEVICE=${DEVICE:-cpu}
export DATA=${DATA:-$($PY -c 'from tinymnist.data import resolve_data_dir; print(resolve_data_dir(None))')}
bash benchmarks/gpu.sh  # speedrun over $SEEDS (5), default over $DEFAULT_SEEDS (5), inference
# the original recipe on our pipeline: 20 epochs, so one seed
$PY -m tinymnist bench speed --device "$DEVICE" --data-dir "$DATA" --presets seednet \
    --seeds "${SEEDNET_SEEDS:-1}" ${DRY_RUN:+--dry-run} --out "$OUT/seednet-$DEVICE.json"
