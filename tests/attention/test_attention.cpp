// Fused CPU attention against the oracle (matmul + masked_fill + softmax + matmul) for
// every mask policy: forward, the gradients of q, k, v and the additive bias, GQA, Tq != Tk,
// lengths that are not multiples of the tile size, softmax scales of either sign; identical
// results with tile skipping on and off; strided q, k, v read in place; gradcheck; fully
// masked rows; errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "condense/backend/cpu/parallel.hpp"
#include "condense/core/factories.hpp"
#include "condense/mask/policies.hpp"
#include "condense/ops/attention.hpp"
#include "test_util.hpp"

namespace test_attention {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::max_abs_diff;

namespace {

struct Case {
  std::int64_t batch, heads, kv_heads, tq, tk, dim;
};

/// Fused vs reference: output and all input gradients agree to `tol` (float).
template <class Policy>
void check_against_reference(const std::string& name, const Policy& policy, const Case& c, bool with_bias,
                             AttentionOptions options, std::uint64_t seed, double tol = 1e-5) {
  CAPTURE(name);
  CAPTURE(options.tile_q);
  CAPTURE(options.tile_k);
  CAPTURE(with_bias);
  Generator gen(seed);
  auto q = randn<float>({c.batch, c.heads, c.tq, c.dim}, gen);
  auto k = randn<float>({c.batch, c.kv_heads, c.tk, c.dim}, gen);
  auto v = randn<float>({c.batch, c.kv_heads, c.tk, c.dim}, gen);
  auto bias = with_bias ? randn<float>({c.batch, seed % 2 ? 1 : c.heads, c.tq, c.tk}, gen, 0.0, 0.5) : Tensor<float>();
  auto dout = randn<float>({c.batch, c.heads, c.tq, c.dim}, gen);

  auto run = [&](bool fused) {
    auto qq = q.detach().clone().requires_grad_();
    auto kk = k.detach().clone().requires_grad_();
    auto vv = v.detach().clone().requires_grad_();
    Tensor<float> bb;
    if (with_bias) bb = bias.detach().clone().requires_grad_();
    auto out = fused ? attention(qq, kk, vv, policy, options, bb) : attention_reference(qq, kk, vv, policy, options, bb);
    out.backward(dout);
    std::vector<Tensor<float>> r{out.detach(), qq.grad(), kk.grad(), vv.grad()};
    if (with_bias) r.push_back(bb.grad());
    return r;
  };
  const auto fused = run(true);
  const auto reference = run(false);
  const char* names[] = {"out", "dq", "dk", "dv", "dbias"};
  for (std::size_t i = 0; i < fused.size(); ++i) {
    CAPTURE(names[i]);
    REQUIRE(fused[i].defined());
    REQUIRE(reference[i].defined());
    CHECK(max_abs_diff(fused[i], reference[i]) <= tol);
  }
}

template <class Policy>
void check_all_tilings(const std::string& name, const Policy& policy, const Case& c, std::uint64_t seed) {
  int index = 0;
  for (auto [tq, tk] : {std::pair{16, 16}, std::pair{8, 32}, std::pair{64, 64}, std::pair{5, 7}}) {
    AttentionOptions o;
    o.tile_q = tq;
    o.tile_k = tk;
    const bool with_bias = index++ % 2 == 1;  // half the tilings with a bias, half without
    check_against_reference(name, policy, c, with_bias, o, seed + static_cast<std::uint64_t>(tq));
  }
}

/// Tile skipping on and off give bit-identical outputs.
template <class Policy>
void check_skip_identical(const std::string& name, const Policy& policy, const Case& c) {
  CAPTURE(name);
  Generator gen(99);
  auto q = randn<float>({c.batch, c.heads, c.tq, c.dim}, gen);
  auto k = randn<float>({c.batch, c.kv_heads, c.tk, c.dim}, gen);
  auto v = randn<float>({c.batch, c.kv_heads, c.tk, c.dim}, gen);
  AttentionOptions on, off;
  on.tile_q = off.tile_q = 8;
  on.tile_k = off.tile_k = 8;
  off.skip_tiles = false;
  const auto a = attention_forward(q, k, v, policy, on);
  const auto b = attention_forward(q, k, v, policy, off);
  CHECK(a.out.to_vector() == b.out.to_vector());
  CHECK(b.tiles.empty == 0);
  CHECK(b.tiles.full == 0);
}

}  // namespace

TEST_CASE("attention: fused forward and gradients match the reference for every policy") {
  const Case self{2, 4, 2, 37, 37, 16};
  std::vector<std::int32_t> lengths{30, 11};
  std::vector<std::int32_t> spans{5, 9, 0, 0};  // row 1: no gist span (acts causal)
  std::vector<bool> keep_values(2 * 37);
  Generator gen(5);
  for (std::size_t i = 0; i < keep_values.size(); ++i) keep_values[i] = gen.uniform01() < 0.4;
  const auto keep = from_vector<bool>(keep_values, {2, 37});

  check_all_tilings("None", mask::None{}, self, 1);
  check_all_tilings("Causal", mask::Causal{}, self, 2);
  check_all_tilings("SlidingWindow", mask::SlidingWindow(6, 2), self, 3);
  check_all_tilings("KeyPadding", mask::KeyPadding(lengths.data(), 2), self, 4);
  check_all_tilings("Gist", mask::Gist(spans.data(), 2), self, 5);
  check_all_tilings("GistBidirectional", mask::GistBidirectional(spans.data(), 2), self, 6);
  check_all_tilings("GistNegativeControl", mask::GistNegativeControl(spans.data(), 2), self, 7);
  check_all_tilings("ChunkedLocal", mask::ChunkedLocal(6, 2, {.n_chunks = 3, .memory_sees_earlier_memory = true}), self, 8);
  check_all_tilings("Pruned", mask::Pruned(keep.data(), 2, 37), self, 9);
  check_all_tilings("Intersect", mask::Intersect(mask::Causal{}, mask::SlidingWindow(10, 0)), self, 10);
  check_all_tilings("Union", mask::Union(mask::SlidingWindow(3, 3), mask::KeyPadding(4)), self, 11);
}

TEST_CASE("attention: cross-attention policies with Tq != Tk") {
  check_all_tilings("GistCross", mask::GistCross(7, 12), Case{2, 2, 1, 19, 41, 8}, 21);
  check_all_tilings("DigestCross", mask::DigestCross(40, 9), Case{1, 4, 4, 9, 49, 16}, 22);
  check_all_tilings("DigestCross chunked", mask::DigestCross::chunked(40, 9, 3), Case{1, 4, 2, 9, 49, 16}, 23);
  // decoding after a cache: 5 new queries at positions 30..34 over 35 keys
  check_all_tilings("Causal with offset", mask::Causal{30}, Case{1, 4, 1, 5, 35, 32}, 24);
  check_all_tilings("Gist with offset", mask::Gist(3, 6, 20), Case{1, 2, 2, 7, 27, 8}, 25);
  // one decode step (a single query: scores as matrix-vector products over the keys, which
  // are not transposed): every key, a causal row, a gist row with a bias, pruned keys
  check_all_tilings("None, one query", mask::None{}, Case{2, 4, 2, 1, 70, 16}, 26);
  check_all_tilings("Causal, one query", mask::Causal{40}, Case{1, 4, 1, 1, 70, 13}, 27);
  check_all_tilings("Gist with offset, one query", mask::Gist(3, 6, 30), Case{1, 2, 2, 1, 31, 8}, 28);
  std::vector<bool> keep_values(70);
  for (std::size_t i = 0; i < keep_values.size(); ++i) keep_values[i] = i % 4 != 2;
  const auto keep = from_vector<bool>(keep_values, {1, 70});
  check_all_tilings("Pruned, one query", mask::Pruned(keep.data(), 1, 70), Case{1, 2, 1, 1, 70, 16}, 29);
}

TEST_CASE("attention: head dims and key counts off the 16- and 8-column blocks of the tile products") {
  // Head dims 13 (a masked 5-column tail), 24 (16 + 8) and 40 (2 x 16 + 8) as the columns of
  // O += P V and dQ, dK, dV; 70 keys make the last tile of 64 six columns wide in S and dP.
  std::vector<bool> keep_values(70);
  for (std::size_t i = 0; i < keep_values.size(); ++i) keep_values[i] = i % 3 != 1;
  const auto keep = from_vector<bool>(keep_values, {1, 70});
  for (const std::int64_t dim : {13, 24, 40}) {
    CAPTURE(dim);
    check_all_tilings("Causal", mask::Causal{}, Case{1, 2, 1, 70, 70, dim}, 31);
    check_all_tilings("Pruned", mask::Pruned(keep.data(), 1, 70), Case{1, 2, 2, 70, 70, dim}, 32);
  }
}

TEST_CASE("attention: softmax scales other than 1 / sqrt(D), negative ones included") {
  // Without a bias a positive scale multiplies inside the exponential (the row maxima taken
  // over unscaled scores); a bias or a scale that is not positive scales the scores first.
  const Case c{1, 2, 1, 37, 37, 16};
  for (const double scale : {0.7, -0.4}) {
    CAPTURE(scale);
    AttentionOptions o;
    o.scale = scale;
    o.tile_q = o.tile_k = 16;
    for (const bool with_bias : {false, true}) {
      check_against_reference("Causal", mask::Causal{}, c, with_bias, o, 41);
      check_against_reference("Gist", mask::Gist(5, 9), c, with_bias, o, 42);
    }
  }
}

TEST_CASE("attention: tile skipping does not change the result") {
  const Case c{1, 2, 1, 45, 45, 16};
  check_skip_identical("Causal", mask::Causal{}, c);
  check_skip_identical("SlidingWindow", mask::SlidingWindow(9, 0), c);
  check_skip_identical("Gist", mask::Gist(10, 14), c);
  check_skip_identical("ChunkedLocal", mask::ChunkedLocal(8, 3), c);
  check_skip_identical("GistBidirectional", mask::GistBidirectional(10, 14), c);
  check_skip_identical("DigestCross", mask::DigestCross::chunked(36, 9, 3), Case{1, 2, 1, 9, 45, 16});
  // and skipping really happens where the policy allows it
  Generator gen(1);
  auto q = randn<float>({1, 1, 64, 8}, gen);
  const auto r = attention_forward(q, q, q, mask::Causal{}, AttentionOptions{.tile_q = 16, .tile_k = 16});
  CHECK(r.tiles.empty == 6);
  CHECK(r.tiles.partial == 4);
  CHECK(r.tiles.full == 6);
}

TEST_CASE("attention: pruned keys are gathered, so dropped keys cost nothing") {
  // Keep every 4th key: the gathered path sees 16 of 64 keys, i.e. one 16-key tile per query tile.
  std::vector<bool> keep_values(64);
  for (std::size_t i = 0; i < keep_values.size(); i += 4) keep_values[i] = true;
  const auto keep = from_vector<bool>(keep_values, {1, 64});
  const mask::Pruned pruned(keep.data(), 1, 64);
  Generator gen(4);
  auto q = randn<float>({1, 2, 64, 8}, gen);
  auto k = randn<float>({1, 2, 64, 8}, gen);
  auto v = randn<float>({1, 2, 64, 8}, gen);
  const AttentionOptions o{.tile_q = 16, .tile_k = 16};
  const auto r = attention_forward(q, k, v, pruned, o);
  CHECK(r.tiles.empty + r.tiles.partial + r.tiles.full == 2 * 4);  // 2 heads x 4 query tiles x 1 key tile
  CHECK(max_abs_diff(r.out, attention_reference(q, k, v, pruned, o)) <= 1e-5);
}

namespace {

/// attention on the strided views q, k, v against the same call on contiguous copies:
/// the same output, log-sum-exp and gradients, bit for bit (the kernels read the same
/// rows in the same order), and the output laid out in q's stride order.
template <class Policy>
void check_strided_in_place(const std::string& name, const Policy& policy, const Tensor<float>& q,
                            const Tensor<float>& k, const Tensor<float>& v, const Tensor<float>& bias,
                            bool out_token_major) {
  CAPTURE(name);
  const AttentionOptions o{.tile_q = 8, .tile_k = 8};
  Generator gen(31);
  const auto dout = randn<float>(q.shape(), gen);
  auto run = [&](bool contiguous) {
    auto qq = (contiguous ? q.contiguous() : q).detach().requires_grad_();
    auto kk = (contiguous ? k.contiguous() : k).detach().requires_grad_();
    auto vv = (contiguous ? v.contiguous() : v).detach().requires_grad_();
    Tensor<float> bb;
    if (bias.defined()) bb = bias.detach().clone().requires_grad_();
    const auto r = attention_forward(qq, kk, vv, policy, o, bb);
    if (!contiguous) CHECK(r.out.transpose(1, 2).is_contiguous() == out_token_major);
    r.out.backward(dout);
    std::vector<Tensor<float>> results{r.out.detach(), r.lse, qq.grad(), kk.grad(), vv.grad()};
    if (bias.defined()) results.push_back(bb.grad());
    return results;
  };
  const auto strided = run(false);
  const auto contiguous = run(true);
  const char* names[] = {"out", "lse", "dq", "dk", "dv", "dbias"};
  for (std::size_t i = 0; i < strided.size(); ++i) {
    CAPTURE(names[i]);
    CHECK(strided[i].to_vector() == contiguous[i].to_vector());
  }
}

}  // namespace

TEST_CASE("attention: strided q, k and v (heads split off a projection, a cache's prefix) are read in place") {
  Generator gen(12);
  constexpr std::int64_t B = 2, H = 4, Hkv = 2, T = 19, D = 16, capacity = 32;
  // Heads split off [B, T, H * D] projections: [B, T, H, D] in memory.
  const auto q = randn<float>({B, T, H, D}, gen).transpose(1, 2);
  const auto k = randn<float>({B, T, Hkv, D}, gen).transpose(1, 2);
  const auto v = randn<float>({B, T, Hkv, D}, gen).transpose(1, 2);
  REQUIRE(!q.is_contiguous());
  check_strided_in_place("causal, token-major", mask::Causal{}, q, k, v, Tensor<float>(), true);
  const auto bias = randn<float>({B, 1, T, T}, gen, 0.0, 0.5);
  check_strided_in_place("gist with a bias, token-major", mask::Gist(5, 8), q, k, v, bias, true);
  // Pruned keys take the gathered path, which copies the kept rows out of the strided k, v.
  std::vector<bool> keep_values(static_cast<std::size_t>(B * T));
  for (std::size_t i = 0; i < keep_values.size(); ++i) keep_values[i] = i % 3 != 1;
  const auto keep = from_vector<bool>(keep_values, {B, T});
  check_strided_in_place("pruned, token-major", mask::Pruned(keep.data(), B, T), q, k, v, Tensor<float>(), true);
  // The first T rows of a longer [B, Hkv, capacity, D] cache, queries contiguous.
  const auto k_cache = randn<float>({B, Hkv, capacity, D}, gen).narrow(2, 0, T);
  const auto v_cache = randn<float>({B, Hkv, capacity, D}, gen).narrow(2, 0, T);
  check_strided_in_place("cache prefix", mask::Causal{}, q.contiguous(), k_cache, v_cache, Tensor<float>(), false);
  // A head dim that is not contiguous is copied first; the result is the same.
  const auto q_columns = randn<float>({B, H, D, T}, gen).transpose(2, 3);
  check_strided_in_place("head dim strided", mask::Causal{}, q_columns, k, v, Tensor<float>(), false);
}

TEST_CASE("attention: a decode step with grouped heads takes every head of a kv head in one pass, for any thread count") {
  // With at least as many (batch, kv head) pairs as threads, one query per head is run for
  // the whole group at once (each key and value row read once); with fewer, per head. Both
  // against the reference, one pass bit for bit on strided views, and the same tile counts.
  const int saved = get_num_threads();
  std::vector<bool> keep_values(2 * 70);
  for (std::size_t i = 0; i < keep_values.size(); ++i) keep_values[i] = i % 5 != 3 && i != 75;
  const auto keep = from_vector<bool>(keep_values, {2, 70});
  std::vector<std::int32_t> lengths{70, 0};  // the second row has no key: zeros, lse -inf
  for (const int threads : {1, 64}) {
    CAPTURE(threads);
    set_num_threads(threads);
    check_all_tilings("Causal, grouped heads, one query", mask::Causal{69}, Case{2, 6, 2, 1, 70, 16}, 41);
    check_all_tilings("SlidingWindow, grouped heads, one query", mask::SlidingWindow(20, 0, 50), Case{2, 4, 1, 1, 70, 13},
                      42);
    check_all_tilings("Pruned, grouped heads, one query", mask::Pruned(keep.data(), 2, 70), Case{2, 4, 2, 1, 70, 8}, 43);
    check_all_tilings("KeyPadding, grouped heads, one query", mask::KeyPadding(lengths.data(), 2), Case{2, 4, 2, 1, 70, 8},
                      44);
  }
  Generator gen(45);
  constexpr std::int64_t B = 2, H = 8, Hkv = 2, D = 16, L = 50, capacity = 64;
  const auto q = randn<float>({B, 1, H, D}, gen).transpose(1, 2);  // one token's heads
  const auto k = randn<float>({B, Hkv, capacity, D}, gen).narrow(2, 0, L);
  const auto v = randn<float>({B, Hkv, capacity, D}, gen).narrow(2, 0, L);
  const auto bias = randn<float>({B, H, 1, L}, gen, 0.0, 0.5);
  set_num_threads(1);
  check_strided_in_place("grouped heads, a cache prefix, per-head bias", mask::Causal{L - 1}, q, k, v, bias, true);
  AttentionOptions options;
  options.tile_k = 16;
  const auto grouped = attention_forward(q, k, v, mask::SlidingWindow(10, 0, L - 1), options);
  set_num_threads(64);
  const auto per_head = attention_forward(q, k, v, mask::SlidingWindow(10, 0, L - 1), options);
  set_num_threads(saved);
  CHECK(max_abs_diff(grouped.out, per_head.out) <= 1e-6);
  CHECK(max_abs_diff(grouped.lse, per_head.lse) <= 1e-6);
  CHECK(grouped.tiles.empty == per_head.tiles.empty);
  CHECK(grouped.tiles.partial == per_head.tiles.partial);
  CHECK(grouped.tiles.full == per_head.tiles.full);
  CHECK(grouped.tiles.empty == B * H * 2);  // keys 0..31 lie before the window (keys 39..49)
}

TEST_CASE("attention: a short chunk of queries after a cache reads the keys in place, as the transposed tiles would") {
  // Up to in_place_keys_max_queries queries per head take matrix-vector products over the
  // keys as they lie; 0 makes every forward transpose them. With grouped heads and at least
  // as many (batch, kv head) pairs as threads, the queries of every head of a kv head run in
  // one pass (1 thread), else per head (64). Against the reference (every tiling, with and
  // without a bias, shared by the heads or per head), and against each other on a cache's
  // prefix with queries split off a projection.
  const int saved = get_num_threads();
  std::vector<bool> keep_values(2 * 60);
  for (std::size_t i = 0; i < keep_values.size(); ++i) keep_values[i] = i % 4 != 1;
  const auto keep = from_vector<bool>(keep_values, {2, 60});
  for (const int threads : {1, 64}) {
    CAPTURE(threads);
    set_num_threads(threads);
    for (const std::int64_t tq : {2, 5, 16, 17}) {
      CAPTURE(tq);
      check_all_tilings("Causal, a chunk after a cache", mask::Causal(static_cast<int>(60 - tq)),
                        Case{2, 4, 2, tq, 60, 12}, 51);
      check_all_tilings("Gist, a chunk", mask::QueryOffset(mask::Gist(10, 20), static_cast<int>(60 - tq)),
                        Case{1, 3, 1, tq, 60, 8}, 52);
      check_all_tilings("Pruned, a chunk", mask::Pruned(keep.data(), 2, 60), Case{2, 2, 2, tq, 60, 8}, 53);
    }
  }
  Generator gen(54);
  constexpr std::int64_t B = 2, H = 6, Hkv = 2, Tq = 6, D = 16, L = 70, capacity = 96;
  const auto q = randn<float>({B, Tq, H, D}, gen).transpose(1, 2);  // heads split off a projection
  const auto k = randn<float>({B, Hkv, capacity, D}, gen).narrow(2, 0, L);
  const auto v = randn<float>({B, Hkv, capacity, D}, gen).narrow(2, 0, L);
  const auto bias = randn<float>({B, H, Tq, L}, gen, 0.0, 0.5);
  set_num_threads(1);
  check_strided_in_place("a chunk after a cache prefix, per-head bias", mask::Causal{L - Tq}, q, k, v, bias, true);
  AttentionOptions in_place, transposed;
  in_place.tile_k = transposed.tile_k = 16;
  transposed.in_place_keys_max_queries = 0;
  const auto a = attention_forward(q, k, v, mask::SlidingWindow(30, 0, L - Tq), in_place, bias);
  const auto b = attention_forward(q, k, v, mask::SlidingWindow(30, 0, L - Tq), transposed, bias);
  set_num_threads(64);
  const auto per_head = attention_forward(q, k, v, mask::SlidingWindow(30, 0, L - Tq), in_place, bias);
  set_num_threads(saved);
  for (const auto* other : {&b, &per_head}) {
    CHECK(max_abs_diff(a.out, other->out) <= 1e-5);
    CHECK(max_abs_diff(a.lse, other->lse) <= 1e-5);
    CHECK(a.tiles.empty == other->tiles.empty);
    CHECK(a.tiles.partial == other->tiles.partial);
    CHECK(a.tiles.full == other->tiles.full);
  }
  CHECK(a.tiles.empty == B * H * 2);  // keys 0..31 lie before every query's window (keys 34..69)
}

TEST_CASE("attention: gradcheck in double for q, k, v and bias") {
  Generator gen(7);
  auto q = randn<double>({1, 2, 6, 4}, gen);
  auto k = randn<double>({1, 1, 6, 4}, gen);
  auto v = randn<double>({1, 1, 6, 4}, gen);
  auto bias = randn<double>({1, 2, 6, 6}, gen, 0.0, 0.3);
  const AttentionOptions o{.tile_q = 4, .tile_k = 4};
  CHECK_GRADCHECK([&](const GradInputs& x) { return attention(x[0], x[1], x[2], mask::Gist(1, 3), o, x[3]); },
                  {q, k, v, bias});
  CHECK_GRADCHECK([&](const GradInputs& x) { return attention(x[0], x[1], x[2], mask::Causal{}, o); }, {q, k, v});
  // non-contiguous q (a transposed view)
  auto qt = randn<double>({1, 6, 2, 4}, gen).transpose(1, 2);
  CHECK_GRADCHECK([&](const GradInputs& x) { return attention(x[0], x[1], x[2], mask::SlidingWindow(2, 1), o); },
                  {qt, k, v});
}

TEST_CASE("attention: fully masked rows give zeros and zero gradients, never NaN") {
  Generator gen(3);
  std::vector<std::int32_t> lengths{0, 3};  // row 0: every key masked
  const mask::KeyPadding padding(lengths.data(), 2);
  auto q = randn<float>({2, 2, 5, 4}, gen).requires_grad_();
  auto k = randn<float>({2, 2, 5, 4}, gen).requires_grad_();
  auto v = randn<float>({2, 2, 5, 4}, gen).requires_grad_();
  const auto r = attention_forward(q, k, v, padding);
  for (float x : r.out.select(0, 0).to_vector()) CHECK(x == 0.0f);
  for (float x : r.lse.select(0, 0).to_vector()) CHECK(std::isinf(x));
  sum(r.out).backward();
  for (const auto& g : {q.grad(), k.grad(), v.grad()}) {
    for (float x : g.to_vector()) CHECK(!std::isnan(x));
    for (float x : g.select(0, 0).to_vector()) CHECK(x == 0.0f);
  }
}

TEST_CASE("attention: bad shapes throw with the op and the shapes") {
  auto q = zeros<float>({1, 4, 8, 16});
  auto k = zeros<float>({1, 3, 8, 16});
  CHECK_THROWS_WITH_AS(attention(q, k, k, mask::Causal{}),
                       "[attention] kv heads (3) must divide query heads (4): q (1x4x8x16), k (1x3x8x16)", Error);
  auto k2 = zeros<float>({1, 2, 8, 8});
  CHECK_THROWS_WITH_AS(attention(q, k2, k2, mask::Causal{}), "[attention] head dims differ: q (1x4x8x16), k (1x2x8x8)",
                       Error);
  auto k3 = zeros<float>({1, 2, 8, 16});
  CHECK_THROWS_WITH_AS(attention(q, k3, zeros<float>({1, 2, 9, 16}), mask::Causal{}),
                       "[attention] k and v shapes differ: (1x2x8x16) vs (1x2x9x16)", Error);
  CHECK_THROWS_WITH_AS(attention(q, k3, k3, mask::Causal{}, {}, zeros<float>({1, 3, 8, 8})),
                       "[attention] bias must be [B, 1 or H, Tq, Tk] = [1, 1 or 4, 8, 8], got (1x3x8x8)", Error);
  CHECK_THROWS_WITH_AS(attention(zeros<float>({4, 8, 16}), k3, k3, mask::Causal{}),
                       doctest::Contains("[attention] q, k, v must be [B, H, T, D]"), Error);
  std::vector<std::int32_t> lengths{3};
  CHECK_THROWS_WITH_AS(attention(zeros<float>({2, 4, 8, 16}), zeros<float>({2, 2, 8, 16}), zeros<float>({2, 2, 8, 16}),
                                 mask::KeyPadding(lengths.data(), 1)),
                       doctest::Contains("KeyPadding holds lengths for 1 rows, but the batch has 2"), Error);
}

}  // namespace test_attention
