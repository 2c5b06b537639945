#!/usr/bin/env bash
# Sets up and runs the main demo: installs missing Debian packages, builds the examples
# (Release, CPU, in build/demo) and runs the gisting benchmark at its quick size: trains the
# pos / gist-1 / gist-2 / gist-5 / neg decoders and the gist encoder-decoders on the
# instruction benchmark, evaluates them, measures the gist cache, and prints the table
# (about ten minutes on 2 cores; docs/gisting.md).
# Usage: bash examples/run_demo.sh [gist_benchmark options, e.g. --only pos,gist-1,neg]
set -euo pipefail
cd "$(dirname "$0")/.."
bash third_party/install_deps.sh
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DCONDENSE_CUDA=OFF \
  -DCONDENSE_BUILD_TESTS=OFF -DCONDENSE_BUILD_BENCH=OFF -DCONDENSE_BUILD_EXAMPLES=ON >/dev/null
cmake --build build/demo --target gist_benchmark -j "$(nproc)"
./build/demo/examples/gist_benchmark --out-dir build/demo "$@"
