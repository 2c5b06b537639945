// mask::QueryOffset: allowed/classify equal the wrapped policy at shifted queries; classify
// stays conservative (and exact for exact policies) on random tiles; QueryOffset over a
// policy with its own offset at 0 equals that policy with the offset set; the key filter of
// Pruned passes through; validate sees the shifted query count; attention agrees.
#include <doctest/doctest.h>

#include <memory>

#include "condense/core/factories.hpp"
#include "condense/mask/policies.hpp"
#include "condense/ops/attention.hpp"
#include "test_util.hpp"

namespace test_query_offset {

using namespace condense;
using condense::testing::max_abs_diff;

namespace {

int uniform_int(Generator& gen, int lo, int hi) { return lo + static_cast<int>(gen.below(static_cast<std::uint64_t>(hi - lo + 1))); }

template <class M>
TileKind true_kind(const M& m, int b, int q0, int q1, int k0, int k1) {
  bool any_allowed = false, any_masked = false;
  for (int q = q0; q < q1; ++q)
    for (int k = k0; k < k1; ++k) (m.allowed(b, q, k) ? any_allowed : any_masked) = true;
  return !any_allowed ? TileKind::Empty : (any_masked ? TileKind::Partial : TileKind::Full);
}

/// Checks QueryOffset{inner, offset} against inner on every pair and on random tiles.
/// `reference` is a policy expected to be identical to the shifted one (or inner itself).
template <class P, class R>
void check_shifted(const P& inner, int offset, const R& reference, bool exact, Generator& gen, int batch, int nq, int nk) {
  const mask::QueryOffset shifted(inner, offset);
  int failures = 0;
  for (int b = 0; b < batch; ++b)
    for (int q = 0; q < nq; ++q)
      for (int k = 0; k < nk; ++k) {
        const bool got = shifted.allowed(b, q, k);
        if (got != inner.allowed(b, q + offset, k) || got != reference.allowed(b, q, k)) ++failures;
      }
  CHECK(failures == 0);
  for (int t = 0; t < 200; ++t) {
    const int b = uniform_int(gen, 0, batch - 1);
    int q0 = uniform_int(gen, 0, nq - 1), q1 = uniform_int(gen, 0, nq - 1);
    int k0 = uniform_int(gen, 0, nk - 1), k1 = uniform_int(gen, 0, nk - 1);
    if (q0 > q1) std::swap(q0, q1);
    if (k0 > k1) std::swap(k0, k1);
    ++q1;
    ++k1;
    const TileKind got = shifted.classify(b, q0, q1, k0, k1);
    const TileKind truth = true_kind(shifted, b, q0, q1, k0, k1);
    const bool ok = (got == TileKind::Partial || got == truth) && (!exact || got == truth);
    if (!ok) {
      INFO("tile [", q0, ",", q1, ") x [", k0, ",", k1, ") offset ", offset);
      CHECK(ok);
      return;
    }
  }
}

}  // namespace

TEST_CASE("QueryOffset equals the policies' own offsets and stays exact") {
  Generator gen(7);
  for (int c = 0; c < 40; ++c) {
    const int offset = uniform_int(gen, 0, 20), nq = uniform_int(gen, 1, 12), nk = offset + nq + uniform_int(gen, 0, 4);
    INFO("case ", c, " offset ", offset);
    check_shifted(mask::Causal{}, offset, mask::Causal{offset}, true, gen, 1, nq, nk);
    const long long left = uniform_int(gen, 0, 6), right = uniform_int(gen, 0, 3);
    check_shifted(mask::SlidingWindow(left, right), offset, mask::SlidingWindow(left, right, offset), true, gen, 1, nq, nk);
    const int g0 = uniform_int(gen, 0, nk - 1), g1 = uniform_int(gen, g0, nk);
    check_shifted(mask::Gist(g0, g1), offset, mask::Gist(g0, g1, offset), true, gen, 1, nq, nk);
    check_shifted(mask::GistNegativeControl(g0, g1), offset, mask::GistNegativeControl(g0, g1, offset), true, gen, 1, nq, nk);
    // Policies without an offset member: compared against the inner policy directly.
    const mask::ChunkedLocal chunked(uniform_int(gen, 1, 4), uniform_int(gen, 0, 2));
    check_shifted(chunked, offset, mask::QueryOffset(chunked, offset), true, gen, 1, nq, nk);
    check_shifted(mask::GistBidirectional(g0, g1), offset, mask::QueryOffset(mask::GistBidirectional(g0, g1), offset), true,
                  gen, 1, nq, nk);
    // Combinators and a key-filtered policy, per row.
    const auto both = mask::Causal{} & mask::KeyPadding(nk - uniform_int(gen, 0, 3));
    check_shifted(both, offset, mask::Causal{offset} & both.second, false, gen, 1, nq, nk);
    std::unique_ptr<bool[]> keep(new bool[static_cast<std::size_t>(2 * nk)]);
    for (int i = 0; i < 2 * nk; ++i) keep[static_cast<std::size_t>(i)] = gen.uniform01() < 0.7;
    const mask::Pruned pruned(keep.get(), 2, nk);
    check_shifted(pruned, offset, mask::Pruned(keep.get(), 2, nk, offset), true, gen, 2, nq, nk);
    // The key filter passes through with the base policy shifted alike.
    const mask::QueryOffset shifted(pruned, offset);
    static_assert(KeyFilteredMask<decltype(shifted)>);
    const auto base = shifted.key_base();
    for (int b = 0; b < 2; ++b)
      for (int q = 0; q < nq; ++q)
        for (int k = 0; k < nk; ++k)
          CHECK(shifted.allowed(b, q, k) == (shifted.key_kept(b, k) && base.allowed(b, q, k)));
  }
}

TEST_CASE("QueryOffset validate sees the shifted query count") {
  std::unique_ptr<bool[]> dense(new bool[2 * 6 * 6]());
  const mask::Dense d(dense.get(), 2, 6, 6);
  CHECK_NOTHROW(validate_mask(mask::QueryOffset(d, 4), "attention", 2, 2, 6));
  CHECK_THROWS_WITH_AS(validate_mask(mask::QueryOffset(d, 5), "attention", 2, 2, 6),
                       "[attention] Dense mask is [2, 6, 6], too small for batch 2, Tq 7, Tk 6", Error);
  CHECK_THROWS_WITH_AS(validate_mask(mask::QueryOffset(mask::Causal{}, -1), "attention", 1, 2, 2),
                       "[attention] QueryOffset offset must be >= 0, got -1", Error);
}

TEST_CASE("attention under QueryOffset equals the policy with its own offset") {
  Generator gen(8);
  const auto q = randn<double>({2, 2, 3, 4}, gen), k = randn<double>({2, 1, 9, 4}, gen), v = randn<double>({2, 1, 9, 4}, gen);
  CHECK(max_abs_diff(attention(q, k, v, mask::QueryOffset(mask::Causal{}, 6)), attention(q, k, v, mask::Causal{6})) < 1e-14);
  CHECK(max_abs_diff(attention(q, k, v, mask::QueryOffset(mask::Gist(2, 4), 6)), attention(q, k, v, mask::Gist(2, 4, 6))) <
        1e-14);
}

}  // namespace test_query_offset
