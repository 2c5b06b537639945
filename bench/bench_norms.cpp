// Benchmarks of the fused layer ops: layer_norm and rms_norm (forward, forward+backward) at
// [4096, 1024] and [1024, 4096], cross_entropy forward+backward at [2048, 8192] and
// embedding forward+backward with a [32000, 512] table and 8x512 ids, all in float.
// Threads: CONDENSE_THREADS (default 2). Bytes/s counts the main tensors read and written.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>

#include "condense/core/factories.hpp"
#include "condense/ops/embedding.hpp"
#include "condense/ops/losses.hpp"
#include "condense/ops/norms.hpp"

using namespace condense;

namespace {

int bench_threads() {
  const char* env = std::getenv("CONDENSE_THREADS");
  const int n = env ? std::atoi(env) : 2;
  return n > 0 ? n : 2;
}

const bool threads_set = [] {
  set_num_threads(bench_threads());
  return true;
}();

template <bool Rms>
void norm_forward(benchmark::State& state) {
  const std::int64_t rows = state.range(0), d = state.range(1);
  Generator gen(1);
  auto x = randn<float>({rows, d}, gen);
  auto w = randn<float>({d}, gen), b = randn<float>({d}, gen);
  for (auto _ : state) {
    auto y = Rms ? rms_norm(x, w) : layer_norm(x, w, b);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * rows * d * static_cast<std::int64_t>(sizeof(float)));
}

template <bool Rms>
void norm_forward_backward(benchmark::State& state) {
  const std::int64_t rows = state.range(0), d = state.range(1);
  Generator gen(2);
  auto x = randn<float>({rows, d}, gen).requires_grad_();
  auto w = randn<float>({d}, gen).requires_grad_();
  auto b = randn<float>({d}, gen).requires_grad_();
  auto g = randn<float>({rows, d}, gen);
  for (auto _ : state) {
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
    auto y = Rms ? rms_norm(x, w) : layer_norm(x, w, b);
    y.backward(g);
    benchmark::DoNotOptimize(x.grad().data());
  }
  // forward: read x, write y; backward: read x and g, write dx.
  state.SetBytesProcessed(state.iterations() * 5 * rows * d * static_cast<std::int64_t>(sizeof(float)));
}

void BM_layer_norm_fwd(benchmark::State& state) { norm_forward<false>(state); }
void BM_layer_norm_fwd_bwd(benchmark::State& state) { norm_forward_backward<false>(state); }
void BM_rms_norm_fwd(benchmark::State& state) { norm_forward<true>(state); }
void BM_rms_norm_fwd_bwd(benchmark::State& state) { norm_forward_backward<true>(state); }

void BM_cross_entropy_fwd_bwd(benchmark::State& state) {
  const std::int64_t rows = state.range(0), classes = state.range(1);
  Generator gen(3);
  auto logits = randn<float>({rows, classes}, gen).requires_grad_();
  auto targets = randint<std::int64_t>({rows}, 0, classes, gen);
  for (auto _ : state) {
    logits.zero_grad();
    auto loss = cross_entropy(logits, targets);
    loss.backward();
    benchmark::DoNotOptimize(logits.grad().data());
  }
  // forward: read logits; backward: read logits, write dlogits.
  state.SetBytesProcessed(state.iterations() * 3 * rows * classes * static_cast<std::int64_t>(sizeof(float)));
}

void BM_cross_entropy_fwd(benchmark::State& state) {
  const std::int64_t rows = state.range(0), classes = state.range(1);
  Generator gen(4);
  auto logits = randn<float>({rows, classes}, gen);
  auto targets = randint<std::int64_t>({rows}, 0, classes, gen);
  for (auto _ : state) {
    auto loss = cross_entropy(logits, targets);
    benchmark::DoNotOptimize(loss.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * classes * static_cast<std::int64_t>(sizeof(float)));
}

void BM_embedding_fwd_bwd(benchmark::State& state) {
  const std::int64_t vocab = state.range(0), d = state.range(1), n = state.range(2);
  Generator gen(5);
  auto weight = randn<float>({vocab, d}, gen).requires_grad_();
  auto ids = randint<std::int64_t>({8, n / 8}, 0, vocab, gen);
  auto g = randn<float>({8, n / 8, d}, gen);
  for (auto _ : state) {
    weight.zero_grad();
    auto out = embedding(weight, ids);
    out.backward(g);
    benchmark::DoNotOptimize(weight.grad().data());
  }
  // forward: read and write n rows; backward: read n rows of g, write the dense [V, D] gradient.
  state.SetBytesProcessed(state.iterations() * (3 * n + vocab) * d * static_cast<std::int64_t>(sizeof(float)));
}

void BM_embedding_fwd(benchmark::State& state) {
  const std::int64_t vocab = state.range(0), d = state.range(1), n = state.range(2);
  Generator gen(6);
  auto weight = randn<float>({vocab, d}, gen);
  auto ids = randint<std::int64_t>({8, n / 8}, 0, vocab, gen);
  for (auto _ : state) {
    auto out = embedding(weight, ids);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * n * d * static_cast<std::int64_t>(sizeof(float)));
}

}  // namespace

BENCHMARK(BM_layer_norm_fwd)->Args({4096, 1024})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_layer_norm_fwd_bwd)->Args({4096, 1024})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_rms_norm_fwd)->Args({4096, 1024})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_rms_norm_fwd_bwd)->Args({4096, 1024})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cross_entropy_fwd)->Args({2048, 8192})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cross_entropy_fwd_bwd)->Args({2048, 8192})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_embedding_fwd)->Args({32000, 512, 8 * 512})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_embedding_fwd_bwd)->Args({32000, 512, 8 * 512})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
