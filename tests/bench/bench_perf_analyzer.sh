#!/usr/bin/env bash
# The load benchmark of record with Triton's own tool (not part of ctest): perf_analyzer
# (tritonclient 2.40.0 wheel, in .venv-deploy) against stopcald directly, over HTTP and gRPC, FITS
# BYTES (view m, a real example image) and preprocessed FP32 pixels (view m_pixels), concurrency
# 1 / 8 / 32, with dynamic batching (--max-batch 8) and without (--max-batch 1), on the demo model
# (the default model; MODEL_FILE=tiny for the d128x2 @56 test model, or any model file); beside wrk
# on the same HTTP pixels requests in the same run (bench_server.sh's method), so the two tools can
# be compared point by point.
# Usage: tests/bench/bench_perf_analyzer.sh [MS_PER_WINDOW]   (needs bash tests/install_deps.sh; wrk optional)
# Env: MODEL_FILE, PROTOS ("http grpc"), CONCURRENCY ("1 8 32"), BUILD_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
WIN=${1:-2000}
BUILD_DIR=${BUILD_DIR:-build-bench-server}
PROTOS=${PROTOS:-http grpc} # the protocols perf_analyzer speaks to stopcald here
CONCURRENCY=${CONCURRENCY:-1 8 32}
MODEL_FILE=${MODEL_FILE:-models/demo/stopcal-demo.safetensors}
FITS_FILE=${FITS_FILE:-models/demo/examples/clean_stop.fits}
PY=${STOPCAL_PYTHON:-/usr/bin/python3}
VENV=${VENV:-$PWD/.venv-deploy}
PA=$VENV/bin/perf_analyzer
[ -x "$PA" ] || { echo "bench_perf_analyzer: $PA missing (bash tests/install_deps.sh)" >&2; exit 2; }
LD_LIBRARY_PATH=$(echo "$VENV"/lib/python3*/site-packages/nvidia/cuda_runtime/lib):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSTOPCAL_SANITIZE=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target stopcald >/dev/null
WORK=$(mktemp -d)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if [ "$MODEL_FILE" = tiny ]; then
  MODEL_FILE=$WORK/tiny.safetensors
  $PY models/stopcal-genmodel --embed-dim 128 --heads 2 --depth 2 --registers 4 --input-size 56 --seed 1 \
    -o "$MODEL_FILE" >/dev/null
fi
# the model's input size, from its file's header (models/FORMAT.md)
S=$($PY -c 'import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
print(json.loads(json.loads(f.read(n))["__metadata__"]["stopcal.config"])["input"]["size"])' "$MODEL_FILE")
# perf_analyzer --input-data: a real FITS file (each BYTES element behind its 4-byte length, as on the
# wire) and one image of pixels; wrk's body: the same pixels as a v2 binary request.
$PY - "$WORK" "$S" "$FITS_FILE" <<'PYEOF'
import base64, json, random, struct, sys
work, S = sys.argv[1], int(sys.argv[2])
f = open(sys.argv[3], "rb").read()
json.dump({"data": [{"image": {"b64": base64.b64encode(struct.pack("<I", len(f)) + f).decode()}}]},
          open(work + "/fits.json", "w"))
rng = random.Random(5)
vals = [rng.gauss(0, 1) for _ in range(3 * S * S)]
json.dump({"data": [{"pixels": {"content": vals, "shape": [3, S, S]}}]}, open(work + "/pixels.json", "w"))
binary = struct.pack("<%df" % len(vals), *vals)
header = json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, S, S],
                                 "parameters": {"binary_data_size": len(binary)}}]}).encode()
open(work + "/pixels.body", "wb").write(header + binary)
open(work + "/pixels.hlen", "w").write(str(len(header)))
PYEOF
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$(cat "$WORK/pixels.hlen")"
local f = io.open("$WORK/pixels.body", "rb")
wrk.body = f:read("*a")
f:close()
LUA

pa() { # url protocol model data concurrency → "infer/s p50_ms p99_ms"; a point that does not settle
       # (perf_analyzer's stability rule, on a busy machine) is tried once more, then reported as fail
  local out r
  for _ in 1 2; do
    out=$("$PA" -u "$1" -i "$2" -m "$3" --input-data "$4" --concurrency-range "$5" --measurement-interval "$WIN" \
      --max-trials 6 --stability-percentage 50 --percentile 99 2>&1 || true)
    r=$(echo "$out" | awk '/Throughput:/ { t = $2 } /p50 latency/ { p50 = $3 / 1000 } /p99 latency/ { p99 = $3 / 1000 }
         END { if (t == "") print "fail - -"; else printf "%.1f %.2f %.2f\n", t, p50, p99 }')
    [ "${r%% *}" != fail ] && break
    echo "  ($2 $3 concurrency $5: $(echo "$out" | grep -v '^ *$' | tail -1))" >&2
  done
  echo "$r"
}

echo "bench_perf_analyzer: $(nproc) CPUs; commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- server kernels models || echo ' (with local changes)'); model $(basename "$MODEL_FILE") (input $S), FITS $(basename "$FITS_FILE"); $((WIN)) ms windows; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-9s %-5s %-6s %-6s %4s %10s %9s %9s\n" batching tool proto input conc "infer/s" p50_ms p99_ms
for mb in 8 1; do
  log="$WORK/server-$mb.log"
  "$BUILD_DIR/server/stopcald" --model "m=$MODEL_FILE" --host 127.0.0.1 --port 0 --grpc-port 0 \
    --max-batch "$mb" --drain-grace-ms 0 --max-queue 256 2>"$log" &
  SERVER_PID=$!
  port=
  for _ in $(seq 300); do
    port=$(grep -o '"port":[0-9]*' "$log" | head -1 | cut -d: -f2 || true)
    [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
    sleep 0.1
  done
  gport=$(grep -o '"grpc_port":[0-9]*' "$log" | head -1 | cut -d: -f2)
  b=$([ "$mb" = 1 ] && echo off || echo "max $mb")
  for c in $CONCURRENCY; do
    if command -v wrk >/dev/null; then
      out=$(wrk -t "$(( c < 2 ? 1 : 2 ))" -c "$c" -d "$(( WIN * 3 / 1000 ))s" --timeout 30s --latency \
        -s "$WORK/post.lua" "http://127.0.0.1:$port/v2/models/m/infer")
      printf "%-9s %-5s %-6s %-6s %4d %10.1f %9s %9s\n" "$b" wrk http pixels "$c" \
        "$(echo "$out" | awk '/Requests\/sec/ { print $2 }')" \
        "$(echo "$out" | awk '$1 == "50%" { print $2 }')" "$(echo "$out" | awk '$1 == "99%" { print $2 }')"
    fi
    for proto in $PROTOS; do
      u=$([ "$proto" = http ] && echo "127.0.0.1:$port" || echo "127.0.0.1:$gport")
      for input in pixels fits; do
        model=$([ "$input" = pixels ] && echo m_pixels || echo m)
        read -r t p50 p99 <<<"$(pa "$u" "$proto" "$model" "$WORK/$input.json" "$c")"
        printf "%-9s %-5s %-6s %-6s %4d %10s %9s %9s\n" "$b" perf "$proto" "$input" "$c" "$t" "$p50" "$p99"
      done
    done
  done
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (this machine is shared: read the figures as indicative)"
