#!/usr/bin/env bash
# Sets up, builds and runs every test: installs missing Debian packages, then
#  1. the ci preset, which is the release preset with host code at -O1 (CPU tests, the CUDA
#     backend and its GPU tests when nvcc is present — GPU tests skip without a device and
#     run on the CPU against the emulated CUDA backend — header checks, install/consume
#     test, the benchmarks and examples built),
#  2. the asan preset (AddressSanitizer + UndefinedBehaviorSanitizer): the CPU tests of the
#     code that handles raw memory (core, autograd, ops, attention, masks, io, KV and gist
#     caches); CONDENSE_TEST_EXCLUDE in CMakePresets.json names the rest, which the
#     ci preset runs, so that the whole script stays within 40 minutes on 2 cores,
#  3. a short libFuzzer run of the safetensors reader when clang++ is present.
# Usage: bash tests/run_all.sh   (from anywhere; JOBS=n to set build parallelism)
set -euo pipefail
cd "$(dirname "$0")/.."
bash third_party/install_deps.sh
export PATH="$PATH:/usr/local/cuda/bin"
jobs="${JOBS:-$(nproc)}"
start=$(date +%s)
for preset in ci asan; do
  echo "=== condense: configure + build ($preset) ==="
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  echo "=== condense: test ($preset) after $(( $(date +%s) - start ))s ==="
  ctest --preset "$preset" -j "$jobs"
done
if command -v clang++ >/dev/null; then
  echo "=== condense: libFuzzer smoke run of the safetensors reader (clang) ==="
  CXX=clang++ CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONDENSE_CUDA=OFF \
    -DCONDENSE_BUILD_TESTS=ON -DCONDENSE_BUILD_FUZZ=ON -DCONDENSE_BUILD_BENCH=OFF -DCONDENSE_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build build/fuzz --target fuzz_safetensors make_safetensors_seeds -j "$jobs"
  ctest --test-dir build/fuzz -R '^fuzz\.' --output-on-failure
else
  echo "=== condense: clang++ not found: the libFuzzer target is not built ==="
fi
echo "=== condense: all tests passed in $(( $(date +%s) - start ))s ==="
