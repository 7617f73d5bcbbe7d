#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: everything about the CUDA path that CI (CPU only,
# through the host emulation) cannot check, in under 8 minutes, into one results file.
#   1. a Release build for this device's architecture (nvidia-smi's compute capability);
#   2. ctest -L gpu (the CUDA kernel and forward-pass tests on the device);
#   3. compute-sanitizer memcheck and racecheck over the kernel tests;
#   4. the CUDA benchmark at ViT-S/14 @224 and ViT-B/14-reg @560, batch 1, 8 and 32;
#   5. CPU-vs-GPU agreement on generated images (gpu_agreement.py);
#   6. stopcald on the GPU under load (gpu_load.py).
# On a machine without a GPU it runs too (CI runs it so, after the Release pass): the build step
# reuses or makes the Release build, and each GPU step is skipped with one line saying why.
# Exit status: 0 when every step that ran passed; 1 otherwise (the results file says which).
#
# Environment: BUILD_DIR (default build-gpu), RESULTS (default $BUILD_DIR/device_check_results.txt),
# STOPCAL_PYTHON (default /usr/bin/python3), DEVICE (default cuda:0), DEADLINE_S (default 470).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
BUILD_DIR=${BUILD_DIR:-build-gpu}
RESULTS=${RESULTS:-$BUILD_DIR/device_check_results.txt}
PY=${STOPCAL_PYTHON:-/usr/bin/python3}
DEVICE=${DEVICE:-cuda:0}
DEADLINE_S=${DEADLINE_S:-470}
WORK="$BUILD_DIR/device_check"
started=$SECONDS
failed=0
mkdir -p "$WORK"
: >"$RESULTS"

note() { echo "$*" | tee -a "$RESULTS"; }
left() { echo $((DEADLINE_S - (SECONDS - started))); }

# step NAME LIMIT_S COMMAND...: runs COMMAND with a time limit (capped by what is left of the
# deadline), its output into $WORK/NAME.log and the results file; records PASS/FAIL and seconds.
step() {
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  local remaining
  remaining=$(left)
  if [ "$remaining" -lt 10 ]; then
    note "== $name: FAIL (not started: the ${DEADLINE_S} s deadline is spent)"
    failed=1
    return
  fi
  [ "$limit" -le "$remaining" ] || limit=$remaining
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    note "== $name: PASS ($((SECONDS - t0)) s)"
  else
    [ $rc -eq 124 ] && note "   (stopped at its ${limit} s limit)"
    note "== $name: FAIL (exit $rc, $((SECONDS - t0)) s; log $WORK/$name.log)"
    failed=1
  fi
  # The lines worth keeping in the results: figures and failures, not build chatter.
  grep -E "images/s|TFLOP|GB/s|agreement|load:|FAILED|ERROR|error|tests passed|Test #|batch" "$WORK/$name.log" \
    | grep -v "^\[" | tail -40 | sed 's/^/   /' >>"$RESULTS"
}

skip() { note "== $1: SKIPPED ($2)"; }

note "stopcal device check, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
gpu=""
arch=""
if command -v nvidia-smi >/dev/null 2>&1 &&
   gpu=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -1) && [ -n "$gpu" ]; then
  arch=$(echo "$gpu" | awk -F', ' '{gsub(/\./, "", $2); print $2}')
  note "device: $gpu (sm_$arch), $(nproc) CPUs"
else
  gpu=""
  note "device: none (no nvidia-smi or no GPU answers it): the GPU steps are skipped, $(nproc) CPUs"
fi
why="no GPU on this machine"

# 1. The Release build, for this device's architecture when there is one.
cuda_arch=()
[ -n "$arch" ] && cuda_arch=(-DCMAKE_CUDA_ARCHITECTURES="$arch")
step build 300 bash -c "cmake -S . -B '$BUILD_DIR' -DCMAKE_BUILD_TYPE=Release -DSTOPCAL_SANITIZE=OFF ${cuda_arch[*]} \
  && cmake --build '$BUILD_DIR' -j $(nproc)"
have_cuda_build=0
[ -x "$BUILD_DIR/tests/cuda/test_cuda_kernels_gpu" ] && have_cuda_build=1
if [ -n "$gpu" ] && [ $have_cuda_build -eq 0 ]; then
  why="the build has no CUDA backend (nvcc not found?)"
  note "   $why"
  failed=1
  gpu=""
fi

# 2. The device tests.
if [ -n "$gpu" ]; then
  step ctest_gpu 150 ctest --test-dir "$BUILD_DIR" -L gpu -LE bench --output-on-failure --no-tests=error
else
  skip ctest_gpu "$why"
fi

# 3. compute-sanitizer over the kernel tests (the whole forward pass too, for memcheck).
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -z "$gpu" ]; then
  skip memcheck "$why"
  skip racecheck "$why"
elif [ -z "$sanitizer" ]; then
  note "== memcheck: FAIL (compute-sanitizer not found)"
  note "== racecheck: FAIL (compute-sanitizer not found)"
  failed=1
else
  models="$BUILD_DIR/tests/cuda/cuda_tiny_mlp_reg.safetensors $BUILD_DIR/tests/cuda/cuda_tiny_swiglu.safetensors"
  step memcheck 120 bash -c "'$sanitizer' --tool memcheck --leak-check full --error-exitcode 1 \
      '$BUILD_DIR/tests/cuda/test_cuda_kernels_gpu' && '$sanitizer' --tool memcheck --error-exitcode 1 \
      '$BUILD_DIR/tests/cuda/test_cuda_forward_gpu' $models"
  step racecheck 120 "$sanitizer" --tool racecheck --error-exitcode 1 "$BUILD_DIR/tests/cuda/test_cuda_kernels_gpu"
fi

# 4. The CUDA benchmark at both geometries (bench_cuda runs batch 1, 8 and 32 end to end).
if [ -n "$gpu" ]; then
  step bench_models 60 bash -c "'$PY' models/stopcal-genmodel --variant s --input-size 224 --seed 5 \
      --name bench-vits14-224 -o '$WORK/s14_224.safetensors' && '$PY' models/stopcal-genmodel --variant b \
      --registers 4 --input-size 560 --seed 5 --name bench-vitb14-reg-560 -o '$WORK/b14reg_560.safetensors'"
  step bench_s14_224 90 "$BUILD_DIR/tests/cuda/bench_cuda" "$WORK/s14_224.safetensors" 2
  step bench_b14reg_560 120 "$BUILD_DIR/tests/cuda/bench_cuda" "$WORK/b14reg_560.safetensors" 1
else
  skip bench_s14_224 "$why"
  skip bench_b14reg_560 "$why"
fi

# 5. and 6.
if [ -n "$gpu" ]; then
  step agreement 120 "$PY" tests/gpu/gpu_agreement.py --infer "$BUILD_DIR/server/stopcal-infer" \
      --workdir "$WORK/agreement" --device "$DEVICE"
  step load 120 "$PY" tests/gpu/gpu_load.py --stopcald "$BUILD_DIR/server/stopcald" \
      --model "$WORK/s14_224.safetensors" --device "$DEVICE" --seconds 45
else
  skip agreement "$why"
  skip load "$why"
fi

note "device check: $([ $failed -eq 0 ] && echo PASS || echo FAIL) in $((SECONDS - started)) s; results in $RESULTS"
exit $failed
