#!/bin/sh
# Build one libFuzzer target with clang (ASan + UBSan) and run it for a bounded time on a seed
# corpus written by seeds.py (FITS files from tests/image/gen_fits.py for image). Exit 77 (ctest:
# skipped, with one line saying why) when clang or its fuzzer runtime is missing; any crash,
# sanitizer report, leak or broken invariant fails.
# Usage: run_fuzz.sh TARGET REPO_ROOT WORKDIR [SECONDS] [PYTHON]
#   TARGET: model | multipart | config | api_key | http (tests/fuzz/fuzz_TARGET.c), or image
#   (tests/image/fuzz_image.c: FITS decode + preprocessing)
set -eu
target=$1
root=$2
work=$3
seconds=${4:-20}
python=${5:-/usr/bin/python3}
cc=${STOPCAL_FUZZ_CC:-clang}

mkdir -p "$work"
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz $target: $cc not found, skipping"
    exit 77
fi
cat > "$work/probe.c" <<'PROBE'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { (void)data; (void)size; return 0; }
PROBE
if ! "$cc" -fsanitize=fuzzer,address,undefined "$work/probe.c" -o "$work/probe" >/dev/null 2>&1; then
    echo "fuzz $target: $cc has no libFuzzer runtime (libclang-rt-dev), skipping"
    exit 77
fi

# The architecture description every model-reading target compiles in, as the CMake build does.
cmake -DIN="$root/models/families.json" -DOUT="$work/families_data.c" -DSYMBOL=family_description \
      -P "$root/models/embed_file.cmake"
family_srcs="$root/models/family.c $root/models/family_fields.c $root/models/family_tensors.c $work/families_data.c"

# Each target with exactly the sources it exercises, and how large its inputs may grow.
fuzz_src="$root/tests/fuzz/fuzz_$target.c"
case "$target" in
image)
    fuzz_src="$root/tests/image/fuzz_image.c"
    srcs="$(echo "$root"/models/image/*.c) $root/models/error_message.c"
    # the per-pixel loops' `omp simd` marks, honoured without the OpenMP runtime
    incs="-I$root/models/image -I$root/models -fopenmp-simd -DSTOPCAL_OPENMP_SIMD"
    libs="$(pkg-config --cflags --libs cfitsio zlib) -lm -lpthread"
    max_len=131072 ;;
model)
    srcs="$root/models/model.c $root/models/model_config.c $root/models/sha256.c $root/models/sha256_shani.c \
          $root/models/error_message.c $family_srcs"
    incs="-I$root/models"
    libs="$(pkg-config --cflags --libs jansson) -lpthread"
    max_len=262144 ;;
multipart)
    srcs="$root/server/multipart.c $root/models/error_message.c"
    incs="-I$root/server -I$root/models"
    libs=""
    max_len=16384 ;;
config)
    srcs="$root/server/config.c $root/models/model_config.c $root/models/error_message.c $family_srcs"  # names
    incs="-I$root/server -I$root/models"
    libs="$(pkg-config --cflags --libs jansson) -lpthread"
    max_len=4096 ;;
api_key)
    srcs="$root/server/api_key.c $root/models/error_message.c"
    incs="-I$root/server -I$root/models"
    libs=""
    max_len=8192 ;;
http)
    # The whole service but main(): server, engine, CPU kernels, models, image library. The OpenMP
    # pragmas compile as plain loops (clang drives OpenMP only with its own runtime, and Debian's
    # OpenBLAS is built against gcc's); the omp_* calls resolve to gcc's libgomp, through clang's
    # omp.h (libomp-dev), which declares the same API.
    # The page GET / serves is compiled in from server/page/index.html, as the CMake build does.
    cmake -DIN="$root/server/page/index.html" -DOUT="$work/page_html.c" -P "$root/server/page/embed.cmake"
    srcs="$work/page_html.c $work/families_data.c"
    for f in "$root"/server/*.c "$root"/models/*.c "$root"/models/image/*.c "$root"/models/explain/*.c \
             "$root"/kernels/*.c "$root"/kernels/cpu/*.c; do
        case "$f" in */stopcald_main.c | */infer_main.c | */infer_explain.c) ;; *) srcs="$srcs $f" ;; esac
    done
    incs="-I$root/server -I$root/models -I$root/models/image -I$root/models/explain -I$root/kernels \
          -I$root/kernels/cpu -I$root/kernels/ref -Wno-unknown-pragmas -Wno-unused-parameter"
    openmp_pc=/usr/lib/$(gcc -print-multiarch 2>/dev/null)/openblas-openmp/pkgconfig
    libs="$(PKG_CONFIG_PATH="$openmp_pc:${PKG_CONFIG_PATH:-}" \
            pkg-config --cflags --libs openblas jansson cfitsio zlib libpng libmicrohttpd) -lgomp -lm -lpthread"
    max_len=65536 ;;
*)
    echo "fuzz: unknown target '$target'" >&2
    exit 2 ;;
esac

# shellcheck disable=SC2086 # the source and flag lists are meant to split
"$cc" -std=c11 -D_GNU_SOURCE -DSTOPCAL_VERSION='"fuzz"' -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Wall -Wextra -Werror \
    $incs "$fuzz_src" $srcs $libs -o "$work/fuzz_$target"

mkdir -p "$work/seeds" "$work/corpus"
if [ "$target" = image ]; then
    if ! "$python" "$root/tests/image/gen_fits.py" --seeds "$work/seeds"; then
        echo "fuzz image: could not write seed files (astropy missing?); starting from an empty corpus"
    fi
    # cfitsio 4.2 leaks a small buffer (~100 bytes) in imcomp_decompress_tile when a compressed tile
    # is corrupt; that is upstream's, not ours, and it would stop every run within seconds. Leaks
    # with a libcfitsio frame are suppressed; ours are still reported.
    echo "leak:libcfitsio.so" > "$work/lsan.supp"
    export LSAN_OPTIONS="suppressions=$work/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
else
    "$python" "$root/tests/fuzz/seeds.py" "$target" "$work/seeds"
fi
echo "fuzz $target: $(find "$work/seeds" -type f | wc -l) seeds, running for $seconds s"
if [ "$target" = http ]; then
    # The server's threads allocate on their own schedule: leaks are checked once, at exit. Its log
    # (a JSON line per request) goes to a file; libFuzzer's lines and any report are shown.
    export STOPCAL_FUZZ_MODEL="$work/model.safetensors"
    rc=0
    "$work/fuzz_$target" -detect_leaks=0 -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 \
        -timeout=30 -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "$work/seeds" \
        2>"$work/fuzz.log" || rc=$?
    grep -v '^{"ts"' "$work/fuzz.log" | grep -v -e ' NEW ' -e ' REDUCE ' | tail -60
    echo "fuzz http: exit $rc (server log in $work/fuzz.log)"
    exit $rc
fi
exec "$work/fuzz_$target" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "$work/seeds"
