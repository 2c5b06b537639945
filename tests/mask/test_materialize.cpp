// materialize / materialize_batch / tile_map / count_allowed / density / check_classify:
// shapes and values, count_allowed against the materialised mask over random policies and
// sizes that cross the 64-tile grid, tile maps against per-tile classify, check_classify's
// report (and its error on a non-conservative policy), and the size/validate errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "condense/core/random.hpp"
#include "condense/mask/materialize.hpp"
#include "condense/mask/policies.hpp"
#include "test_util.hpp"

namespace test_materialize {

using namespace condense;

namespace {

std::int64_t count_true(const Tensor<bool>& t) {
  std::int64_t n = 0;
  for (bool v : t.to_vector()) n += v;
  return n;
}

/// A policy whose classify wrongly says Full everywhere (not conservative).
struct OverclaimingCausal {
  bool allowed(int, int q, int k) const { return k <= q; }
  TileKind classify(int, int, int, int, int) const { return TileKind::Full; }
};

/// A policy whose classify is always Partial (conservative, never tight).
struct LazyCausal {
  bool allowed(int, int q, int k) const { return k <= q; }
  TileKind classify(int, int, int, int, int) const { return TileKind::Partial; }
};

}  // namespace

TEST_CASE("materialize and materialize_batch: shapes, values, per-row data") {
  const Tensor<bool> m = materialize(mask::Causal{}, 0, 3, 4);
  CHECK(m.shape() == Shape{3, 4});
  CHECK(m.to_vector() == std::vector<bool>{true, false, false, false, true, true, false, false, true, true, true, false});

  const std::vector<std::int32_t> lengths = {1, 3};
  const mask::KeyPadding pad(lengths.data(), 2);
  const Tensor<bool> batch = materialize_batch(pad, 2, 2, 3);
  CHECK(batch.shape() == Shape{2, 2, 3});
  CHECK(batch.to_vector() == std::vector<bool>{true, false, false, true, false, false, true, true, true, true, true, true});
  for (int b = 0; b < 2; ++b) CHECK(batch.select(0, b).to_vector() == materialize(pad, b, 2, 3).to_vector());

  CHECK(materialize(mask::None{}, 0, 0, 5).shape() == Shape{0, 5});
  CHECK(materialize_batch(mask::None{}, 0, 2, 2).shape() == Shape{0, 2, 2});
}

TEST_CASE("count_allowed and density") {
  CHECK(count_allowed(mask::Causal{}, 0, 100, 100) == 5050);
  CHECK(count_allowed(mask::Causal{}, 0, 0, 7) == 0);
  CHECK(density(mask::Causal{}, 0, 4, 4) == doctest::Approx(10.0 / 16.0));
  CHECK(density(mask::Causal{}, 0, 0, 0) == 0.0);
  CHECK(density(mask::None{}, 0, 3, 5) == 1.0);
  // Sliding window of 16 keys over 1000 queries: 16 per row except the first 15 rows.
  CHECK(count_allowed(mask::SlidingWindow(15, 0), 0, 1000, 1000) == 1000 * 16 - 15 * 16 / 2);
  const std::vector<std::int32_t> lengths = {10, 0, 130};
  const mask::KeyPadding pad(lengths.data(), 3);
  CHECK(count_allowed_batch(pad, 3, 70, 130) == 70 * (10 + 0 + 130));
  CHECK(density_batch(pad, 3, 70, 130) == doctest::Approx(140.0 / 390.0));
}

TEST_CASE("count_allowed equals the materialised count (random policies, sizes across tiles)") {
  Generator gen(7);
  const auto rnd = [&](int lo, int hi) { return lo + static_cast<int>(gen.below(static_cast<std::uint64_t>(hi - lo + 1))); };
  for (int c = 0; c < 40; ++c) {
    const int tq = rnd(1, 150), tk = rnd(1, 150);
    CAPTURE(c);
    CAPTURE(tq);
    CAPTURE(tk);
    std::vector<std::int32_t> spans = {rnd(0, tk), rnd(0, tk), rnd(0, 4), rnd(0, 2)};
    std::vector<bool> keep_v(static_cast<std::size_t>(2 * tk));
    for (auto&& v : keep_v) v = gen.uniform01() < 0.6;
    const std::unique_ptr<bool[]> keep(new bool[static_cast<std::size_t>(2 * tk)]);
    std::copy(keep_v.begin(), keep_v.end(), keep.get());

    const mask::Causal causal{rnd(-2, 40)};
    const mask::SlidingWindow window(rnd(0, 70), rnd(0, 10));
    const mask::Gist gist(spans.data(), 2);
    const mask::ChunkedLocal chunked(rnd(1, 40), rnd(0, 8), {.n_chunks = rnd(-1, 3), .memory_sees_earlier_memory = c % 2 == 0});
    const mask::Pruned pruned(keep.get(), 2, tk, rnd(0, 5));
    const auto combo = (causal & window) | mask::KeyPadding(rnd(0, tk));
    for (int b = 0; b < 2; ++b) {
      CHECK(count_allowed(causal, b, tq, tk) == count_true(materialize(causal, b, tq, tk)));
      CHECK(count_allowed(window, b, tq, tk) == count_true(materialize(window, b, tq, tk)));
      CHECK(count_allowed(gist, b, tq, tk) == count_true(materialize(gist, b, tq, tk)));
      CHECK(count_allowed(chunked, b, tq, tk) == count_true(materialize(chunked, b, tq, tk)));
      CHECK(count_allowed(pruned, b, tq, tk) == count_true(materialize(pruned, b, tq, tk)));
      CHECK(count_allowed(combo, b, tq, tk) == count_true(materialize(combo, b, tq, tk)));
    }
    CHECK(count_allowed_batch(gist, 2, tq, tk) == count_true(materialize_batch(gist, 2, tq, tk)));
    const int n = rnd(1, 40), context = rnd(1, 120);
    const mask::DigestCross digest(context, n, {.groups = rnd(1, std::min(n, context))});
    CHECK(count_allowed(digest, 0, n, context + n) == count_true(materialize(digest, 0, n, context + n)));
  }
}

TEST_CASE("tile_map: a causal grid and agreement with classify") {
  const TileMap map = tile_map(mask::Causal{}, 0, 8, 8, 4, 4);
  CHECK(map.tiles_q == 2);
  CHECK(map.tiles_k == 2);
  CHECK(map.at(0, 0) == TileKind::Partial);
  CHECK(map.at(0, 1) == TileKind::Empty);
  CHECK(map.at(1, 0) == TileKind::Full);
  CHECK(map.at(1, 1) == TileKind::Partial);
  CHECK(map.count(TileKind::Partial) == 2);
  CHECK_THROWS_WITH_AS(map.at(2, 0), "[tile_map] tile (2, 0) out of range for a 2x2 tile map", Error);

  // Clipped edge tiles: 10 x 7 with 4 x 3 tiles -> 3 x 3 tiles, the last ones smaller.
  const mask::ChunkedLocal chunked(3, 1, {.n_chunks = 2});
  const TileMap clipped = tile_map(chunked, 0, 10, 7, 4, 3);
  CHECK(clipped.tiles_q == 3);
  CHECK(clipped.tiles_k == 3);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      CHECK(clipped.at(i, j) == chunked.classify(0, 4 * i, std::min(10, 4 * i + 4), 3 * j, std::min(7, 3 * j + 3)));
  CHECK(tile_map(mask::None{}, 0, 0, 5, 4, 4).kinds.empty());
}

TEST_CASE("check_classify: reports, tightness, and a non-conservative policy") {
  const ClassifyReport causal = check_classify(mask::Causal{}, 1, 64, 64, 16, 16);
  CHECK(causal.full == 6);
  CHECK(causal.empty == 6);
  CHECK(causal.partial == 4);
  CHECK(causal.partial_but_full + causal.partial_but_empty == 0);

  const ClassifyReport lazy = check_classify(LazyCausal{}, 2, 64, 64, 16, 16);
  CHECK(lazy.partial == 32);
  CHECK(lazy.partial_but_full == 12);
  CHECK(lazy.partial_but_empty == 12);

  CHECK_THROWS_WITH_AS(check_classify(OverclaimingCausal{}, 1, 8, 8, 4, 4),
                       "[check_classify] classify says Full for tile [0,4) x [0,4) of row 0, but (q 0, k 1) is masked",
                       Error);
  // count_allowed trusts classify; materialize does not.
  CHECK(count_true(materialize(OverclaimingCausal{}, 0, 8, 8)) == 36);
}

TEST_CASE("size and validate errors") {
  CHECK_THROWS_WITH_AS(materialize(mask::Causal{}, -1, 2, 2), "[materialize] batch row must be >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(materialize(mask::Causal{}, 0, -2, 2),
                       "[materialize] mask sizes must be non-negative, got batch 1, Tq -2, Tk 2", Error);
  CHECK_THROWS_WITH_AS(materialize_batch(mask::Causal{}, 1, std::int64_t{1} << 32, 2),
                       "[materialize_batch] mask sizes must fit in int, got batch 1, Tq 4294967296, Tk 2", Error);
  CHECK_THROWS_WITH_AS(tile_map(mask::Causal{}, 0, 4, 4, 0, 4), "[tile_map] tile sizes must be positive, got 0x4", Error);
  CHECK_THROWS_WITH_AS(check_classify(mask::Causal{}, 1, 4, 4, 4, -1),
                       "[check_classify] tile sizes must be positive, got 4x-1", Error);

  const bool keep[] = {true, true, true, true, false, false, false, false};
  const mask::Pruned pruned(keep, 2, 4);
  CHECK_THROWS_WITH_AS(materialize(pruned, 0, 3, 6), "[materialize] Pruned keep rows hold 4 keys, but Tk = 6", Error);
  CHECK_THROWS_WITH_AS(materialize(pruned, 2, 3, 4), "[materialize] Pruned keep holds 2 rows, but the batch has 3", Error);
  const std::vector<std::int32_t> lengths = {1, 2};
  CHECK_THROWS_WITH_AS(materialize_batch(mask::KeyPadding(lengths.data(), 2), 3, 4, 4),
                       "[materialize_batch] KeyPadding holds lengths for 2 rows, but the batch has 3", Error);
  const std::vector<std::int32_t> spans = {1, 2};
  CHECK_THROWS_WITH_AS(count_allowed(mask::GistCross(spans.data(), 1), 1, 4, 4),
                       "[count_allowed] GistCross holds gist spans for 1 rows, but the batch has 2", Error);
  CHECK_THROWS_WITH_AS(materialize(mask::DigestCross(4, 3), 0, 4, 7),
                       "[materialize] DigestCross has n = 3 digest queries, but Tq = 4", Error);
  CHECK_THROWS_WITH_AS(materialize(mask::DigestCross(4, 3), 0, 3, 8),
                       "[materialize] DigestCross keys are L_ctx + n = 4 + 3, but Tk = 8", Error);
  const bool dense[] = {true, false, true, false};
  CHECK_THROWS_WITH_AS(materialize(mask::Dense(dense, 1, 2, 2), 0, 3, 2),
                       "[materialize] Dense mask is [1, 2, 2], too small for batch 1, Tq 3, Tk 2", Error);
  // Combinators validate both parts.
  CHECK_THROWS_WITH_AS(tile_map(mask::Causal{} & pruned, 0, 4, 5, 2, 2),
                       "[tile_map] Pruned keep rows hold 4 keys, but Tk = 5", Error);
  // validate_mask is what attention entry points call.
  CHECK_THROWS_WITH_AS(validate_mask(mask::None{} | pruned, "attention", 2, 4, 6),
                       "[attention] Pruned keep rows hold 4 keys, but Tk = 6", Error);
  CHECK_NOTHROW(validate_mask(pruned, "attention", 2, 7, 4));
}

}  // namespace test_materialize
