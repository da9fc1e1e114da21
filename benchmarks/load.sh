#!/usr/bin/env bash
# The server-under-load figures in docs/benchmarks.md: `tinymnist bench load` (loopback only, bounded in
# requests and seconds) $RUNS times with 2 inference workers and once with 1. Needs a saved
# model under runs/ (`make train`) or CHECKPOINT=...; JSON reports go to $OUT.
# Run on an otherwise idle machine: the clients and the server share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
ARGS=(--clients "${CLIENTS:-16}" --requests "${REQUESTS:-2000}" --max-seconds "${MAX_SECONDS:-120}")
if [ -n "${CHECKPOINT:-}" ]; then ARGS+=(--checkpoint "$CHECKPOINT"); fi
for i in $(seq 1 "${RUNS:-3}"); do
    $PY -m tinymnist bench load --workers 2 "${ARGS[@]}" --out "$OUT/load-2workers-$i.json"
done
$PY -m tinymnist bench load --workers 1 "${ARGS[@]}" --out "$OUT/load-1worker.json"
