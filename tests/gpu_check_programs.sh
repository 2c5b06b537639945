# The programs tests/run_gpu_checks.sh runs on a GPU machine, as paths inside a build
# folder (the CMake target is each path's last part), and the settings both scripts share.
# Sourced by run_gpu_checks.sh, which builds them there, and by pack_gpu_checks.sh, which
# builds them here and packs them.
gpu_check_programs=(
  tests/condense_cuda_tests
  examples/custom_policy_cuda
  bench/bench_cuda_attention
  bench/bench_cuda_matmul
  bench/bench_cuda_memory
  bench/bench_cuda_train_lm
)
# Sources whose change makes a packed build stale (checked by checksum before it is used).
gpu_check_source_dirs=(CMakeLists.txt include kernels tests bench examples third_party)
# The CUDA architecture (ARCH, default 90: Hopper), build parallelism (JOBS) and nvcc.
arch="${ARCH:-90}"
jobs="${JOBS:-$(nproc)}"
export PATH="$PATH:/usr/local/cuda/bin"
