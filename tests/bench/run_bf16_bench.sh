#!/usr/bin/env bash
# The bf16 measurements of record, in one command, for a CPU with AVX512_BF16 (Zen 4, Intel since
# Cooper Lake); a benchmark, not a test:
#
#   bash tests/bench/run_bf16_bench.sh [--anyway] [--rounds N]
#
# 1. the engine benchmark (run_engine_bench.sh): ViT-B/14 and B/14-reg @560 at batch 1 and 8, and
#    S/14 @224 batch 1 and 8: stopcal fp32 and bf16 beside ONNX Runtime, PyTorch fp32 and bf16
#    autocast, OpenVINO fp32 and bf16 (its compiled precision read back), interleaved rounds;
# 2. the numerics of each bf16 engine against fp32 on the same weights and pixels
#    (bf16_numerics_peers.py: stopcal bf16, OpenVINO bf16, PyTorch autocast);
# 3. the service benchmark (bench_server.sh) at --precision fp32 and bf16, S/14-reg @112 among its
#    models, with the bf16/fp32 throughput ratio per point.
# Everything goes to tests/bench/results/bf16-DATE-HOST/ (engine.md, engine.json, numerics.txt,
# server.txt), headed by the commit, the CPU model and its flags, so the figures can go into
# README with the commit they were measured at.
#
# Without AVX512_BF16 it stops at once and says so (our bf16 is refused there and OpenVINO falls
# back to f32, so there is nothing to measure); --anyway runs it regardless, to see the refusals.
# OPENBLAS_CORETYPE is passed through untouched if set.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
anyway=0
rounds=3
while [ $# -gt 0 ]; do
    case "$1" in
        --anyway) anyway=1 ;;
        --rounds) rounds=$2; shift ;;
        *) echo "usage: run_bf16_bench.sh [--anyway] [--rounds N]" >&2; exit 2 ;;
    esac
    shift
done

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
if ! grep -qw avx512_bf16 /proc/cpuinfo; then
    echo "run_bf16_bench: this CPU ($cpu) has no AVX512_BF16: stopcal's bf16 is refused here and" \
         "OpenVINO compiles at f32, so there is no bf16 speed to measure. Run it on a Zen 4 or an" \
         "Intel CPU since Cooper Lake (--anyway runs it regardless)." >&2
    [ "$anyway" = 1 ] || exit 2
fi

# The service benchmark's load generator, installed as the engine benchmark installs its venv.
if ! command -v wrk > /dev/null; then
    echo "== installing wrk (Debian package) for the service benchmark" >&2
    { apt-get update -qq && apt-get install -y -qq wrk; } > /dev/null ||
        { echo "run_bf16_bench: wrk is missing and could not be installed (apt-get install wrk)" >&2; exit 2; }
fi

out=$ROOT/tests/bench/results/bf16-$(date -u +%Y-%m-%d)-$(hostname -s)
# Whether the code measured is the commit's: asked before anything is written, and not counting
# the results folders (this run rewrites its own, which git tracks).
dirty=$(git -C "$ROOT" diff --quiet HEAD -- . ':(exclude)tests/bench/results' || echo ' (with uncommitted changes)')
mkdir -p "$out"
{
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD)$dirty"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $cpu, $(nproc) CPUs"
    echo "bf16 flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E 'bf16|amx' | tr '\n' ' ')"
    echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE:-(unset)}"
} | tee "$out/machine.txt"

echo "== 1/3 engine benchmark" >&2
bash "$ROOT/tests/bench/run_engine_bench.sh" --cases b560,b560-reg,s224 --batches 1,8 \
    --ours fp32,bf16 --peers ort,torch,torch-bf16,ov,ov-bf16 --rounds "$rounds" \
    --markdown "$out/engine.md" --json "$out/engine.json"

echo "== 2/3 bf16 numerics against fp32, stopcal beside OpenVINO and PyTorch autocast" >&2
cmake --build "$ROOT/build-bench" -j "$(nproc)" --target stopcal-infer > /dev/null
"$ROOT/.venv-bench/bin/python" "$ROOT/tests/bench/bf16_numerics_peers.py" \
    --infer "$ROOT/build-bench/server/stopcal-infer" --cases s224,b560,b560-reg | tee "$out/numerics.txt"

echo "== 3/3 service benchmark at --precision fp32 and bf16" >&2
STOPCAL_BENCH_PRECISIONS="fp32 bf16" bash "$ROOT/tests/bench/bench_server.sh" 8 | tee "$out/server.txt"

echo "run_bf16_bench: results in $out" >&2
