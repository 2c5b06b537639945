// Mask policies: hand-checked 0/1 matrices for every policy at tiny sizes (each row of a
// matrix is one query, left to right the keys), the options (query offsets, rows without a
// gist span, ChunkedLocal's memory history and tail, DigestCross groups and context
// lengths), the combinators and their operators, compile-time properties (concept, trivially
// copyable, constexpr use) and the constructor errors.
#include <doctest/doctest.h>

#include <string>
#include <type_traits>
#include <vector>

#include "condense/mask/materialize.hpp"
#include "condense/mask/policies.hpp"
#include "test_util.hpp"

namespace test_policies {

using namespace condense;
using Rows = std::vector<std::string>;

namespace {

/// Row b of the mask as strings of '0'/'1', one per query.
template <class M>
Rows mask_rows(const M& m, int tq, int tk, int b = 0) {
  const Tensor<bool> t = materialize(m, b, tq, tk);
  REQUIRE(t.shape() == Shape{tq, tk});
  const auto v = t.to_vector();
  Rows out;
  for (int q = 0; q < tq; ++q) {
    std::string row;
    for (int k = 0; k < tk; ++k) row += v[static_cast<std::size_t>(q * tk + k)] ? '1' : '0';
    out.push_back(row);
  }
  return out;
}

const Rows causal6 = {"100000", "110000", "111000", "111100", "111110", "111111"};

}  // namespace

// ---- compile-time properties ---------------------------------------------------------------

template <class M>
constexpr bool kernel_ready = MaskPolicy<M> && std::is_trivially_copyable_v<M> && sizeof(M) <= 64;

static_assert(kernel_ready<mask::None>);
static_assert(kernel_ready<mask::Causal>);
static_assert(kernel_ready<mask::SlidingWindow>);
static_assert(kernel_ready<mask::KeyPadding>);
static_assert(kernel_ready<mask::Pruned>);
static_assert(kernel_ready<mask::Dense>);
static_assert(kernel_ready<mask::Gist>);
static_assert(kernel_ready<mask::GistNegativeControl>);
static_assert(kernel_ready<mask::GistBidirectional>);
static_assert(kernel_ready<mask::GistCross>);
static_assert(kernel_ready<mask::ChunkedLocal>);
static_assert(kernel_ready<mask::DigestCross>);
static_assert(kernel_ready<mask::Intersect<mask::Causal, mask::KeyPadding>>);
static_assert(kernel_ready<mask::Union<mask::Gist, mask::Intersect<mask::Causal, mask::SlidingWindow>>>);
static_assert(check_mask_policy<mask::Causal>() && check_mask_policy<const mask::Gist&>());
static_assert(!MaskPolicy<int>);

// The arithmetic policies work in constant expressions (and so in device code).
static_assert(mask::Causal{}.classify(0, 0, 4, 4, 8) == TileKind::Empty);
static_assert(mask::Causal{}.classify(0, 4, 8, 0, 4) == TileKind::Full);
static_assert(mask::Causal{}.classify(0, 0, 4, 0, 4) == TileKind::Partial);
static_assert(mask::Causal{4}.classify(0, 0, 4, 4, 8) == TileKind::Partial);
static_assert(mask::Gist(2, 4).allowed(0, 5, 1) == false && mask::Gist(2, 4).allowed(0, 5, 2));
constexpr auto window_and_causal = mask::Causal{} & mask::SlidingWindow(2, 8);
static_assert(std::is_same_v<std::remove_const_t<decltype(window_and_causal)>, mask::Intersect<mask::Causal, mask::SlidingWindow>>);
static_assert(window_and_causal.allowed(0, 5, 3) && !window_and_causal.allowed(0, 5, 2) && !window_and_causal.allowed(0, 5, 6));

// ---- hand-checked masks --------------------------------------------------------------------

TEST_CASE("None and Causal") {
  CHECK(mask_rows(mask::None{}, 2, 4) == Rows{"1111", "1111"});
  CHECK(mask_rows(mask::Causal{}, 6, 6) == causal6);
  CHECK(mask_rows(mask::Causal{}, 3, 5) == Rows{"10000", "11000", "11100"});
}

TEST_CASE("Causal with a query offset (decoding after a cache)") {
  // 3 new queries after 3 cached keys: query i sits at position 3 + i.
  CHECK(mask_rows(mask::Causal{3}, 3, 6) == Rows{"111100", "111110", "111111"});
  // One decode step after 5 cached keys sees all 6 keys.
  CHECK(mask_rows(mask::Causal{5}, 1, 6) == Rows{"111111"});
  CHECK(mask_rows(mask::Causal{-1}, 3, 3) == Rows{"000", "100", "110"});
  // The offset form equals the bottom rows of the full causal mask.
  const Rows full = mask_rows(mask::Causal{}, 9, 9);
  const Rows tail = mask_rows(mask::Causal{6}, 3, 9);
  CHECK(tail == Rows(full.begin() + 6, full.end()));
}

TEST_CASE("SlidingWindow") {
  CHECK(mask_rows(mask::SlidingWindow(2, 0), 6, 6) == Rows{"100000", "110000", "111000", "011100", "001110", "000111"});
  CHECK(mask_rows(mask::SlidingWindow(1, 1), 6, 6) == Rows{"110000", "111000", "011100", "001110", "000111", "000011"});
  // Strictly earlier tokens only (right = -1), with an offset of 2.
  CHECK(mask_rows(mask::SlidingWindow(2, -1, 2), 3, 6) == Rows{"110000", "011000", "001100"});
  CHECK(mask_rows(mask::SlidingWindow(mask::unbounded, 0), 6, 6) == causal6);
  CHECK(mask_rows(mask::SlidingWindow(mask::unbounded, mask::unbounded), 2, 3) == Rows{"111", "111"});
}

TEST_CASE("KeyPadding: one length, and per-row lengths") {
  CHECK(mask_rows(mask::KeyPadding(4), 2, 6) == Rows{"111100", "111100"});
  const std::vector<std::int32_t> lengths = {6, 2, 0};
  const mask::KeyPadding pad(lengths.data(), 3);
  CHECK(mask_rows(pad, 2, 6, 0) == Rows{"111111", "111111"});
  CHECK(mask_rows(pad, 2, 6, 1) == Rows{"110000", "110000"});
  CHECK(mask_rows(pad, 2, 6, 2) == Rows{"000000", "000000"});
}

TEST_CASE("Gist (decoder)") {
  // [instruction 0,1 | gist 2,3 | input 4,5]: after the gist, only the gist and later.
  CHECK(mask_rows(mask::Gist(2, 4), 6, 6) == Rows{"100000", "110000", "111000", "111100", "001110", "001111"});
  // Decoding from position 4 on (a cache of the first 4 tokens).
  CHECK(mask_rows(mask::Gist(2, 4, 4), 2, 6) == Rows{"001110", "001111"});
}

TEST_CASE("Gist: rows without a span act causal") {
  const std::vector<std::int32_t> spans = {2, 4, 3, 3, -1, -1, 5, 1};  // a span, g0 == g1, sentinel, g0 > g1
  const mask::Gist gist(spans.data(), 4);
  CHECK(mask_rows(gist, 6, 6, 0) == Rows{"100000", "110000", "111000", "111100", "001110", "001111"});
  for (int b = 1; b < 4; ++b) {
    CAPTURE(b);
    CHECK(mask_rows(gist, 6, 6, b) == causal6);
  }
  const mask::GistNegativeControl neg(spans.data(), 4);
  const mask::GistBidirectional enc(spans.data(), 4);
  const mask::GistCross cross(spans.data(), 4);
  for (int b = 1; b < 4; ++b) {
    CAPTURE(b);
    CHECK(mask_rows(neg, 6, 6, b) == causal6);
    CHECK(mask_rows(enc, 3, 6, b) == Rows{"111111", "111111", "111111"});
    CHECK(mask_rows(cross, 2, 6, b) == Rows{"111111", "111111"});
  }
}

TEST_CASE("GistNegativeControl, GistBidirectional, GistCross") {
  // Negative control: after the gist, neither instruction nor gist tokens are visible.
  CHECK(mask_rows(mask::GistNegativeControl(2, 4), 6, 6) ==
        Rows{"100000", "110000", "111000", "111100", "000010", "000011"});
  CHECK(mask_rows(mask::GistNegativeControl(2, 4, 4), 2, 6) == Rows{"000010", "000011"});
  // Encoder: instruction + gist see each other; the input sees the gist and itself.
  CHECK(mask_rows(mask::GistBidirectional(2, 4), 6, 6) ==
        Rows{"111100", "111100", "111100", "111100", "001111", "001111"});
  // Cross-attention: decoder queries see the encoder states from the gist on.
  CHECK(mask_rows(mask::GistCross(2, 4), 3, 6) == Rows{"001111", "001111", "001111"});
}

TEST_CASE("ChunkedLocal: blocks, memory history, tail") {
  // [c c m | c c m]: each block causal on its own.
  CHECK(mask_rows(mask::ChunkedLocal(2, 1), 6, 6) == Rows{"100000", "110000", "111000", "000100", "000110", "000111"});
  // Memory history: the memory token of block 1 (position 5) also sees that of block 0 (2).
  CHECK(mask_rows(mask::ChunkedLocal(2, 1, {.memory_sees_earlier_memory = true}), 6, 6) ==
        Rows{"100000", "110000", "111000", "000100", "000110", "001111"});
  // Two blocks then a tail (positions 6, 7) that reads the memory tokens 2, 5 and itself.
  const Rows with_tail = {"10000000", "11000000", "11100000", "00010000",
                          "00011000", "00011100", "00100110", "00100111"};
  CHECK(mask_rows(mask::ChunkedLocal(2, 1, {.n_chunks = 2}), 8, 8) == with_tail);
  CHECK(mask_rows(mask::ChunkedLocal(2, 1, {.n_chunks = 2, .memory_sees_earlier_memory = true}), 8, 8) ==
        Rows{"10000000", "11000000", "11100000", "00010000", "00011000", "00111100", "00100110", "00100111"});
  // Two memory tokens per block: memory tokens see their whole block up to themselves.
  CHECK(mask_rows(mask::ChunkedLocal(1, 2, {.memory_sees_earlier_memory = true}), 6, 6) ==
        Rows{"100000", "110000", "111000", "000100", "011110", "011111"});
  // No memory tokens: plain block-causal chunks.
  CHECK(mask_rows(mask::ChunkedLocal(3, 0), 6, 6) == Rows{"100000", "110000", "111000", "000100", "000110", "000111"});
  // Zero blocks: everything is tail, i.e. causal.
  CHECK(mask_rows(mask::ChunkedLocal(2, 1, {.n_chunks = 0}), 6, 6) == causal6);
}

TEST_CASE("DigestCross: plain, chunked, per-row context lengths") {
  // Keys [4 context ; 3 digest slots]: digest q sees the context and slots 0..q.
  CHECK(mask_rows(mask::DigestCross(4, 3), 3, 7) == Rows{"1111100", "1111110", "1111111"});
  // 3 groups: digest i reads context chunk i = [2i, 2i+2).
  CHECK(mask_rows(mask::DigestCross::chunked(6, 3, 3), 3, 9) == Rows{"110000100", "001100110", "000011111"});
  // 2 groups of 2 digests over 6 context tokens: chunks [0,3) and [3,6).
  CHECK(mask_rows(mask::DigestCross::chunked(6, 4, 2), 4, 10) ==
        Rows{"1110001000", "1110001100", "0001111110", "0001111111"});
  // Uneven split: 7 context tokens, 3 groups -> chunks [0,2), [2,4), [4,7).
  CHECK(mask_rows(mask::DigestCross::chunked(7, 3, 3), 3, 10) == Rows{"1100000100", "0011000110", "0000111111"});
  // Per-row context lengths: row 0 has 4 of its 6 context tokens; chunks split those 4.
  const std::vector<std::int32_t> lengths = {4, 6};
  const mask::DigestCross cross(6, 4, {.groups = 2, .context_lengths = lengths.data(), .rows = 2});
  CHECK(mask_rows(cross, 4, 10, 0) == Rows{"1100001000", "1100001100", "0011001110", "0011001111"});
  CHECK(mask_rows(cross, 4, 10, 1) == Rows{"1110001000", "1110001100", "0001111110", "0001111111"});
  const mask::DigestCross padded(6, 2, {.context_lengths = lengths.data(), .rows = 2});
  CHECK(mask_rows(padded, 2, 8, 0) == Rows{"11110010", "11110011"});
}

TEST_CASE("Pruned: keep bitmap and causal") {
  const bool keep[] = {true, false, true, true, false, true,   // row 0
                       false, false, false, false, false, false};  // row 1: everything dropped
  const mask::Pruned pruned(keep, 2, 6);
  CHECK(mask_rows(pruned, 6, 6, 0) == Rows{"100000", "100000", "101000", "101100", "101100", "101101"});
  CHECK(mask_rows(pruned, 2, 6, 1) == Rows{"000000", "000000"});
  CHECK(mask_rows(mask::Pruned(keep, 2, 6, 2), 2, 6, 0) == Rows{"101000", "101100"});
  // classify skips tiles of dropped keys and recognises kept full tiles.
  CHECK(pruned.classify(0, 4, 6, 4, 5) == TileKind::Empty);
  CHECK(pruned.classify(0, 3, 6, 2, 4) == TileKind::Full);
  CHECK(pruned.classify(0, 0, 6, 0, 6) == TileKind::Partial);
  CHECK(pruned.classify(1, 0, 6, 0, 6) == TileKind::Empty);
}

TEST_CASE("Dense: an explicit mask") {
  const bool m[] = {true, false, false, true, true, false,  // row 0: 2x3
                    false, false, true, true, true, true};  // row 1
  const mask::Dense dense(m, 2, 2, 3);
  CHECK(mask_rows(dense, 2, 3, 0) == Rows{"100", "110"});
  CHECK(mask_rows(dense, 2, 3, 1) == Rows{"001", "111"});
  CHECK(dense.classify(1, 1, 2, 0, 3) == TileKind::Partial);  // conservative
}

TEST_CASE("Intersect and Union: values and tile kinds") {
  const auto causal_pad = mask::Intersect(mask::Causal{}, mask::KeyPadding(4));
  CHECK(mask_rows(causal_pad, 6, 6) == Rows{"100000", "110000", "111000", "111100", "111100", "111100"});
  const auto diag_or_prefix = mask::SlidingWindow(0, 0) | mask::KeyPadding(2);
  static_assert(std::is_same_v<decltype(diag_or_prefix), const mask::Union<mask::SlidingWindow, mask::KeyPadding>>);
  CHECK(mask_rows(diag_or_prefix, 4, 4) == Rows{"1100", "1100", "1110", "1101"});
  CHECK(mask_rows(mask::Causal{} & mask::KeyPadding(4), 6, 6) == mask_rows(causal_pad, 6, 6));

  // Intersect: Empty if either is Empty, Full if both are Full, Partial otherwise.
  const auto both = mask::Causal{} & mask::KeyPadding(4);
  CHECK(both.classify(0, 4, 6, 0, 4) == TileKind::Full);      // Full & Full
  CHECK(both.classify(0, 0, 2, 4, 6) == TileKind::Empty);     // Empty & Empty
  CHECK(both.classify(0, 4, 6, 4, 6) == TileKind::Empty);     // Partial & Empty
  CHECK(both.classify(0, 0, 4, 0, 4) == TileKind::Partial);   // Partial & Full
  CHECK(both.classify(0, 5, 6, 0, 6) == TileKind::Partial);   // Full & Partial
  // Union: Full if either is Full, Empty if both are Empty, Partial otherwise.
  const auto either = mask::Causal{} | mask::KeyPadding(2);
  CHECK(either.classify(0, 0, 2, 0, 2) == TileKind::Full);     // Partial | Full
  CHECK(either.classify(0, 0, 2, 4, 6) == TileKind::Empty);    // Empty | Empty
  CHECK(either.classify(0, 0, 4, 2, 4) == TileKind::Partial);  // Partial | Empty
  CHECK(either.classify(0, 4, 6, 2, 4) == TileKind::Full);     // Full | Empty
  // Nesting.
  const auto nested = (mask::Causal{} & mask::SlidingWindow(1, 0)) | mask::KeyPadding(1);
  CHECK(mask_rows(nested, 4, 4) == Rows{"1000", "1100", "1110", "1011"});
}

TEST_CASE("constructor errors") {
  CHECK_THROWS_WITH_AS(mask::ChunkedLocal(0, 1), "[ChunkedLocal] chunk must be >= 1, got 0", Error);
  CHECK_THROWS_WITH_AS(mask::ChunkedLocal(2, -1), "[ChunkedLocal] mem must be >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(mask::ChunkedLocal(2, 1, {.n_chunks = -2}),
                       "[ChunkedLocal] n_chunks must be >= 0, or -1 for no tail, got -2", Error);
  CHECK_THROWS_WITH_AS(mask::ChunkedLocal(1 << 20, 1, {.n_chunks = 1 << 12}),
                       doctest::Contains("[ChunkedLocal] n_chunks * (chunk + mem) overflows int"), Error);
  CHECK_THROWS_WITH_AS(mask::DigestCross(4, 0), "[DigestCross] need L_ctx >= 0 and n >= 1, got L_ctx 4, n 0", Error);
  CHECK_THROWS_WITH_AS(mask::DigestCross::chunked(8, 3, 4), "[DigestCross] groups must be in [1, n = 3], got 4", Error);
  CHECK_THROWS_WITH_AS(mask::DigestCross::chunked(2, 4, 4),
                       "[DigestCross] groups (4) must not exceed L_ctx (2) so that every context chunk is non-empty",
                       Error);
  CHECK_THROWS_WITH_AS(mask::Pruned(nullptr, 1, 4), "[Pruned] keep pointer is null", Error);
  const bool keep[] = {true};
  CHECK_THROWS_WITH_AS(mask::Pruned(keep, 1, -1), "[Pruned] keep must be [rows, keys] with rows, keys >= 0, got [1, -1]",
                       Error);
  CHECK_THROWS_WITH_AS(mask::KeyPadding(nullptr, 2), "[KeyPadding] lengths pointer is null", Error);
  CHECK_THROWS_WITH_AS(mask::GistCross(nullptr, 2), "[GistCross] spans pointer is null", Error);
  CHECK_THROWS_WITH_AS(mask::Gist(static_cast<const std::int32_t*>(nullptr), 2), "[Gist] spans pointer is null", Error);
  CHECK_THROWS_WITH_AS(mask::Dense(nullptr, 1, 2, 2), "[Dense] mask pointer is null", Error);
}

}  // namespace test_policies
