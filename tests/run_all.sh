#!/usr/bin/env bash
# The whole test suite, from a fresh machine or a prepared one:
#   0. install what is missing (tests/install_deps.sh --if-missing; nothing when all is there);
#   1. the sanitized build (ASan + UBSan): every test through ctest, the bounded fuzz runs included;
#   2. the Release build, the one users run: every test again (the fuzz targets aside: they build
#      their own sanitized binaries), with the checks ASan cannot make (memory bounds read from RSS);
#   3. tests/gpu/device_check.sh on that Release build: on a machine with a GPU the whole device
#      check, on one without it skips each GPU step with one line.
# STOPCAL_TEST_PASSES picks passes (default "sanitized release device"); BUILD_DIR and
# RELEASE_BUILD_DIR name the build folders (build-tests, build-release).
set -euo pipefail
cd "$(dirname "$0")/.."
passes=${STOPCAL_TEST_PASSES:-sanitized release device}
BUILD_DIR=${BUILD_DIR:-build-tests}
RELEASE_BUILD_DIR=${RELEASE_BUILD_DIR:-build-release}
jobs=$(nproc)
timings=()
started=$SECONDS

bash tests/install_deps.sh --if-missing

run_pass() { # name, then the command
  local name=$1 t0=$SECONDS
  shift
  echo "=== $name pass"
  "$@"
  timings+=("$name $((SECONDS - t0)) s")
}

sanitized_pass() {
  cmake -S . -B "$BUILD_DIR" -DSTOPCAL_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD_DIR" -j "$jobs"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2 -LE bench
}

release_pass() {
  cmake -S . -B "$RELEASE_BUILD_DIR" -DSTOPCAL_SANITIZE=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$RELEASE_BUILD_DIR" -j "$jobs"
  echo "release: the fuzz targets run in the sanitized pass only (they need ASan), not here"
  ctest --test-dir "$RELEASE_BUILD_DIR" --output-on-failure -j 2 -LE 'bench|fuzz'
}

device_pass() {
  BUILD_DIR="$RELEASE_BUILD_DIR" bash tests/gpu/device_check.sh
}

for p in $passes; do
  case "$p" in
    sanitized) run_pass sanitized sanitized_pass ;;
    release) run_pass release release_pass ;;
    device) run_pass device device_pass ;;
    *) echo "run_all: unknown pass '$p' (sanitized, release, device)" >&2; exit 2 ;;
  esac
done
echo "=== all passes green in $((SECONDS - started)) s: ${timings[*]/%/;}"
