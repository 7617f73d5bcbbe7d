#!/bin/bash
# deploy/slurm under a real single-node Slurm, started here as root on 127.0.0.1 and stopped by pid:
# stopcald.sbatch (CPU, --gpus=0 overriding the GPU default) publishes its address, a
# score_array.sbatch array (after:server dependency) scores the demo images with the stopcal client,
# then `scancel --batch --signal=TERM` makes the server job withdraw its address, drain and exit 0.
#   tests/deploy/slurm_e2e.sh [BUILD_DIR]     (default build-deploy; needs stopcald and stopcal)
# Needs root and Debian's slurm-wlm + munge; exits 77 (skip) without them. ctest runs it as
# deploy_slurm_e2e on the suite's build.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$src/build-deploy}" && pwd)
stopcald=$build/server/stopcald
cli=$build/client/stopcal
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (slurmctld/slurmd run as root)"
for t in slurmctld slurmd sbatch squeue scontrol scancel munged mungekey curl; do
  command -v "$t" >/dev/null || skip "$t missing (apt install slurm-wlm munge)"
done
{ [ -x "$stopcald" ] && [ -x "$cli" ]; } || skip "build stopcald and stopcal in $build first"

work=$(mktemp -d /tmp/stopcal-slurm-e2e.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in "$work"/slurmctld.log "$work"/slurmd.log "$work"/server-*.log "$work"/score-*.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }
  done
  exit 1
}

# munge, on its own socket and key
mungekey -c -k "$work/munge.key" 2>/dev/null || dd if=/dev/urandom of="$work/munge.key" bs=1k count=1 2>/dev/null
chmod 600 "$work/munge.key"
munged -F --force --socket="$work/munge.sock" --key-file="$work/munge.key" --pid-file="$work/munged.pid" \
  --log-file="$work/munged.log" --seed-file="$work/munged.seed" 2> "$work/munged.err" &
pids+=($!)

node=$(hostname -s)
export SLURM_CONF=$work/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=stopcal-e2e
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge.sock
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$work/state" "$work/spool" "$work/addr" "$work/results"
for _ in $(seq 1 50); do [ -S "$work/munge.sock" ] && break; sleep 0.1; done
slurmctld -D -i -f "$SLURM_CONF" > "$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" > "$work/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -q idle && break
  sleep 0.5
done
sinfo -h -o '%T' | grep -q idle || fail "node not idle"
echo "slurm: single node $node up"

export STOPCALD=$stopcald STOPCAL_ADDR_DIR=$work/addr STOPCAL_HOSTNAME=127.0.0.1
srv=$(sbatch --parsable -p debug --gpus=0 -c 1 -o "$work/server-%j.log" \
  "$src/deploy/slurm/stopcald.sbatch" --device cpu --drain-grace-ms 500) || fail "sbatch server"
echo "slurm: server job $srv submitted"
ex=$src/models/demo/examples
printf '%s\n' "$ex/clean_stop.fits" "$ex/corrupted_continue.fits" "$ex/midway_continue.fits" > "$work/list.txt"
arr=$(STOPCAL_CLI=$cli STOPCAL_OUT_DIR=$work/results STOPCAL_WAIT_S=120 \
  sbatch --parsable -p debug -c 1 --array=0-2 --dependency="after:$srv" -o "$work/score-%A_%a.log" \
  "$src/deploy/slurm/score_array.sbatch" "$work/list.txt") || fail "sbatch array"
echo "slurm: score array $arr submitted (after:$srv)"

addr_file=$work/addr/stopcald-$srv.addr
for _ in $(seq 1 120); do [ -s "$addr_file" ] && break; sleep 0.5; done
[ -s "$addr_file" ] || fail "server job did not publish its address"
echo "slurm: server published $(cat "$addr_file")"

for _ in $(seq 1 240); do [ -z "$(squeue -h -j "$arr" 2>/dev/null)" ] && break; sleep 0.5; done
[ -z "$(squeue -h -j "$arr")" ] || fail "array still running after 120 s"
for t in 0 1 2; do
  scontrol show job "${arr}_$t" | grep -q 'ExitCode=0:0' || fail "array task $t failed"
done
results=$(cat "$work"/results/*.out)
for want in 'clean_stop.fits[^}]*"decision":"stop"' 'corrupted_continue.fits[^}]*"decision":"continue"' \
            'midway_continue.fits[^}]*"decision":"continue"'; do
  grep -q "$want" <<< "$results" || fail "no result matching $want"
done
echo "slurm: 3 array tasks scored the 3 demo images (stop, continue, continue)"

scancel --batch --signal=TERM "$srv"
for _ in $(seq 1 60); do [ -z "$(squeue -h -j "$srv" 2>/dev/null)" ] && break; sleep 0.5; done
[ -z "$(squeue -h -j "$srv")" ] || fail "server job still running 30 s after SIGTERM"
scontrol show job "$srv" | grep -q 'JobState=COMPLETED.*' || scontrol show job "$srv" | grep -q 'ExitCode=0:0' \
  || fail "server job did not end cleanly: $(scontrol show job "$srv" | grep -o 'JobState=[A-Z]* .*ExitCode=[0-9:]*')"
[ ! -e "$addr_file" ] || fail "address file still there after SIGTERM"
grep -q '"msg":"draining' "$work/server-$srv.log" || fail "stopcald did not drain"
echo "slurm: SIGTERM to the batch shell: address withdrawn, stopcald drained, $(scontrol show job "$srv" | grep -o 'JobState=[A-Z]*')"

# The walltime path: the script's own --signal=B:TERM@120, here with --time=3 and TERM 170 s before
# it, so Slurm signals the batch shell about 10 s after the start (slurmctld checks every ~30 s).
srv2=$(sbatch --parsable -p debug --gpus=0 -c 1 --time=00:03:00 --signal=B:TERM@170 \
  -o "$work/server-%j.log" "$src/deploy/slurm/stopcald.sbatch" --device cpu --drain-grace-ms 500) \
  || fail "sbatch walltime server"
t0=$SECONDS
for _ in $(seq 1 240); do [ -z "$(squeue -h -j "$srv2" 2>/dev/null)" ] && break; sleep 0.5; done
[ -z "$(squeue -h -j "$srv2")" ] || fail "walltime job not signalled within 120 s"
scontrol show job "$srv2" | grep -q 'JobState=COMPLETED' \
  || fail "walltime job: $(scontrol show job "$srv2" | grep -o 'JobState=[A-Z]*')"
grep -q '"msg":"stopped"' "$work/server-$srv2.log" || fail "walltime job: stopcald did not stop cleanly"
[ ! -e "$work/addr/stopcald-$srv2.addr" ] || fail "walltime job: address file left behind"
echo "slurm: --signal=B:TERM before walltime: drained and COMPLETED after $((SECONDS - t0)) s (limit 180 s)"
echo "PASS"
