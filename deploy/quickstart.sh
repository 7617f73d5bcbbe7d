#!/usr/bin/env bash
# One command on a fresh Debian machine: install the build/runtime packages, build a release
# stopcal, and run stopcald on the default model (models/demo) in the foreground on port 8080.
# Extra arguments go to stopcald (e.g. --port 9000, --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install_deps.sh --runtime
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
exec build/server/stopcald "$@"
