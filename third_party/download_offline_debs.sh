#!/usr/bin/env bash
# Downloads the Debian packages condense builds with (Eigen, nlohmann-json, doctest, Google
# Benchmark and its library) as .deb files into .debs/ at the repository root, for a machine
# that cannot reach a package mirror (the GPU machine): tests/run_gpu_checks.sh unpacks them
# there into a private prefix and points CMake at it. .debs/ is ignored by git; carry it to
# that machine with the working tree. Run here, where apt-get can download.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .debs
cd .debs
apt-get download libeigen3-dev nlohmann-json3-dev doctest-dev libbenchmark-dev libbenchmark1debian
ls -l
