#!/usr/bin/env bash
# Debian packages for building stopcal and running its test suite (PyTorch/astropy references).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake pkg-config clang libclang-rt-14-dev \
  libopenblas-openmp-dev libopenblas-dev libjansson-dev libcfitsio-dev libmicrohttpd-dev \
  libcurl4-openssl-dev zlib1g-dev curl prometheus \
  python3 python3-numpy python3-torch python3-astropy python3-matplotlib >/dev/null
