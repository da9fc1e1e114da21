#!/usr/bin/env bash
# The speed benchmark on a GPU machine, in one call, with nothing downloaded there
# (benchmarks/speed.sh runs the same steps on the CPU).
#
# Before the call, copy the verified cache into the repo (an ignored folder) so it travels:
#   mkdir -p .device-data && cp ~/.cache/tinymnist/mnist.npz .device-data/
# then run `bash benchmarks/gpu.sh` there. It needs a Python with torch, numpy, tqdm,
# safetensors and matplotlib; the package runs from src/ without being installed.
# DEVICE=cpu runs the very same path on a CPU (the test suite does, with DRY_RUN=1). AMP=off trains
# both presets in fp32 instead of CUDA's default bf16 autocast, for the comparison in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.device-data}
OUT=${OUT:-bench-results}
SEEDS=${SEEDS:-5}
DEFAULT_SEEDS=${DEFAULT_SEEDS:-5}
DRY=${DRY_RUN:+--dry-run}
AMP=${AMP:-}  # off or bf16 to override the CUDA default (bf16 autocast); the reports then end in -amp-$AMP
TAG=$DEVICE${AMP:+-amp-$AMP}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
if ! $PY -m tinymnist data info --data-dir "$DATA" >/dev/null; then
    echo "gpu.sh: no verified MNIST cache in $DATA (copy ~/.cache/tinymnist/mnist.npz there first)" >&2
    exit 2
fi
$PY -m tinymnist bench speed --device "$DEVICE" --data-dir "$DATA" --presets speedrun --seeds "$SEEDS" $DRY \
    ${AMP:+--amp "$AMP"} --out "$OUT/speed-$TAG.json"
if [ "$DEFAULT_SEEDS" -gt 0 ]; then
    $PY -m tinymnist bench speed --device "$DEVICE" --data-dir "$DATA" --presets default \
        --seeds "$DEFAULT_SEEDS" $DRY ${AMP:+--amp "$AMP"} --out "$OUT/default-$TAG.json"
fi
$PY -m tinymnist bench infer --device "$DEVICE" --out "$OUT/infer-$DEVICE.json"
