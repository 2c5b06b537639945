// KV cache: cached decoding (prefill + one token at a time, prefill + chunks) equals the
// full forward for the GPT-2 and LLaMA presets and for the EncoderDecoder decoder (whose
// cross K/V are computed once); clone, truncate, select_rows and the named-tensor round
// trip continue correctly; a cache holding only part of a prefix decodes with explicit
// positions; gradients flow through a cache built with grad on; amortised growth; errors.
#include <doctest/doctest.h>

#include <set>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/mask/policies.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/encoder_decoder.hpp"
#include "condense/nn/kv_cache.hpp"
#include "test_util.hpp"

namespace test_kv_cache {

using namespace condense;
using namespace condense::nn;
using condense::testing::max_abs_diff;

namespace {

constexpr double kTol = 1e-10;  // double precision

std::vector<DecoderLMOptions> presets() {
  auto gpt = DecoderLMOptions::gpt2_style(23, 16, 2, 4, 32);
  auto llama = DecoderLMOptions::llama_style(23, 16, 2, 4, 2, 32);
  return {gpt, llama};
}

/// Logits of ids[:, from : from + n] decoded with `cache` (which holds positions < from).
Tensor<double> step(const DecoderLM<double>& m, const Tensor<std::int64_t>& ids, KVCache<double>& cache, std::int64_t from,
                    std::int64_t n) {
  ForwardOptions<double> o;
  o.cache = &cache;
  return m.forward(ids.narrow(1, from, n), mask::Causal{}, o);
}

}  // namespace

TEST_CASE("cached decoding equals the full forward: one token at a time and in chunks") {
  Generator gen(1);
  NoGradGuard ng;
  for (const auto& opt : presets()) {
    DecoderLM<double> m(opt, gen);
    const auto ids = randint<std::int64_t>({2, 11}, 0, 23, gen);
    const auto full = m.forward(ids);
    KVCache<double> cache;
    auto got = step(m, ids, cache, 0, 4);
    CHECK(cache.num_layers() == 2);
    CHECK(cache.length() == 4);
    CHECK(max_abs_diff(got, full.narrow(1, 0, 4)) < kTol);
    for (std::int64_t t = 4; t < 11; ++t) {
      got = step(m, ids, cache, t, 1);
      CHECK(max_abs_diff(got, full.narrow(1, t, 1)) < kTol);
    }
    CHECK(cache.length() == 11);
    CHECK(cache.layer(1).keys().shape() == Shape{2, opt.n_kv_heads ? opt.n_kv_heads : opt.n_heads, 11, 4});
    KVCache<double> chunks;
    std::int64_t at = 0;
    for (std::int64_t n : {3, 2, 4, 2}) {
      CHECK(max_abs_diff(step(m, ids, chunks, at, n), full.narrow(1, at, n)) < kTol);
      at += n;
    }
  }
}

TEST_CASE("clone, truncate, select_rows and named tensors continue correctly") {
  Generator gen(2);
  NoGradGuard ng;
  for (const auto& opt : presets()) {
    DecoderLM<double> m(opt, gen);
    const auto a = randint<std::int64_t>({2, 9}, 0, 23, gen);
    auto b = a.clone();  // same prefix of 5, different tail
    for (std::int64_t t = 5; t < 9; ++t) b.data()[t] = (b.data()[t] + 7) % 23, b.data()[9 + t] = (b.data()[9 + t] + 3) % 23;
    const auto fa = m.forward(a), fb = m.forward(b);
    KVCache<double> cache;
    step(m, a, cache, 0, 5);
    KVCache<double> copy = cache.clone();
    CHECK(max_abs_diff(step(m, a, cache, 5, 4), fa.narrow(1, 5, 4)) < kTol);
    CHECK(max_abs_diff(step(m, b, copy, 5, 4), fb.narrow(1, 5, 4)) < kTol);  // the clone is independent
    // Truncate back to the shared prefix and continue with the other tail, one at a time.
    cache.truncate(5);
    CHECK(cache.length() == 5);
    for (std::int64_t t = 5; t < 9; ++t) CHECK(max_abs_diff(step(m, b, cache, t, 1), fb.narrow(1, t, 1)) < kTol);
    // One row of the batch on its own.
    cache.truncate(6);
    KVCache<double> row = cache.select_rows({1});
    CHECK(row.batch_size() == 1);
    const auto b1 = b.narrow(0, 1, 1);
    CHECK(max_abs_diff(step(m, b1, row, 6, 3), fb.narrow(0, 1, 1).narrow(1, 6, 3)) < kTol);
    // Named tensors round trip.
    const auto named = cache.named_tensors();
    REQUIRE(named.size() == 4);
    CHECK(named[0].first == "layers.0.k");
    CHECK(named[1].first == "layers.0.v");
    CHECK(named[3].first == "layers.1.v");
    CHECK(named[0].second.shape() == Shape{2, m.layers[0]->attn.options().n_kv_heads, 6, 4});
    CHECK(named[0].second.is_contiguous());
    KVCache<double> loaded = KVCache<double>::from_named_tensors({named[3], named[0], named[2], named[1]});
    CHECK(loaded.length() == 6);
    CHECK(max_abs_diff(step(m, b, loaded, 6, 3), fb.narrow(1, 6, 3)) < kTol);
  }
}

TEST_CASE("a cache holding part of a prefix decodes with explicit positions") {
  Generator gen(3);
  NoGradGuard ng;
  for (const auto& opt : presets()) {
    DecoderLM<double> m(opt, gen);
    const auto ids = randint<std::int64_t>({1, 7}, 0, 23, gen);
    // Reference: the full sequence, where only the last query skips keys 0 and 1.
    std::vector<bool> dense(49, false);
    for (int q = 0; q < 7; ++q)
      for (int k = 0; k <= q; ++k) dense[static_cast<std::size_t>(q * 7 + k)] = q < 6 || k >= 2;
    const auto bits = from_vector<bool>(dense, {1, 7, 7});
    const auto ref = m.forward(ids, mask::Dense(bits.data(), 1, 7, 7)).narrow(1, 6, 1);
    // Cache positions 0..5, keep only keys 2..5 (they keep their positions), decode token 6.
    KVCache<double> cache;
    step(m, ids, cache, 0, 6);
    auto named = cache.named_tensors();
    for (auto& [n, t] : named) t = t.narrow(2, 2, 4);
    KVCache<double> part = KVCache<double>::from_named_tensors(named);
    CHECK(part.length() == 4);
    ForwardOptions<double> o;
    o.cache = &part;
    o.positions = from_vector<std::int64_t>({6}, {1});
    CHECK(max_abs_diff(m.forward(ids.narrow(1, 6, 1), mask::Causal{}, o), ref) < kTol);
  }
}

TEST_CASE("EncoderDecoder: cached decoding equals the full decode; cross K/V cached once") {
  Generator gen(4);
  NoGradGuard ng;
  auto opt = EncoderDecoderOptions::t5_style(19, 16, 2, 4, 32);
  opt.n_kv_heads = 2;
  EncoderDecoder<double> m(opt, gen);
  const auto src = randint<std::int64_t>({2, 6}, 0, 19, gen);
  const auto tgt = randint<std::int64_t>({2, 7}, 0, 19, gen);
  const std::vector<std::int32_t> len = {6, 4};
  const mask::KeyPadding pad(len.data(), 2);
  const auto states = m.encode(src, pad);
  const auto full = m.decode(tgt, states, pad);
  KVCache<double> cache;
  ForwardOptions<double> o;
  o.cache = &cache;
  CHECK(max_abs_diff(m.decode(tgt.narrow(1, 0, 3), states, pad, o), full.narrow(1, 0, 3)) < kTol);
  CHECK(cache.has_cross());
  CHECK(cache.layer(0).cross_keys().shape() == Shape{2, 2, 6, 4});
  for (std::int64_t t = 3; t < 7; ++t)  // states no longer needed: the cache holds the cross K/V
    CHECK(max_abs_diff(m.decode(tgt.narrow(1, t, 1), Tensor<double>(), pad, o), full.narrow(1, t, 1)) < kTol);
  const auto named = cache.named_tensors();
  CHECK(named.size() == 8);
  CHECK(named[2].first == "layers.0.cross_k");
  KVCache<double> loaded = KVCache<double>::from_named_tensors(named);
  CHECK(loaded.has_cross());
  loaded.truncate(5);
  o.cache = &loaded;
  CHECK(max_abs_diff(m.decode(tgt.narrow(1, 5, 2), Tensor<double>(), pad, o), full.narrow(1, 5, 2)) < kTol);
}

TEST_CASE("gradients flow through a cache built with grad on") {
  Generator gen(5);
  DecoderLM<double> m(DecoderLMOptions::llama_style(13, 8, 2, 2, 1, 16), gen);
  const auto ids = randint<std::int64_t>({1, 6}, 0, 13, gen);
  const auto w = randn<double>({1, 1, 13}, gen);
  sum(m.forward(ids).narrow(1, 5, 1) * w).backward();
  std::vector<Tensor<double>> expect;
  for (const auto& p : m.parameters()) expect.push_back(p.grad());
  m.zero_grad();
  KVCache<double> cache;
  step(m, ids, cache, 0, 5);
  CHECK(cache.layer(0).has_graph());
  sum(step(m, ids, cache, 5, 1) * w).backward();
  const auto params = m.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    REQUIRE(params[i].grad().defined());
    CHECK(max_abs_diff(params[i].grad(), expect[i]) < 1e-12);
  }
}

