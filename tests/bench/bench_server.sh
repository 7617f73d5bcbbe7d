#!/usr/bin/env bash
# Load benchmark of stopcald (not part of ctest): wrk at concurrency 1, 8 and 32 against
# POST /v2/models/m/infer with one preprocessed image per request (binary FP32 pixels), with dynamic
# batching (--max-batch 8) and without (--max-batch 1); throughput, p50 and p99 latency; and the
# server's overhead over stopcal-infer on the same model with the same compute threads.
# STOPCAL_BENCH_PRECISIONS="fp32 bf16" runs every point at each --precision (default fp32) and ends
# with the ratio of each to the first; a precision the CPU cannot run (bf16 without AVX512_BF16) is
# reported as refused, with stopcald's message, and skipped.
# Needs wrk (Debian package 'wrk'). Usage: tests/bench/bench_server.sh [SECONDS_PER_POINT]
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-8}
read -r -a PRECISIONS <<<"${STOPCAL_BENCH_PRECISIONS:-fp32}"
BUILD_DIR=${BUILD_DIR:-build-bench-server}
PY=${STOPCAL_PYTHON:-/usr/bin/python3}
command -v wrk >/dev/null || { echo "bench_server: wrk not found (apt-get install wrk)" >&2; exit 2; }
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSTOPCAL_SANITIZE=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target stopcald stopcal-infer >/dev/null
WORK=$(mktemp -d)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# Compute threads as stopcald sizes them (one CPU left to preprocessing), so the comparison with
# stopcal-infer is like for like.
CPUS=$(nproc)
THREADS=$(( CPUS >= 4 ? CPUS - CPUS / 4 : (CPUS > 1 ? CPUS - 1 : 1) ))

$PY models/stopcal-genmodel --embed-dim 128 --heads 2 --depth 2 --registers 4 --input-size 56 --seed 1 \
  -o "$WORK/tiny.safetensors" >/dev/null
$PY models/stopcal-genmodel --variant s --registers 4 --input-size 112 --seed 1 -o "$WORK/s112.safetensors" >/dev/null

# One request body per model: the v2 JSON header + binary FP32 pixels; and raw tensors for stopcal-infer.
make_inputs() { # model size n_tensors
  $PY - "$WORK" "$1" "$2" "$3" <<'EOF'
import json, random, struct, sys
work, name, S = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(5)
vals = [rng.gauss(0, 1) for _ in range(3 * S * S)]
binary = struct.pack("<%df" % len(vals), *vals)
header = json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, S, S],
                                 "parameters": {"binary_data_size": len(binary)}}]}).encode()
open("%s/%s.body" % (work, name), "wb").write(header + binary)
open("%s/%s.hlen" % (work, name), "w").write(str(len(header)))
for i in range(int(sys.argv[4])):
    open("%s/%s_%d.f32" % (work, name, i), "wb").write(binary)
EOF
}

