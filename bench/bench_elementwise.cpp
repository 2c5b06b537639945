// Elementwise op throughput on contiguous float tensors: add (same shape and with a
// broadcast row), mul, exp, tanh, sigmoid, relu, gelu (erf and tanh forms) and silu at 1M,
// 4M and 16M elements (forward only), plus the fused gelu backward at 4M. Reports bytes/s
// counting the bytes read and written once. Threads: CONDENSE_THREADS (default 2).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "condense/autograd/grad_mode.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/core/factories.hpp"
#include "condense/ops/activations.hpp"
#include "condense/ops/unary.hpp"

using namespace condense;

namespace {

/// A deterministic float tensor in roughly [-4, 4) (covers the interesting range of every
/// activation without overflow).
Tensor<float> input(std::int64_t n, std::uint64_t seed = 7) {
  Generator gen(seed);
  return uniform<float>({n / 1024, 1024}, -4.0, 4.0, gen);
}

template <class Op>
void run_unary(benchmark::State& state, Op op) {
  const std::int64_t n = state.range(0);
  const Tensor<float> x = input(n);
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor<float> y = op(x);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<std::int64_t>(2 * sizeof(float)));
}

void BM_add(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor<float> a = input(n, 1), b = input(n, 2);
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor<float> y = add(a, b);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<std::int64_t>(3 * sizeof(float)));
}

void BM_add_broadcast_row(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor<float> a = input(n, 1);
  Generator gen(3);
  const Tensor<float> row = randn<float>({1024}, gen);
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor<float> y = add(a, row);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * (2 * n + 1024) * static_cast<std::int64_t>(sizeof(float)));
}

void BM_mul(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor<float> a = input(n, 1), b = input(n, 2);
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor<float> y = mul(a, b);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<std::int64_t>(3 * sizeof(float)));
}

void BM_exp(benchmark::State& state) { run_unary(state, [](const Tensor<float>& x) { return exp(x); }); }
void BM_tanh(benchmark::State& state) { run_unary(state, [](const Tensor<float>& x) { return tanh(x); }); }
void BM_sigmoid(benchmark::State& state) { run_unary(state, [](const Tensor<float>& x) { return sigmoid(x); }); }
void BM_relu(benchmark::State& state) { run_unary(state, [](const Tensor<float>& x) { return relu(x); }); }
void BM_gelu_erf(benchmark::State& state) { run_unary(state, [](const Tensor<float>& x) { return gelu(x); }); }
void BM_gelu_tanh(benchmark::State& state) {
  run_unary(state, [](const Tensor<float>& x) { return gelu(x, GeluApproximation::Tanh); });
}
void BM_silu(benchmark::State& state) { run_unary(state, [](const Tensor<float>& x) { return silu(x); }); }

/// The gelu backward kernel alone: (g, x) -> g * gelu'(x), one fused pass.
template <GeluApproximation A>
void BM_gelu_backward(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const Tensor<float> x = input(n, 1), g = input(n, 2);
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor<float> y = detail::math_map2("gelu backward", g, x, [](const float* gv, const float* xv, float* o, std::int64_t m) {
      if constexpr (A == GeluApproximation::Erf) detail::gelu_erf_backward_kernel(gv, xv, o, m);
      else detail::gelu_tanh_backward_kernel(gv, xv, o, m);
    });
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<std::int64_t>(3 * sizeof(float)));
}

void sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t n : {1 << 20, 1 << 22, 1 << 24}) b->Arg(n);
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_add)->Apply(sizes);
BENCHMARK(BM_add_broadcast_row)->Apply(sizes);
BENCHMARK(BM_mul)->Apply(sizes);
BENCHMARK(BM_exp)->Apply(sizes);
BENCHMARK(BM_tanh)->Apply(sizes);
BENCHMARK(BM_sigmoid)->Apply(sizes);
BENCHMARK(BM_relu)->Apply(sizes);
BENCHMARK(BM_gelu_erf)->Apply(sizes);
BENCHMARK(BM_gelu_tanh)->Apply(sizes);
BENCHMARK(BM_silu)->Apply(sizes);
BENCHMARK_TEMPLATE(BM_gelu_backward, GeluApproximation::Erf)->Arg(1 << 22)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gelu_backward, GeluApproximation::Tanh)->Arg(1 << 22)->Unit(benchmark::kMicrosecond)->UseRealTime();

int main(int argc, char** argv) {
  int threads = 2;
  if (const char* env = std::getenv("CONDENSE_THREADS")) threads = std::max(1, std::atoi(env));
  set_num_threads(threads);
  benchmark::AddCustomContext("condense_threads", std::to_string(threads));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