TEST_CASE("LayerKV: amortised growth, reserve, errors") {
  Generator gen(6);
  LayerKV<double> kv;
  std::set<std::int64_t> capacities;
  for (int i = 0; i < 100; ++i) {
    const auto k = randn<double>({2, 1, 1, 3}, gen);
    const auto [keys, values] = kv.append(k, k * 2.0);
    capacities.insert(kv.capacity());
    CHECK(keys.size(2) == i + 1);
    CHECK(max_abs_diff(keys.narrow(2, i, 1), k) == 0.0);
  }
  CHECK(capacities.size() <= 8);  // doubling: few reallocations
  CHECK(max_abs_diff(kv.values(), kv.keys() * 2.0) == 0.0);
  LayerKV<double> r;
  r.reserve(50);
  r.append(zeros<double>({1, 2, 10, 4}), zeros<double>({1, 2, 10, 4}));
  const double* before = r.keys().data();
  for (int i = 0; i < 40; ++i) r.append(ones<double>({1, 2, 1, 4}), ones<double>({1, 2, 1, 4}));
  CHECK(r.keys().data() == before);  // no reallocation within the reserve
  CHECK(r.capacity() == 50);
  CHECK(sum(r.keys()).item() == 40 * 8);
  CHECK_THROWS_WITH_AS(r.append(zeros<double>({1, 3, 1, 4}), zeros<double>({1, 3, 1, 4})),
                       "[KVCache] appending keys (1x3x1x4) to a cache of [B, Hkv, L, Dh] = [1, 2, 50, 4]", Error);
  CHECK_THROWS_WITH_AS(r.append(zeros<double>({1, 2, 1, 4}), zeros<double>({1, 2, 2, 4})),
                       "[KVCache] keys and values must both be [B, Hkv, T, Dh], got (1x2x1x4) and (1x2x2x4)", Error);
  CHECK_THROWS_WITH_AS(r.truncate(51), "[KVCache] cannot truncate a cache of length 50 to 51", Error);
  KVCache<double> c(2);
  CHECK_THROWS_WITH_AS(c.layer(2), "[KVCache] layer 2 out of range for a cache of 2 layers", Error);
  const auto t = zeros<double>({1, 1, 2, 2});
  CHECK_THROWS_WITH_AS(KVCache<double>::from_named_tensors({{"layers.0.q", t}}),
                       "[KVCache] unexpected tensor name 'layers.0.q' (expected layers.<i>.k, .v, .cross_k or .cross_v)",
                       Error);
  CHECK_THROWS_WITH_AS(KVCache<double>::from_named_tensors({{"layers.0.k", t}}),
                       "[KVCache] layers.0.k and layers.0.v must come together", Error);
  CHECK_THROWS_WITH_AS(KVCache<double>::from_named_tensors({{"layers.1.k", t}, {"layers.1.v", t}}),
                       "[KVCache] layers must be numbered 0..1 without gaps, got 1 layers", Error);
  CHECK_THROWS_WITH_AS(
      KVCache<double>::from_named_tensors({{"layers.0.k", t}, {"layers.0.v", t}, {"layers.1.k", zeros<double>({1, 1, 3, 2})},
                                           {"layers.1.v", zeros<double>({1, 1, 3, 2})}}),
      "[KVCache] layers.1.k (1x1x3x2) disagrees with layers.0.k (1x1x2x2) in batch size or length", Error);
  CHECK_THROWS_WITH_AS(c.select_rows({0}), "[KVCache] row 0 out of range for batch 0", Error);
}

}  // namespace test_kv_cache
