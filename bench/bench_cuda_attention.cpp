// CUDA attention benchmarks: B*T = 16k tokens, hidden 2048 (H = 2048 / D heads), head dims
// 64 and 128, T in {512, ..., 16384}, causal and every policy of bench_attention, forward
// and forward+backward, in two precisions: fp32 (float tensors through attention(), the
// portable flash kernel) and bf16 (bfloat16 device buffers through the launchers of
// backend/cuda/attention.hpp, the tensor-core kernels; fwdbwd/bf16_deterministic: the
// backward with its dq kernel instead of dq by atomics in the dk/dv kernel). Counters:
// useful TFLOP/s (allowed pairs only: 4*B*H*D*pairs forward, 2.5x that backward) and
// density. BM_cuda_attention_decode: one decoding step over a bf16 cache (GQA, head dim 128)
// with the split-key kernels and with the general ones, GB/s of K and V. Each iteration
// waits for the device. Without a CUDA device every benchmark is skipped with a message.
// bench/torch_cuda_attention.py runs PyTorch (SDPA, flex_attention) side by side.
// CONDENSE_BENCH_SMOKE=1 (bench/smoke.hpp): 128 tokens of hidden 256, T = 128, once each.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "condense/backend/cuda/attention.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/factories.hpp"
#include "condense/mask/materialize.hpp"
#include "condense/mask/policies.hpp"
#include "condense/ops/attention.hpp"
#include "smoke.hpp"

using namespace condense;

