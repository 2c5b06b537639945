#!/usr/bin/env bash
# Sets up and runs the main demo: installs missing Debian packages, builds the examples
# (Release, CPU, in build/demo) and trains the small character-level language model.
# Usage: bash examples/run_demo.sh [text file]
set -euo pipefail
cd "$(dirname "$0")/.."
bash third_party/install_deps.sh
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DCONDENSE_CUDA=OFF \
  -DCONDENSE_BUILD_TESTS=OFF -DCONDENSE_BUILD_BENCH=OFF -DCONDENSE_BUILD_EXAMPLES=ON >/dev/null
cmake --build build/demo --target train_char_mlp -j "$(nproc)"
./build/demo/examples/train_char_mlp "$@"
