#!/usr/bin/env bash
# The checks that need a GPU, as one script for a machine with an NVIDIA device (sm_90 by
# default): builds the CUDA backend, its parity tests, the custom-policy example and the
# GPU benchmarks; runs the parity tests; runs compute-sanitizer (memcheck, racecheck) on the
# attention and op tests; runs the GPU benchmarks and writes their JSON under $OUT_DIR.
# Usage: bash tests/run_gpu_checks.sh [build-dir]   (ARCH=90 JOBS=n OUT_DIR=... to change)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/gpu}"
arch="${ARCH:-90}"
jobs="${JOBS:-$(nproc)}"
out="${OUT_DIR:-$build/gpu_results}"
export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
start=$(date +%s)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCONDENSE_CUDA=ON -DCONDENSE_CUDA_ARCHITECTURES="$arch" \
  -DCONDENSE_HEADER_CHECK=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target condense_cuda_tests custom_policy_cuda bench_cuda_attention bench_cuda_matmul
echo "=== build took $(( $(date +%s) - start ))s ==="
"$build/tests/condense_cuda_tests" | tee "$out/parity.txt"
"$build/examples/custom_policy_cuda" | tee "$out/custom_policy.txt"
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    echo "=== compute-sanitizer --tool $tool ==="
    compute-sanitizer --tool "$tool" --error-exitcode 1 "$build/tests/condense_cuda_tests" \
      --test-case='cuda attention*,cuda parity: softmax*,cuda parity: reductions*' | tail -5 | tee "$out/sanitizer_$tool.txt"
  done
fi
"$build/bench/bench_cuda_matmul" --benchmark_format=json --benchmark_out="$out/matmul.json" --benchmark_min_time=0.2
"$build/bench/bench_cuda_attention" --benchmark_filter="${ATTENTION_FILTER:-.*/(causal|gist_prompt_75pct)/d(64|128)/(1024|4096)}" \
  --benchmark_format=json --benchmark_out="$out/attention.json" --benchmark_min_time=0.2
echo "=== all GPU checks done in $(( $(date +%s) - start ))s; results in $out ==="
