// CUDA GEMM benchmarks: condense's linear (x @ W^T, one cuBLAS strided-batched call behind
// the op) against cuBLAS called directly on the same buffers, in the same process, on the
// projection shapes of GPT-2 small and of a 2048-wide model with B*T = 16k tokens: float
// tensors against cublasSgemm (TF32 off, as in the library's default), and bfloat16 tensors
// (the GEMMs of a DecoderLM<bfloat16>) against cublasGemmEx with bf16 inputs and output and
// fp32 accumulation. Report: condense time / cuBLAS time per shape and type (target: at
// most 1/0.95). Without a CUDA device every benchmark is skipped. CONDENSE_BENCH_SMOKE=1
// (bench/smoke.hpp): every extent divided by 32, once each.
#include <benchmark/benchmark.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/factories.hpp"
#include "condense/ops/matmul.hpp"
#include "smoke.hpp"

using namespace condense;

namespace {

/// (rows, in, out): x [rows, in] @ W[out, in]^T (each divided by 32 in smoke mode).
const std::vector<std::tuple<int, int, int>> kShapes = [] {
  std::vector<std::tuple<int, int, int>> shapes = {
      {16384, 768, 768}, {16384, 768, 3072}, {16384, 3072, 768}, {16384, 768, 2304},
      {16384, 2048, 2048}, {16384, 2048, 8192}, {16384, 8192, 2048},
  };
  if (condense::bench::smoke_mode())
    for (auto& [rows, in, out] : shapes) std::tie(rows, in, out) = std::tuple{rows / 32, in / 32, out / 32};
  return shapes;
}();

/// The operands of shape `index` on the device, and the label and FLOP counter.
template <class T>
struct Problem {
  int rows, in, out;
  Tensor<T> x, w;

  explicit Problem(benchmark::State& state) {
    std::tie(rows, in, out) = kShapes[static_cast<std::size_t>(state.range(0))];
    Generator gen(1);
    x = randn<T>({rows, in}, gen).to(Device::cuda());
    w = randn<T>({out, in}, gen).to(Device::cuda());
  }
  void report(benchmark::State& state) const {
    state.SetLabel(std::to_string(rows) + "x" + std::to_string(in) + " @ " + std::to_string(in) + "x" + std::to_string(out));
    state.counters["TFLOP/s"] =
        benchmark::Counter(2.0 * rows * in * out * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  }
};

template <class T>
void BM_condense_linear(benchmark::State& state) {
  if (!cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const Problem<T> p(state);
  for (auto _ : state) {
    benchmark::DoNotOptimize(linear(p.x, p.w).data());
    cuda::synchronize(0);
  }
  p.report(state);
}

template <class T>
void BM_cublas_direct(benchmark::State& state) {
  if (!cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const Problem<T> p(state);
  const auto& [rows, in, out, x, w] = p;
  auto y = empty<T>({rows, out}, Device::cuda());
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    state.SkipWithError("cublasCreate failed");
    return;
  }
  const float alpha = 1, beta = 0;
  for (auto _ : state) {
    // Row-major y = x W^T is column-major y^T = W x^T: W^T stored row-major is W col-major.
    if constexpr (std::is_same_v<T, float>) {
      cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w.data(), in, x.data(), in, &beta, y.data(),
                  out);
    } else {
      cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w.data(), CUDA_R_16BF, in, x.data(),
                   CUDA_R_16BF, in, &beta, y.data(), CUDA_R_16BF, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    cudaDeviceSynchronize();
  }
  cublasDestroy(handle);
  p.report(state);
}

/// The registration every benchmark here shares: one run per shape.
void shapes(benchmark::internal::Benchmark* b) {
  b->DenseRange(0, static_cast<int>(kShapes.size()) - 1)->Unit(benchmark::kMillisecond)->UseRealTime();
  condense::bench::once_in_smoke_mode(b);
}

}  // namespace

BENCHMARK(BM_condense_linear<float>)->Apply(shapes);
BENCHMARK(BM_cublas_direct<float>)->Apply(shapes);
BENCHMARK(BM_condense_linear<bfloat16>)->Apply(shapes);
BENCHMARK(BM_cublas_direct<bfloat16>)->Apply(shapes);
BENCHMARK_MAIN();