namespace {

using condense::bench::bench_size;

const std::int64_t kTokens = bench_size(16384, 128), kHidden = bench_size(2048, 256);

/// Device arrays some policies point into; kept alive for the benchmark's duration.
struct PolicyData {
  Tensor<bool> keep_host, keep;
};

template <class HostPolicy, class DevicePolicy>
void run_attention(benchmark::State& state, const HostPolicy& host_policy, const DevicePolicy& policy, std::int64_t tq,
                   std::int64_t tk, std::int64_t dim, bool backward) {
  if (!cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const std::int64_t batch = std::max<std::int64_t>(1, kTokens / tk), heads = kHidden / dim;
  Generator gen(1);
  auto q = randn<float>({batch, heads, tq, dim}, gen).to(Device::cuda());
  auto k = randn<float>({batch, heads, tk, dim}, gen).to(Device::cuda());
  auto v = randn<float>({batch, heads, tk, dim}, gen).to(Device::cuda());
  const auto grad = ones<float>({batch, heads, tq, dim}, Device::cuda());
  if (backward) {
    q.requires_grad_();
    k.requires_grad_();
    v.requires_grad_();
  }
  const double pairs = static_cast<double>(count_allowed(host_policy, 0, tq, tk));
  for (auto _ : state) {
    if (backward) {
      q.zero_grad();
      k.zero_grad();
      v.zero_grad();
      attention(q, k, v, policy).backward(grad);
    } else {
      NoGradGuard no_grad;
      benchmark::DoNotOptimize(attention(q, k, v, policy).data());
    }
    cuda::synchronize(0);
  }
  const double flops = 4.0 * batch * heads * dim * pairs * (backward ? 3.5 : 1.0);
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["density"] = pairs / static_cast<double>(tq * tk);
}

/// The tensor-core kernels on bfloat16 buffers, called through the launchers (no autograd).
template <class HostPolicy, class DevicePolicy>
void run_attention_bf16(benchmark::State& state, const HostPolicy& host_policy, const DevicePolicy& policy,
                        std::int64_t tq, std::int64_t tk, std::int64_t dim, bool backward, bool deterministic) {
  if (!cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const std::int64_t batch = std::max<std::int64_t>(1, kTokens / tk), heads = kHidden / dim;
  Generator gen(1);
  const auto input = [&](Shape shape) { return randn<float>(shape, gen).cast<bfloat16>().to(Device::cuda()); };
  const auto q = input({batch, heads, tq, dim}), k = input({batch, heads, tk, dim}), v = input({batch, heads, tk, dim});
  const auto dout = input({batch, heads, tq, dim});
  auto out = Tensor<bfloat16>::empty(q.shape(), Device::cuda()), dq = Tensor<bfloat16>::empty(q.shape(), Device::cuda());
  auto dk = Tensor<bfloat16>::empty(k.shape(), Device::cuda()), dv = Tensor<bfloat16>::empty(v.shape(), Device::cuda());
  auto lse = Tensor<float>::empty({batch, heads, tq}, Device::cuda());
  cuda::AttentionArgs a;
  a.dtype = DType::BFloat16;
  a.batch = batch;
  a.heads = a.kv_heads = heads;
  a.tq = tq;
  a.tk = tk;
  a.dim = dim;
  a.scale = 1.0 / std::sqrt(static_cast<double>(dim));
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.out = out.data();
  a.lse = lse.data();
  cuda::AttentionArgs b = a;
  b.dout = dout.data();
  b.dq = dq.data();
  b.dk = dk.data();
  b.dv = dv.data();
  b.deterministic = deterministic;
  const double pairs = static_cast<double>(count_allowed(host_policy, 0, tq, tk));
  for (auto _ : state) {
    cuda::attention_forward(a, policy, "bench attention bf16");
    if (backward) cuda::attention_backward(b, policy, "bench attention bf16 backward");
    cuda::synchronize(0);
  }
  const double flops = 4.0 * batch * heads * dim * pairs * (backward ? 3.5 : 1.0);
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["density"] = pairs / static_cast<double>(tq * tk);
}

/// One decoding step of a grouped-query model on bfloat16 caches: one query per sequence,
/// 8 sequences, 32 query heads over 8 kv heads of head dim 128, reading the first L rows of
/// [B, Hkv, 2L, D] caches in place (causal at position L - 1), through the launcher with the
/// split-key kernels or with the general ones (the baseline of the same process). Counter:
/// GB/s of K and V read.
void run_decode(benchmark::State& state, bool split_keys) {
  if (!cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const std::int64_t length = state.range(0), batch = 8, heads = 32, kv_heads = 8, dim = 128;
  Generator gen(1);
  const auto input = [&](Shape shape) { return randn<float>(shape, gen).cast<bfloat16>().to(Device::cuda()); };
  const auto q = input({batch, heads, 1, dim});
  const auto k = input({batch, kv_heads, 2 * length, dim}), v = input({batch, kv_heads, 2 * length, dim});
  auto out = Tensor<bfloat16>::empty(q.shape(), Device::cuda());
  auto lse = Tensor<float>::empty({batch, heads, 1}, Device::cuda());
  cuda::AttentionArgs a;
  a.dtype = DType::BFloat16;
  a.batch = batch;
  a.heads = heads;
  a.kv_heads = kv_heads;
  a.tq = 1;
  a.tk = length;
  a.dim = dim;
  a.scale = 1.0 / std::sqrt(static_cast<double>(dim));
  a.decode_kernels = split_keys;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.out = out.data();
  a.lse = lse.data();
  a.k_rows = a.v_rows = RowLayout::contiguous(kv_heads, 2 * length, dim);
  const mask::Causal policy(static_cast<int>(length - 1));
  for (auto _ : state) {
    cuda::attention_forward(a, policy, "bench attention decode");
    cuda::synchronize(0);
  }
  const double bytes = 2.0 * batch * kv_heads * length * dim * sizeof(bfloat16);
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

/// make(T, data) -> (host policy, device policy, Tq, Tk).
template <class Make>
void register_policy(const std::string& name, Make make) {
  // bf16_deterministic: the backward with its own dq kernel (seven products, no atomics).
  for (const std::string precision : {"fp32", "bf16", "bf16_deterministic"}) {
    const bool bf16 = precision != "fp32", deterministic = precision == "bf16_deterministic";
    for (bool backward : {false, true}) {
      if (deterministic && !backward) continue;
      for (std::int64_t dim : {64, 128}) {
        const std::string full = "BM_cuda_attention_" + std::string(backward ? "fwdbwd/" : "fwd/") + precision + "/" +
                                 name + "/d" + std::to_string(dim);
        auto* b = benchmark::RegisterBenchmark(full.c_str(), [make, backward, dim, bf16, deterministic](benchmark::State& state) {
          auto data = std::make_shared<PolicyData>();
          auto [host, device, tq, tk] = make(state.range(0), *data);
          if (bf16) {
            run_attention_bf16(state, host, device, tq, tk, dim, backward, deterministic);
          } else {
            run_attention(state, host, device, tq, tk, dim, backward);
          }
        });
        for (std::int64_t t = bench_size(512, 128); t <= bench_size(16384, 128); t *= 2) b->Arg(t);
        b->Unit(benchmark::kMillisecond)->UseRealTime()->Apply(condense::bench::once_in_smoke_mode);
      }
    }
  }
}

template <class P>
std::tuple<P, P, std::int64_t, std::int64_t> same(P p, std::int64_t t) { return {p, p, t, t}; }

}  // namespace

int main(int argc, char** argv) {
  register_policy("causal", [](std::int64_t t, PolicyData&) { return same(mask::Causal{}, t); });
  register_policy("none", [](std::int64_t t, PolicyData&) { return same(mask::None{}, t); });
  register_policy("sliding_window_256", [](std::int64_t t, PolicyData&) { return same(mask::SlidingWindow(256, 0), t); });
  register_policy("gist_prompt_75pct", [](std::int64_t t, PolicyData&) {
    const int g1 = static_cast<int>(t * 3 / 4);
    return same(mask::Gist(g1 - 8, g1), t);
  });
  register_policy("chunked_local_8", [](std::int64_t t, PolicyData&) {
    const int period = static_cast<int>(t / 8);
    return same(mask::ChunkedLocal(period - 8, 8, {.n_chunks = 8}), t);
  });
  // Pruned: each key kept with probability 0.2 (causal on top); the bitmap on the device.
  register_policy("pruned_keep_20pct", [](std::int64_t t, PolicyData& data) {
    Generator gen(7);
    std::vector<bool> keep(static_cast<std::size_t>(t));
    for (auto&& bit : keep) bit = gen.uniform01() < 0.2;
    data.keep_host = from_vector<bool>(keep, {1, t});
    data.keep = cuda::is_available() ? data.keep_host.to(Device::cuda()) : data.keep_host;
    return std::tuple{mask::Pruned(data.keep_host.data(), 1, static_cast<int>(t)),
                      mask::Pruned(data.keep.data(), 1, static_cast<int>(t)), t, t};
  });
  for (const bool split_keys : {true, false}) {
    const std::string name = std::string("BM_cuda_attention_decode/") + (split_keys ? "split_keys" : "general");
    auto* b = benchmark::RegisterBenchmark(name.c_str(), [split_keys](benchmark::State& state) { run_decode(state, split_keys); });
    for (std::int64_t length = bench_size(1024, 128); length <= bench_size(65536, 128); length *= 4) b->Arg(length);
    b->Unit(benchmark::kMicrosecond)->UseRealTime()->Apply(condense::bench::once_in_smoke_mode);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
