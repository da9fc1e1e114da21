#!/usr/bin/env bash
# The CPU speed benchmarks behind the README's figures (`make bench` runs this).
# Run on an otherwise idle machine: the figures are medians, but two heavy jobs on two
# cores still distort them. JSON reports go to $OUT (default bench-results/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench-results}
DEVICE=${DEVICE:-cpu}
mkdir -p "$OUT"
$PY -m tinymnist bench speed --device "$DEVICE" --presets speedrun --seeds "${SEEDS:-5}" \
    --out "$OUT/speed-$DEVICE.json"
$PY -m tinymnist bench speed --device "$DEVICE" --presets default --seeds "${DEFAULT_SEEDS:-3}" \
    --out "$OUT/default-$DEVICE.json"
$PY -m tinymnist bench infer --device "$DEVICE" --out "$OUT/infer-$DEVICE.json"
# the original recipe on our pipeline: 20 epochs, so one seed
$PY -m tinymnist bench speed --device "$DEVICE" --presets seednet --seeds "${SEEDNET_SEEDS:-1}" \
    --out "$OUT/seednet-$DEVICE.json"
