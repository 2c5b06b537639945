#!/usr/bin/env bash
# Sets up, builds and runs every test: installs missing Debian packages, then
#  1. the release preset (CPU tests, the CUDA backend and its GPU tests when nvcc is
#     present — GPU tests skip without a device — header checks, install/consume test),
#  2. the asan preset (AddressSanitizer + UndefinedBehaviorSanitizer, CPU tests).
# Usage: bash tests/run_all.sh   (from anywhere; JOBS=n to set build parallelism)
set -euo pipefail
cd "$(dirname "$0")/.."
bash third_party/install_deps.sh
export PATH="$PATH:/usr/local/cuda/bin"
jobs="${JOBS:-$(nproc)}"
start=$(date +%s)
for preset in release asan; do
  echo "=== condense: configure + build ($preset) ==="
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  echo "=== condense: test ($preset) after $(( $(date +%s) - start ))s ==="
  ctest --preset "$preset" -j "$jobs"
done
echo "=== condense: all tests passed in $(( $(date +%s) - start ))s ==="
