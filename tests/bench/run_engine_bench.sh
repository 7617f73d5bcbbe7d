#!/usr/bin/env bash
# One command for the CPU engine benchmark (ARCHITECTURE.md §8; a benchmark, not a test):
#
#   bash tests/bench/run_engine_bench.sh [--markdown FILE] [--json FILE] [other driver options]
#
# 1. creates .venv-bench (Debian's python3 with its torch and numpy, plus onnxruntime, onnx and
#    openvino from PyPI, numpy held at Debian's version so torch keeps working) if it is missing;
# 2. builds bench_engine in Release in build-bench;
# 3. runs tests/bench/bench_engine.py with the arguments given (see its --help); it prints one
#    markdown table. About 15–20 minutes on two quiet cores; longer when other jobs make it wait
#    for a quiet machine (--wait-quiet).
# OPENBLAS_CORETYPE is passed through untouched if set.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/.venv-bench
BUILD=$ROOT/build-bench

if ! "$VENV/bin/python" -c 'import onnxruntime, onnx, torch, numpy' 2>/dev/null ||
   ! "$VENV/bin/python" -c 'import openvino' 2>/dev/null; then
    echo "== creating $VENV" >&2
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
    # onnx/onnxruntime would pull numpy 2, which Debian's torch 1.13 cannot load.
    constraints=$(mktemp)
    /usr/bin/python3 -c 'import numpy; print("numpy==" + numpy.__version__)' > "$constraints"
    "$VENV/bin/pip" install --quiet -c "$constraints" onnxruntime onnx
    # OpenVINO is optional: without it the OpenVINO rows say "not installed" instead of failing.
    "$VENV/bin/pip" install --quiet -c "$constraints" openvino ||
        echo "== openvino could not be installed; its rows will say so" >&2
    rm -f "$constraints"
fi

echo "== building bench_engine (Release, $BUILD)" >&2
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$BUILD" -j2 --target bench_engine > /dev/null

exec "$VENV/bin/python" "$ROOT/tests/bench/bench_engine.py" --exe "$BUILD/tests/bench/bench_engine" "$@"
