#!/usr/bin/env bash
# Builds the programs of the GPU checks (tests/gpu_check_programs.sh: the CUDA parity tests,
# the custom-policy example, the GPU benchmarks) on this machine, which needs nvcc but no
# GPU, and packs them stripped into .prebuilt/gpu_checks.tar.xz (ignored by git), with the
# two shared libraries a bare GPU machine may lack (Google Benchmark's and libgomp), the
# build's settings and a checksum of every source it was built from. Carried to the GPU
# machine (`.prebuilt`), the archive lets tests/run_gpu_checks.sh skip its own build, which
# costs minutes of device time; that script still builds when the archive is missing, was
# built from other sources, or its programs cannot load there.
# Usage: bash tests/pack_gpu_checks.sh [build-dir]   (default build/release, configured with
# the release preset when it is not yet; ARCH must match the build's CUDA architectures.
# JOBS=n sets build parallelism.)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/gpu_check_programs.sh
build="${1:-build/release}"
[ -f "$build/CMakeCache.txt" ] || cmake --preset release >/dev/null
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
if [ "$(cache_value CONDENSE_CUDA)" != "ON" ] || [ "$(cache_value CMAKE_BUILD_TYPE)" != "Release" ] ||
   [ "$(cache_value CONDENSE_CUDA_ARCHITECTURES)" != "$arch" ]; then
  echo "pack_gpu_checks: $build must be a Release build with CONDENSE_CUDA=ON for architecture $arch" >&2
  exit 1
fi
targets=()
for p in "${gpu_check_programs[@]}"; do targets+=("$(basename "$p")"); done
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
for p in "${gpu_check_programs[@]}"; do
  mkdir -p "$stage/$(dirname "$p")"
  strip -o "$stage/$p" "$build/$p"
done
mkdir -p "$stage/lib"
for lib in libbenchmark.so.1debian libgomp.so.1; do
  path="$(ldd "$build/bench/bench_cuda_attention" | awk -v l="$lib" '$1 == l { print $3 }')"
  [ -n "$path" ] && cp -L "$path" "$stage/lib/"
done
git ls-files -z -- "${gpu_check_source_dirs[@]}" | xargs -0 sha256sum >"$stage/sources.sha256"
{
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- "${gpu_check_source_dirs[@]}" || echo ' (with uncommitted changes)')"
  echo "packed: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n)"
  echo "build: $build, Release, CUDA architectures $arch, $(nvcc --version | tail -1)"
} >"$stage/manifest.txt"
mkdir -p .prebuilt
tar -C "$stage" -cJf .prebuilt/gpu_checks.tar.xz .
cat "$stage/manifest.txt"
ls -l .prebuilt/gpu_checks.tar.xz
