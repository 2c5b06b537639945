#!/usr/bin/env bash
# The checks that need a GPU, as one script for a machine with an NVIDIA device (sm_90 by
# default): builds the CUDA backend, its parity tests, the custom-policy example and the
# GPU benchmarks; runs the parity tests, the GPU benchmarks (attention, GEMM, memory-bound
# ops against cudaMemcpy, a GPT-2-small training step) with a Markdown summary of the judged
# figures (bench/summarize_gpu_results.py), PyTorch side by side when python3 has torch, and
# last compute-sanitizer (memcheck, racecheck) on the attention and op tests; writes their
# output and JSON under $OUT_DIR.
# Usage: bash tests/run_gpu_checks.sh [build-dir]   (ARCH=90 JOBS=n OUT_DIR=... to change)
# PHASES (default "parity bench torch sanitizer") picks the groups of steps to run after the
# build, so a short device session can split the work over two calls on a warm machine:
# PHASES="parity bench" first, then PHASES="torch sanitizer" (the build is incremental).
# On a machine without a package mirror: run third_party/download_offline_debs.sh where
# apt-get works and bring .debs/ along; the .deb files are unpacked into a private prefix
# that CMake searches first. To skip the build on the GPU machine, run
# tests/pack_gpu_checks.sh where nvcc is and bring .prebuilt/ along (see there).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/gpu_check_programs.sh
build="${1:-build/gpu}"
out="${OUT_DIR:-$build/gpu_results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
start=$(date +%s)
config=()
if compgen -G ".debs/*.deb" >/dev/null; then
  prefix="${TMPDIR:-/tmp}/condense-debroot"
  mkdir -p "$prefix"
  for f in .debs/*.deb; do dpkg -x "$f" "$prefix"; done
  config+=(-DCMAKE_PREFIX_PATH="$prefix/usr")
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# A build packed on a machine without a GPU (tests/pack_gpu_checks.sh, carried as .prebuilt)
# stands in for the build below when it was made from exactly these sources and its
# programs find their libraries here; PREBUILT=0 builds anyway.
use_prebuilt=false
if [ -f .prebuilt/gpu_checks.tar.xz ] && [ "${PREBUILT:-1}" != 0 ]; then
  mkdir -p "$build"
  tar -C "$build" -xJf .prebuilt/gpu_checks.tar.xz
  export LD_LIBRARY_PATH="$(cd "$build" && pwd)/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  missing="$(for p in "${gpu_check_programs[@]}"; do ldd "$build/$p" | grep "not found" || true; done)"
  if ! sha256sum --quiet -c "$build/sources.sha256" >"$out/prebuilt_check.txt" 2>&1; then
    echo "=== the packed build is of other sources (prebuilt_check.txt lists them): building here ==="
  elif [ -n "$missing" ]; then
    printf '=== the packed programs miss libraries here: building here ===\n%s\n' "$missing"
  else
    use_prebuilt=true
    echo "=== packed build used ===" && tee "$out/prebuilt_manifest.txt" <"$build/manifest.txt"
  fi
fi
if ! $use_prebuilt; then
  command -v ninja >/dev/null && [ ! -f "$build/Makefile" ] && config+=(-G Ninja)
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCONDENSE_CUDA=ON -DCONDENSE_CUDA_ARCHITECTURES="$arch" \
    -DCONDENSE_HEADER_CHECK=OFF "${config[@]}" >/dev/null
  targets=()
  for p in "${gpu_check_programs[@]}"; do targets+=("$(basename "$p")"); done
  cmake --build "$build" -j "$jobs" --target "${targets[@]}"
  echo "=== build took $(( $(date +%s) - start ))s ==="
fi
# Every step runs even when an earlier one fails (one device session has to collect them
# all); the failures are listed at the end and make the exit status non-zero.
failed=()
phases=" ${PHASES:-parity bench torch sanitizer} "
want() { [[ "$phases" == *" $1 "* ]]; }
# Each step is cut off after STEP_TIMEOUT seconds (default 240) so that one slow step (a
# sanitizer run) cannot use up a short device session.
run() {
  local name="$1"
  shift
  echo "=== $name ==="
  timeout "${STEP_TIMEOUT:-240}" "$@" 2>&1 | tee "$out/$name.txt" || failed+=("$name")
}
attention_sizes="${ATTENTION_SIZES:-1024|4096}"
if want parity; then
  run parity "$build/tests/condense_cuda_tests"
  run custom_policy "$build/examples/custom_policy_cuda"
fi
if want bench; then
  run bench_attention "$build/bench/bench_cuda_attention" \
    --benchmark_filter="${ATTENTION_FILTER:-.*/(causal|gist_prompt_75pct)/d(64|128)/($attention_sizes)}" \
    --benchmark_format=json --benchmark_out="$out/attention.json" --benchmark_min_time=0.2
  run bench_decode "$build/bench/bench_cuda_attention" --benchmark_filter='BM_cuda_attention_decode' \
    --benchmark_format=json --benchmark_out="$out/decode.json" --benchmark_min_time=0.1
  run bench_matmul "$build/bench/bench_cuda_matmul" --benchmark_format=json --benchmark_out="$out/matmul.json" \
    --benchmark_min_time=0.2
  run bench_memory "$build/bench/bench_cuda_memory" --benchmark_format=json --benchmark_out="$out/memory.json" \
    --benchmark_min_time=0.2
  run bench_train "$build/bench/bench_cuda_train_lm" --benchmark_format=json --benchmark_out="$out/train.json" \
    --benchmark_min_time=3
  # The judged figures (attention TFLOP/s against the targets, GEMM against cuBLAS, ...) as
  # Markdown for docs/results.md.
  if command -v python3 >/dev/null; then
    run summary python3 bench/summarize_gpu_results.py "$out" --out "$out/summary.md"
  fi
fi
# PyTorch side by side (when python3 has torch; the scripts rerun the condense benchmarks).
if want torch && python3 -c "import torch" 2>/dev/null; then
  run torch_attention python3 bench/torch_cuda_attention.py --bench "$build/bench/bench_cuda_attention" \
    --sizes "${attention_sizes//|/,}" --policies causal,gist_prompt_75pct --json "$out/torch_attention.json"
  run torch_train_tf32 python3 bench/torch_train_lm.py --device cuda --bench "$build/bench/bench_cuda_train_lm" --steps 5
  run torch_train_bf16 python3 bench/torch_train_lm.py --device cuda --bench "$build/bench/bench_cuda_train_lm" --steps 5 --bf16
  run torch_train_bf16_params python3 bench/torch_train_lm.py --device cuda --bench "$build/bench/bench_cuda_train_lm" --steps 5 --bf16-params
fi
# Last, as they are the slowest and need a runtime that lets the sanitizer at the device.
if want sanitizer && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    run "sanitizer_$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 "$build/tests/condense_cuda_tests" \
      --test-case='cuda attention*,cuda parity: softmax*,cuda parity: reductions*,*norm*,*rope*,*embedding*,*cross_entropy*,*AdamW*,*dropout*,*cumsum*,*argmax*,*index_select*'
  done
fi
echo "=== all GPU checks done in $(( $(date +%s) - start ))s; results in $out ==="
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
