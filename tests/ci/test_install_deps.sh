#!/usr/bin/env bash
# tests/install_deps.sh --check, which tests/run_all.sh runs first (as --if-missing) so the test
# command works on a fresh machine: it must pass here (the suite is running, so all is installed)
# and must name what is missing when the interpreter lacks the test references.
# Usage: test_install_deps.sh REPO_ROOT WORKDIR
set -uo pipefail
root=$1
work=$2
fail=0
mkdir -p "$work"

out=$(bash "$root/tests/install_deps.sh" --check 2>&1); rc=$?
if [ $rc -ne 0 ] || ! grep -q "deps: all present" <<<"$out"; then
  echo "FAILED: --check on this machine exited $rc:"; echo "$out"; fail=1
fi

# An interpreter without Debian's site packages: numpy, torch, astropy are all missing from it.
rm -rf "$work/bare"
if ! /usr/bin/python3 -m venv --without-pip "$work/bare"; then
  echo "FAILED: cannot create a bare venv"; exit 1
fi
out=$(STOPCAL_PYTHON="$work/bare/bin/python" bash "$root/tests/install_deps.sh" --check 2>&1); rc=$?
if [ $rc -ne 1 ] || ! grep -q "cannot import: numpy torch astropy" <<<"$out"; then
  echo "FAILED: --check with a bare interpreter exited $rc (want 1, naming numpy):"; echo "$out"; fail=1
fi

out=$(bash "$root/tests/install_deps.sh" --no-such-flag 2>&1); rc=$?
if [ $rc -ne 2 ]; then
  echo "FAILED: an unknown flag exited $rc (want 2): $out"; fail=1
fi
[ $fail -eq 0 ] && echo "install_deps --check: present and missing both reported"
exit $fail
