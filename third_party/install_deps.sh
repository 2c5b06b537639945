#!/usr/bin/env bash
# Installs the Debian packages condense builds with, when any is missing:
# cmake, g++, Eigen 3.4, nlohmann-json, doctest, Google Benchmark. Needs root (apt-get); does nothing
# when everything is already there. The CUDA toolkit is not installed here: the CUDA
# backend is built only when nvcc is found.
set -euo pipefail
packages=(cmake g++ make libeigen3-dev nlohmann-json3-dev doctest-dev libbenchmark-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "condense: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
