// Attention benchmarks (CPU, fp32): B=1, H=8, D=64, T in {512, 1024, 2048, 4096}, every mask
// policy, forward and forward+backward. Counters: useful GFLOP/s (allowed pairs only:
// 4*B*H*D*pairs forward, 2.5x that backward), density (allowed fraction of Tq*Tk), and the
// fraction of tiles skipped as Empty. bench/torch_attention.py runs PyTorch side by side.
// BM_attention_decode: one decode step against a KV cache's prefix, read in place or
// copied to contiguous memory first, with 32 query heads over the same 8 kv heads (in one
// pass per kv head, or one by one), and a chunk of 4 or 16 new queries per head (keys/s of
// the cache).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "condense/backend/cpu/parallel.hpp"
#include "condense/core/factories.hpp"
#include "condense/mask/materialize.hpp"
#include "condense/mask/policies.hpp"
#include "condense/ops/attention.hpp"

using namespace condense;

namespace {

constexpr std::int64_t kBatch = 1, kHeads = 8, kDim = 64;

/// Per-row data that some policies point into; kept alive for the benchmark's duration.
struct PolicyData {
  std::vector<bool> keep_storage;
  Tensor<bool> keep;
};

template <class Policy>
void run_attention(benchmark::State& state, const Policy& policy, std::int64_t tq, std::int64_t tk, bool backward) {
  Generator gen(1);
  auto q = randn<float>({kBatch, kHeads, tq, kDim}, gen);
  auto k = randn<float>({kBatch, kHeads, tk, kDim}, gen);
  auto v = randn<float>({kBatch, kHeads, tk, kDim}, gen);
  if (backward) {
    q.requires_grad_();
    k.requires_grad_();
    v.requires_grad_();
  }
  const double pairs = static_cast<double>(count_allowed(policy, 0, tq, tk));
  AttentionResult<float> last;
  for (auto _ : state) {
    if (backward) {
      q.zero_grad();
      k.zero_grad();
      v.zero_grad();
      last = attention_forward(q, k, v, policy);
      sum(last.out).backward();
    } else {
      NoGradGuard no_grad;
      last = attention_forward(q, k, v, policy);
    }
    benchmark::DoNotOptimize(last.out.data());
  }
  const double flops = 4.0 * kBatch * kHeads * kDim * pairs * (backward ? 3.5 : 1.0);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["density"] = pairs / static_cast<double>(tq * tk);
  const double tiles = static_cast<double>(last.tiles.empty + last.tiles.partial + last.tiles.full);
  state.counters["skipped"] = tiles > 0 ? static_cast<double>(last.tiles.empty) / tiles : 0.0;
}

/// Registers one policy (built per T) for every T, forward and forward+backward.
template <class Make>
void register_policy(const std::string& name, Make make, bool cross = false) {
  for (bool backward : {false, true}) {
    const std::string full = "BM_attention_" + std::string(backward ? "fwdbwd/" : "fwd/") + name;
    benchmark::RegisterBenchmark(full.c_str(), [make, backward, cross](benchmark::State& state) {
      const std::int64_t t = state.range(0);
      auto data = std::make_shared<PolicyData>();
      auto [policy, tq, tk] = make(t, *data);
      run_attention(state, policy, tq, tk, backward);
    })->Arg(512)->Arg(1024)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
}

template <class P>
std::tuple<P, std::int64_t, std::int64_t> self(P p, std::int64_t t) { return {p, t, t}; }

/// One decode step: a single query per head against the first L rows of a KV cache of
/// capacity 2L ([B, 8, 2L, D] buffers), as KVCache::keys() / values() hand them over, with
/// `query_heads` heads (8, or 32 grouped over the 8 kv heads). `copied`: the caller makes
/// the cache's prefix contiguous first, which is what the op did before it read strided
/// keys in place; the ratio of the two is what that saves. The grouped run against the
/// 8-head one at the same L is what the 24 extra query heads cost. With `queries` > 1, a
/// chunk of that many new queries (causal among themselves, after the L - queries cached
/// keys), as in chunked prefill or a speculative-decoding check; `transposed_keys` makes
/// such a chunk transpose the keys into tiles as longer forwards do (the baseline of the
/// in-place matrix-vector products). `group_query_heads` false runs the 32 heads one by one
/// (the baseline of the grouped pass, which reads each cached row once for its 4 heads).
void decode_step(benchmark::State& state, bool copied, std::int64_t query_heads, std::int64_t queries = 1,
                 bool transposed_keys = false, bool group_query_heads = true) {
  const std::int64_t length = state.range(0);
  Generator gen(2);
  const auto q = randn<float>({kBatch, query_heads, queries, kDim}, gen);
  const auto k_cache = randn<float>({kBatch, kHeads, 2 * length, kDim}, gen);
  const auto v_cache = randn<float>({kBatch, kHeads, 2 * length, kDim}, gen);
  AttentionOptions options;
  if (transposed_keys) options.in_place_keys_max_queries = 0;
  options.group_query_heads = group_query_heads;
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor<float> k = k_cache.narrow(2, 0, length), v = v_cache.narrow(2, 0, length);
    if (copied) {
      k = k.contiguous();
      v = v.contiguous();
    }
    const auto r = queries == 1 ? attention_forward(q, k, v, mask::None{}, options)
                                : attention_forward(q, k, v, mask::Causal(static_cast<int>(length - queries)), options);
    benchmark::DoNotOptimize(r.out.data());
  }
  state.counters["keys/s"] = benchmark::Counter(static_cast<double>(kBatch * kHeads * length),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  const char* threads = std::getenv("CONDENSE_THREADS");
  set_num_threads(threads ? std::atoi(threads) : 2);
  register_policy("causal", [](std::int64_t t, PolicyData&) { return self(mask::Causal{}, t); });
  register_policy("none", [](std::int64_t t, PolicyData&) { return self(mask::None{}, t); });
  register_policy("sliding_window_256", [](std::int64_t t, PolicyData&) { return self(mask::SlidingWindow(256, 0), t); });
  register_policy("key_padding_75pct", [](std::int64_t t, PolicyData&) {
    return self(mask::KeyPadding(static_cast<int>(t * 3 / 4)), t);
  });
  // A long prompt compressed into 8 gist tokens at 3/4 of the sequence.
  register_policy("gist_prompt_75pct", [](std::int64_t t, PolicyData&) {
    const int g1 = static_cast<int>(t * 3 / 4);
    return self(mask::Gist(g1 - 8, g1), t);
  });
  register_policy("gist_bidirectional", [](std::int64_t t, PolicyData&) {
    const int g1 = static_cast<int>(t * 3 / 4);
    return self(mask::GistBidirectional(g1 - 8, g1), t);
  });
  // 8 blocks of (chunk + 8 memory tokens).
  register_policy("chunked_local_8", [](std::int64_t t, PolicyData&) {
    const int period = static_cast<int>(t / 8);
    return self(mask::ChunkedLocal(period - 8, 8, {.n_chunks = 8}), t);
  });
  // Pruned: each key kept with probability 0.2 (causal on top).
  register_policy("pruned_keep_20pct", [](std::int64_t t, PolicyData& data) {
    Generator gen(7);
    std::vector<bool> keep(static_cast<std::size_t>(t));
    for (auto&& bit : keep) bit = gen.uniform01() < 0.2;
    data.keep = from_vector<bool>(keep, {1, t});
    return self(mask::Pruned(data.keep.data(), 1, static_cast<int>(t)), t);
  });
  // IC-Former style: T/8 digest queries over [T context ; T/8 digest slots].
  register_policy("digest_cross_n_T_over_8", [](std::int64_t t, PolicyData&) {
    const int n = static_cast<int>(t / 8);
    return std::tuple{mask::DigestCross(static_cast<int>(t), n), std::int64_t{n}, t + n};
  });
  for (bool copied : {false, true}) {
    benchmark::RegisterBenchmark(copied ? "BM_attention_decode/cache_prefix_copied" : "BM_attention_decode/cache_prefix_in_place",
                                 [copied](benchmark::State& state) { decode_step(state, copied, kHeads); })
        ->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond)->UseRealTime();
  }
  for (const std::int64_t queries : {4, 16}) {
    for (const bool transposed : {false, true}) {
      const std::string name =
          "BM_attention_decode/chunk_of_" + std::to_string(queries) + "_queries" + (transposed ? "_transposed_keys" : "");
      benchmark::RegisterBenchmark(
          name.c_str(),  // copied by the benchmark
          [queries, transposed](benchmark::State& state) { decode_step(state, false, kHeads, queries, transposed); })
          ->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond)->UseRealTime();
    }
  }
  for (const std::int64_t queries : {1, 4, 16}) {
    for (const bool grouped : {true, false}) {
      const std::string chunk = queries == 1 ? "" : "chunk_of_" + std::to_string(queries) + "_queries_";
      const std::string name =
          "BM_attention_decode/" + chunk + (grouped ? "grouped_32_over_8_heads" : "32_over_8_heads_one_by_one");
      benchmark::RegisterBenchmark(name.c_str(), [queries, grouped](benchmark::State& state) {
        decode_step(state, false, 4 * kHeads, queries, false, grouped);
      })->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond)->UseRealTime();
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