to_ms() { # "1.23ms" | "456.00us" | "1.20s" → milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

# Per-image milliseconds of stopcal-infer at batch 1: (time for N images − time for 1) / (N − 1),
# so that loading the model does not count.
infer_ms() { # model name n precision
  local t0 t1 t2
  t0=$(date +%s%N)
  "$BUILD_DIR/server/stopcal-infer" --model "$1" --threads "$THREADS" --max-batch 1 --precision "$4" \
    --pixels "$WORK/$2_0.f32" >/dev/null
  t1=$(date +%s%N)
  "$BUILD_DIR/server/stopcal-infer" --model "$1" --threads "$THREADS" --max-batch 1 --precision "$4" \
    --pixels "$WORK"/"$2"_*.f32 >/dev/null
  t2=$(date +%s%N)
  awk -v a="$((t1 - t0))" -v b="$((t2 - t1))" -v n="$3" 'BEGIN { printf "%.3f", (b - a) / 1e6 / (n - 1) }'
}

# Sum and count of the server's forward-pass time per image, to subtract the model from the latency.
infer_stats() { # port
  curl -s "http://127.0.0.1:$1/metrics" |
    awk '/^stopcal_inference_duration_seconds_sum/ { s = $2 } /^stopcal_inference_duration_seconds_count/ { c = $2 }
         END { print s, c }'
}

echo "bench_server: $(nproc) CPUs, $THREADS compute threads; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %-5s %-9s %5s %10s %9s %9s %7s\n" model prec batching conc "req/s" "p50_ms" "p99_ms" non2xx
declare -A RPS # "model prec batching conc" → req/s, for the ratios at the end
for spec in tiny:56:1000 s112:112:40; do
  IFS=: read -r name size n_infer <<<"$spec"
  make_inputs "$name" "$size" "$n_infer"
  cat > "$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$(cat "$WORK/$name.hlen")"
local f = io.open("$WORK/$name.body", "rb")
wrk.body = f:read("*a")
f:close()
EOF
  for prec in "${PRECISIONS[@]}"; do
    declare -A P50 MODEL_MS
    refused=
    for mb in 8 1; do
      log="$WORK/server-$name-$prec-$mb.log"
      "$BUILD_DIR/server/stopcald" --model "m=$WORK/$name.safetensors" --host 127.0.0.1 --port 0 \
        --max-batch "$mb" --precision "$prec" --drain-grace-ms 0 --max-queue 256 2>"$log" &
      SERVER_PID=$!
      port=
      for _ in $(seq 300); do
        port=$(grep -o '"port":[0-9]*' "$log" | head -1 | cut -d: -f2 || true)
        [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || break # exited: refused this precision, or failed
        sleep 0.1
      done
      if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" || true
        SERVER_PID=
        refused=$(tail -n 3 "$log" | tr '\n' ' ')
        printf "%-6s %-5s stopcald did not start: %s\n" "$name" "$prec" "$refused"
        break
      fi
      url="http://127.0.0.1:$port/v2/models/m/infer"
      for c in 1 8 32; do
        t=$(( c < 2 ? 1 : 2 ))
        [ "$c" = 1 ] && before=$(infer_stats "$port")
        out=$(wrk -t "$t" -c "$c" -d "${DUR}s" --timeout 30s --latency -s "$WORK/post.lua" "$url")
        rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
        p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')")
        p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
        bad=$(echo "$out" | awk '/Non-2xx/ { print $5 }')
        batching=$([ "$mb" = 1 ] && echo off || echo "max$mb")
        printf "%-6s %-5s %-9s %5d %10.1f %9s %9s %7s\n" "$name" "$prec" "$batching" "$c" "$rps" \
          "$p50" "$p99" "${bad:-0}"
        RPS["$name $prec $batching $c"]=$rps
        if [ "$c" = 1 ]; then
          P50[$mb]=$p50
          # Mean forward-pass time per request during the concurrency-1 run (batch 1 there).
          MODEL_MS[$mb]=$(echo "$before $(infer_stats "$port")" |
            awk '{ if ($4 > $2) printf "%.3f", ($3 - $1) / ($4 - $2) * 1000; else print "nan" }')
        fi
      done
      kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
    done
    if [ -z "$refused" ]; then
      ims=$(infer_ms "$WORK/$name.safetensors" "$name" "$n_infer" "$prec")
      printf "%-6s %-5s stopcal-infer batch 1, %d threads: %s ms/image; %s: %s ms" "$name" "$prec" \
        "$THREADS" "$ims" "stopcald p50 at concurrency 1" "${P50[1]}"
      awk -v a="${P50[1]}" -v b="$ims" 'BEGIN { printf " (difference %.2f ms)\n", a - b }'
      printf "%-6s %-5s server overhead beyond the model at concurrency 1 %s: %s − %s = " "$name" "$prec" \
        "(p50 latency − mean forward pass inside stopcald)" "${P50[1]}" "${MODEL_MS[1]}"
      awk -v a="${P50[1]}" -v b="${MODEL_MS[1]}" 'BEGIN { printf "%.2f ms\n", a - b }'
    fi
    unset P50 MODEL_MS
  done
done

# Each further precision's throughput over the first's, point by point (where both ran).
base=${PRECISIONS[0]}
for prec in "${PRECISIONS[@]:1}"; do
  for key in "${!RPS[@]}"; do
    read -r name p batching c <<<"$key"
    [ "$p" = "$base" ] || continue
    other=${RPS["$name $prec $batching $c"]:-}
    [ -n "$other" ] || continue
    awk -v n="$name" -v b="$batching" -v c="$c" -v x="$other" -v y="${RPS[$key]}" -v p="$prec" -v q="$base" \
      'BEGIN { printf "%-6s %-9s %5d  %s/%s req/s: %.2fx\n", n, b, c, p, q, x / y }'
  done | sort
done
