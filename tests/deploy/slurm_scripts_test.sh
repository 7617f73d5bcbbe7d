#!/bin/bash
# The Slurm scripts' contract without Slurm: stopcald.sbatch runs a real stopcald (--device cpu),
# publishes host:port once ready, and on SIGTERM withdraws it and drains to exit 0;
# score_array.sbatch waits for that server, takes its share of the list, and calls the client.
#   slurm_scripts_test.sh SOURCE_DIR STOPCALD [STOPCAL_CLI]
# Without a built client, a stub records the call (the contract: stopcal --url U --json predict F...).
set -euo pipefail
src=$1
stopcald=$2
cli=${3:-}
work=$(mktemp -d)
job_pid=""
cleanup() {
  if [ -n "$job_pid" ] && kill -0 "$job_pid" 2>/dev/null; then kill -TERM "$job_pid"; wait "$job_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- server job log"; cat "$work/server.log" 2>/dev/null || true; exit 1; }

export STOPCAL_ADDR_DIR=$work/addr TMPDIR=$work STOPCALD=$stopcald STOPCAL_HOSTNAME=127.0.0.1
SLURM_JOB_ID=9001 bash "$src/deploy/slurm/stopcald.sbatch" --device cpu --drain-grace-ms 200 \
  > "$work/server.log" 2>&1 &
job_pid=$!
addr_file=$STOPCAL_ADDR_DIR/stopcald-9001.addr
for _ in $(seq 1 200); do [ -s "$addr_file" ] && break; sleep 0.1; done
[ -s "$addr_file" ] || fail "no address file after 20 s"
addr=$(cat "$addr_file")
[[ $addr =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail "address file holds '$addr'"
[ "$(curl -fsS "http://$addr/v2/health/ready")" = '{"ready":true}' ] || fail "published server is not ready"
echo "stopcald.sbatch: published $addr, ready"

# Three array tasks over five list entries (the three demo images, two of them twice).
ex=$src/models/demo/examples
printf '%s\n' "$ex/clean_stop.fits" "$ex/corrupted_continue.fits" "$ex/midway_continue.fits" \
  "$ex/clean_stop.fits" "" "$ex/corrupted_continue.fits" > "$work/list.txt"
if [ -n "$cli" ] && [ -x "$cli" ]; then
  client=$cli
else
  client=$work/stopcal-stub
  printf '#!/bin/bash\nprintf "%%s\\n" "$@"\n' > "$client"
  chmod +x "$client"
  echo "score_array.sbatch: no client built; using a stub that echoes its arguments"
fi
for t in 0 1 2; do
  SLURM_ARRAY_JOB_ID=77 SLURM_ARRAY_TASK_ID=$t SLURM_ARRAY_TASK_COUNT=3 SLURM_ARRAY_TASK_MIN=0 \
    STOPCAL_OUT_DIR=$work/results STOPCAL_CLI=$client STOPCAL_WAIT_S=20 \
    bash "$src/deploy/slurm/score_array.sbatch" "$work/list.txt" 2> "$work/score$t.log" \
    || { cat "$work/score$t.log"; fail "score task $t"; }
done
n=$(cat "$work"/results/77_*.out | grep -o 'clean_stop.fits\|corrupted_continue.fits\|midway_continue.fits' | wc -l)
if [ "$client" = "$cli" ]; then
  # The real client: every image once per list entry, each with a decision.
  [ "$n" -ge 5 ] || { cat "$work"/results/77_*.out; fail "expected 5 scored entries, saw $n"; }
  grep -q '"name":"clean_stop.fits"[^}]*"decision":"stop"' "$work"/results/77_0.out \
    || fail "clean_stop.fits not answered stop"
else
  [ "$n" -eq 5 ] || { cat "$work"/results/77_*.out; fail "expected 5 entries over 3 tasks, saw $n"; }
  if ! grep -qx -- "--url" "$work/results/77_0.out" || ! grep -qx "http://$addr" "$work/results/77_0.out"; then
    fail "client not called with --url http://$addr"
  fi
fi
echo "score_array.sbatch: 3 tasks scored their shares of the list"

kill -TERM "$job_pid"
rc=0; wait "$job_pid" || rc=$?
job_pid=""
[ "$rc" -eq 0 ] || fail "server job exited $rc after SIGTERM"
[ ! -e "$addr_file" ] || fail "address file not withdrawn on SIGTERM"
grep -q '"msg":"draining' "$work/server.log" || fail "stopcald did not drain"
echo "stopcald.sbatch: SIGTERM withdrew the address, drained, exit 0"
