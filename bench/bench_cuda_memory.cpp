// CUDA memory-bound op benchmarks on the activations of a GPT-2-small training step
// (B*T = 8192 tokens, 12 heads of 64, hidden 768, MLP 3072) in bfloat16, against a
// device-to-device cudaMemcpyAsync of the same bytes in the same process: the transposing
// copy [B, T, H, D] -> [B, H, T, D] behind contiguous() in attention, the bias added by
// broadcasting, the bias gradient (sum over B*T rows), a whole-tensor sum (a loss), a
// cumsum over the last dim, and rope on a [B, H, T, D] view. Each reports bytes/s counting
// the bytes read and written once; report: op bandwidth / memcpy bandwidth (1.0 = as fast
// as a plain copy). Without a CUDA device every benchmark is skipped. CONDENSE_BENCH_SMOKE=1
// (bench/smoke.hpp): 2 x 32 tokens, hidden 96 (3 heads of 32), MLP 384, once each.
#include <benchmark/benchmark.h>

#include <cuda_runtime.h>

#include <cstdint>

#include "condense/autograd/grad_mode.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/factories.hpp"
#include "condense/ops/elementwise.hpp"
#include "condense/ops/reduce.hpp"
#include "condense/ops/rope.hpp"
#include "condense/ops/scan.hpp"
#include "smoke.hpp"

using namespace condense;

namespace {

using condense::bench::bench_size;

const std::int64_t kBatch = bench_size(8, 2), kTokens = bench_size(1024, 32), kHeads = bench_size(12, 3),
                   kHeadDim = bench_size(64, 32), kHidden = bench_size(768, 96), kMlp = bench_size(3072, 384);

/// True (after skipping `state`) when there is no device to run on.
bool skip_without_device(benchmark::State& state) {
  if (cuda::is_available()) return false;
  state.SkipWithError("no CUDA device");
  return true;
}

/// A bfloat16 tensor of `shape` on the device.
Tensor<bfloat16> device_input(const Shape& shape, std::uint64_t seed = 1) {
  Generator gen(seed);
  return randn<bfloat16>(shape, gen).to(Device::cuda());
}

/// Runs `op` once per iteration with a device synchronisation, counting `bytes` per run.
template <class Op>
void run(benchmark::State& state, std::int64_t bytes, Op op) {
  NoGradGuard no_grad;
  op();  // warm the caching allocator
  cuda::synchronize(0);
  for (auto _ : state) {
    op();
    cuda::synchronize(0);
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}

/// The baseline: cudaMemcpyAsync between two device buffers of `elements` bfloat16 values.
void BM_memcpy(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const std::int64_t elements = state.range(0);
  const auto src = device_input({elements});
  const auto dst = empty<bfloat16>({elements}, Device::cuda());
  const auto bytes = static_cast<std::size_t>(elements) * sizeof(bfloat16);
  run(state, 2 * static_cast<std::int64_t>(bytes), [&] { cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice); });
}

void BM_transpose_copy(benchmark::State& state) {  // q [B, T, H, D] -> [B, H, T, D]
  if (skip_without_device(state)) return;
  const auto q = device_input({kBatch, kTokens, kHeads, kHeadDim});
  run(state, 2 * q.numel() * 2, [&] { benchmark::DoNotOptimize(q.transpose(1, 2).contiguous().data()); });
}

void BM_bias_add(benchmark::State& state) {  // [B*T, 3072] + [3072]
  if (skip_without_device(state)) return;
  const auto x = device_input({kBatch * kTokens, kMlp}), bias = device_input({kMlp}, 2);
  run(state, 2 * x.numel() * 2, [&] { benchmark::DoNotOptimize(add(x, bias).data()); });
}

void BM_bias_grad(benchmark::State& state) {  // [B, T, 3072] -> [3072]
  if (skip_without_device(state)) return;
  const auto g = device_input({kBatch, kTokens, kMlp});
  run(state, g.numel() * 2, [&] { benchmark::DoNotOptimize(sum_to(g, Shape{kMlp}).data()); });
}

void BM_whole_sum(benchmark::State& state) {  // [B*T, 768] -> []
  if (skip_without_device(state)) return;
  const auto x = device_input({kBatch * kTokens, kHidden});
  run(state, x.numel() * 2, [&] { benchmark::DoNotOptimize(sum(x).data()); });
}

void BM_cumsum_rows(benchmark::State& state) {  // [rows, n] along n
  if (skip_without_device(state)) return;
  const auto x = device_input({state.range(0), state.range(1)});
  run(state, 2 * x.numel() * 2, [&] { benchmark::DoNotOptimize(cumsum(x, 1).data()); });
}

void BM_rope(benchmark::State& state) {  // a [B, H, T, D] view of [B, T, H, D]
  if (skip_without_device(state)) return;
  const auto q = device_input({kBatch, kTokens, kHeads, kHeadDim});
  // Positions on the device give a table on the device (built once, outside the loop).
  const RopeTable<float> table = rope_table<float>(arange<std::int64_t>(kTokens).to(Device::cuda()), kHeadDim);
  run(state, 2 * q.numel() * 2, [&] { benchmark::DoNotOptimize(rope(q.transpose(1, 2), table).data()); });
}

/// The timing every benchmark here shares (one run in smoke mode).
void timed(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
  condense::bench::once_in_smoke_mode(b);
}

}  // namespace

BENCHMARK(BM_memcpy)->Arg(kBatch * kTokens * kMlp)->Apply(timed);
BENCHMARK(BM_transpose_copy)->Apply(timed);
BENCHMARK(BM_bias_add)->Apply(timed);
BENCHMARK(BM_bias_grad)->Apply(timed);
BENCHMARK(BM_whole_sum)->Apply(timed);
BENCHMARK(BM_cumsum_rows)->Args({1, bench_size(1 << 22, 1 << 12)})->Args({kBatch * kHeads, kTokens})->Apply(timed);
BENCHMARK(BM_rope)->Apply(timed);
BENCHMARK_MAIN();
