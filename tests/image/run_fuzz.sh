#!/bin/sh
# Build the libFuzzer target with clang (ASan + UBSan) and run it for a bounded time on a seed corpus
# of small FITS files. Exit 77 (ctest: skipped) when clang or its fuzzer runtime is missing.
# Usage: run_fuzz.sh REPO_ROOT WORKDIR [SECONDS] [PYTHON]
set -eu
root=$1
work=$2
seconds=${3:-25}
python=${4:-/usr/bin/python3}
cc=${STOPCAL_FUZZ_CC:-clang}

mkdir -p "$work"
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz: $cc not found, skipping"
    exit 77
fi
cat > "$work/probe.c" <<'PROBE'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { (void)data; (void)size; return 0; }
PROBE
if ! "$cc" -fsanitize=fuzzer,address,undefined "$work/probe.c" -o "$work/probe" >/dev/null 2>&1; then
    echo "fuzz: $cc has no libFuzzer runtime (libclang-rt-dev), skipping"
    exit 77
fi

img="$root/models/image"
"$cc" -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fopenmp-simd -DSTOPCAL_OPENMP_SIMD -Wall -Wextra -Werror \
    -I"$img" -I"$root/models" \
    "$root/tests/image/fuzz_image.c" "$img"/*.c "$root/models/error_message.c" \
    $(pkg-config --cflags --libs cfitsio zlib) -lm -lpthread \
    -o "$work/fuzz_image"

mkdir -p "$work/seeds" "$work/corpus"
if ! "$python" "$root/tests/image/gen_fits.py" --seeds "$work/seeds"; then
    echo "fuzz: could not write seed files (astropy missing?); starting from an empty corpus"
fi

# cfitsio 4.2 leaks a small buffer (~100 bytes) in imcomp_decompress_tile when a compressed tile is
# corrupt; that is upstream's, not ours, and it would stop every run within seconds. Leaks with a
# libcfitsio frame are suppressed; ours are still reported.
echo "leak:libcfitsio.so" > "$work/lsan.supp"
export LSAN_OPTIONS="suppressions=$work/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
echo "fuzz: running for $seconds s"
exec "$work/fuzz_image" -max_total_time="$seconds" -max_len=131072 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "$work/seeds"
