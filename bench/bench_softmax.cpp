// softmax / log_softmax over the last dim (forward, and forward + backward), logsumexp and
// sum over the last dim, float. Threads: CONDENSE_THREADS (default 2). Bytes/s counts the
// tensors each op must read and write once (forward: x in + y out; forward + backward:
// additionally g in + dx out; reductions: x in).
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "condense/core/factories.hpp"
#include "condense/ops/reduce.hpp"
#include "condense/ops/softmax.hpp"

using namespace condense;

namespace {

const int threads = [] {
  const char* env = std::getenv("CONDENSE_THREADS");
  const int n = env ? std::atoi(env) : 2;
  set_num_threads(n > 0 ? n : 2);
  return n > 0 ? n : 2;
}();

template <bool Log>
void BM_softmax_forward(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  Generator gen(1);
  const auto x = randn<float>({rows, cols}, gen);
  NoGradGuard no_grad;
  for (auto _ : state) {
    auto y = Log ? log_softmax(x, -1) : softmax(x, -1);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * 2 * static_cast<std::int64_t>(sizeof(float)));
  state.counters["threads"] = threads;
}

template <bool Log>
void BM_softmax_forward_backward(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  Generator gen(2);
  auto x = randn<float>({rows, cols}, gen);
  x.requires_grad_();
  const auto g = randn<float>({rows, cols}, gen);
  for (auto _ : state) {
    auto y = Log ? log_softmax(x, -1) : softmax(x, -1);
    y.backward(g);
    benchmark::DoNotOptimize(x.grad().data());
    x.zero_grad();
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * 4 * static_cast<std::int64_t>(sizeof(float)));
  state.counters["threads"] = threads;
}

void BM_logsumexp(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  Generator gen(3);
  const auto x = randn<float>({rows, cols}, gen);
  NoGradGuard no_grad;
  for (auto _ : state) {
    auto y = logsumexp(x, {-1});
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * static_cast<std::int64_t>(sizeof(float)));
  state.counters["threads"] = threads;
}

void BM_sum(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  Generator gen(4);
  const auto x = randn<float>({rows, cols}, gen);
  NoGradGuard no_grad;
  for (auto _ : state) {
    auto y = sum(x, {-1});
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * static_cast<std::int64_t>(sizeof(float)));
  state.counters["threads"] = threads;
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols"})->Args({1024, 1024})->Args({4096, 1024})->Args({256, 4096});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_softmax_forward<false>)->Name("BM_softmax/forward")->Apply(shapes);
BENCHMARK(BM_softmax_forward<true>)->Name("BM_log_softmax/forward")->Apply(shapes);
BENCHMARK(BM_softmax_forward_backward<false>)->Name("BM_softmax/forward_backward")->Apply(shapes);
BENCHMARK(BM_softmax_forward_backward<true>)->Name("BM_log_softmax/forward_backward")->Apply(shapes);
BENCHMARK(BM_logsumexp)->Name("BM_logsumexp/lastdim")->Args({4096, 1024})->ArgNames({"rows", "cols"})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_sum)->Name("BM_sum/lastdim")->Args({4096, 1024})->ArgNames({"rows", "cols"})->Unit(benchmark::kMicrosecond)->UseRealTime();

BENCHMARK_MAIN();
