// Property tests of classify, seeded: for every policy and for the combinators, over
// hundreds of random parameter sets and random tiles (anywhere, any size, plus the aligned
// grids a kernel walks), classify never says Full where a pair is masked nor Empty where
// one is allowed; for the policies documented as exact, it equals the brute-force kind.
// Also: rows without a gist span act causal, and the combinators' rules on random parts.
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "condense/core/random.hpp"
#include "condense/mask/materialize.hpp"
#include "condense/mask/policies.hpp"
#include "test_util.hpp"

namespace test_classify_properties {

using namespace condense;

namespace {

constexpr int kBatch = 3;

/// Caller-owned per-row arrays of one random case (they outlive the policy built on them).
struct RowData {
  std::vector<std::int32_t> ints;
  std::unique_ptr<bool[]> bools;
};

int uniform_int(Generator& gen, int lo, int hi) {  // inclusive
  return lo + static_cast<int>(gen.below(static_cast<std::uint64_t>(hi - lo + 1)));
}

/// Brute-force kind of a tile.
template <class M>
TileKind true_kind(const M& m, int b, int q0, int q1, int k0, int k1) {
  bool any_allowed = false, any_masked = false;
  for (int q = q0; q < q1; ++q)
    for (int k = k0; k < k1; ++k) (m.allowed(b, q, k) ? any_allowed : any_masked) = true;
  return !any_allowed ? TileKind::Empty : (any_masked ? TileKind::Partial : TileKind::Full);
}

std::string kind_name(TileKind k) {
  return k == TileKind::Full ? "Full" : (k == TileKind::Empty ? "Empty" : "Partial");
}

/// Checks one tile; returns false (after recording a failure) on a violation.
template <class M>
bool check_tile(const M& m, bool exact, int b, int q0, int q1, int k0, int k1) {
  const TileKind got = m.classify(b, q0, q1, k0, k1);
  const TileKind truth = true_kind(m, b, q0, q1, k0, k1);
  const bool conservative = got == TileKind::Partial || got == truth;
  const bool ok = conservative && (!exact || got == truth);
  if (!ok) {
    INFO("row ", b, ", tile [", q0, ",", q1, ") x [", k0, ",", k1, "): classify ", kind_name(got), ", truth ",
         kind_name(truth));
    CHECK(ok);
  }
  return ok;
}

/// Runs `cases` random parameter sets of one policy: random tiles anywhere in [0, extent)
/// and every tile of a random aligned grid. make(gen, rows) returns {policy, q extent, k extent}.
template <class Make>
void check_policy(const char* name, bool exact, std::uint64_t seed, int cases, Make make) {
  Generator gen(seed);
  int failures = 0;
  for (int c = 0; c < cases && failures < 5; ++c) {
    RowData rows;
    const auto [policy, nq, nk] = make(gen, rows);
    INFO(std::string(name), " case ", c);
    for (int t = 0; t < 24; ++t) {
      const int b = uniform_int(gen, 0, kBatch - 1);
      int q0 = uniform_int(gen, 0, nq - 1), q1 = uniform_int(gen, 0, nq - 1);
      int k0 = uniform_int(gen, 0, nk - 1), k1 = uniform_int(gen, 0, nk - 1);
      if (q0 > q1) std::swap(q0, q1);
      if (k0 > k1) std::swap(k0, k1);
      failures += !check_tile(policy, exact, b, q0, q1 + 1, k0, k1 + 1);
    }
    const int tq = uniform_int(gen, 1, 16), tk = uniform_int(gen, 1, 16);
    const int b = uniform_int(gen, 0, kBatch - 1);
    for (int q0 = 0; q0 < nq; q0 += tq)
      for (int k0 = 0; k0 < nk; k0 += tk)
        failures += !check_tile(policy, exact, b, q0, std::min(nq, q0 + tq), k0, std::min(nk, k0 + tk));
  }
  CHECK(failures == 0);
}

template <class M>
struct Case {
  M policy;
  int nq, nk;
};
template <class M>
Case(M, int, int) -> Case<M>;

// ---- random policies (rows.ints / rows.bools hold their per-row arrays) ---------------------

Case<mask::Causal> random_causal(Generator& gen, RowData&) {
  const int n = uniform_int(gen, 1, 48);
  return {mask::Causal{uniform_int(gen, -4, n)}, n, n + uniform_int(gen, 0, 8)};
}

Case<mask::SlidingWindow> random_window(Generator& gen, RowData&) {
  const int n = uniform_int(gen, 1, 48);
  const long long left = gen.below(5) == 0 ? mask::unbounded : uniform_int(gen, -2, n);
  const long long right = gen.below(5) == 0 ? mask::unbounded : uniform_int(gen, -2, n);
  return {mask::SlidingWindow(left, right, uniform_int(gen, -3, n)), n, n};
}

Case<mask::KeyPadding> random_padding(Generator& gen, RowData& rows) {
  const int n = uniform_int(gen, 1, 48);
  if (gen.below(3) == 0) return {mask::KeyPadding(uniform_int(gen, -1, n + 1)), n, n};
  for (int b = 0; b < kBatch; ++b) rows.ints.push_back(uniform_int(gen, -1, n + 1));
  return {mask::KeyPadding(rows.ints.data(), kBatch), n, n};
}

Case<mask::Pruned> random_pruned(Generator& gen, RowData& rows) {
  const int n = uniform_int(gen, 1, 48);
  rows.bools = std::make_unique<bool[]>(static_cast<std::size_t>(kBatch * n));
  for (int b = 0; b < kBatch; ++b) {
    const double p_keep = std::vector<double>{0.0, 0.1, 0.5, 0.9, 1.0}[gen.below(5)];
    for (int k = 0; k < n; ++k) rows.bools[static_cast<std::size_t>(b * n + k)] = gen.uniform01() < p_keep;
  }
  return {mask::Pruned(rows.bools.get(), kBatch, n, uniform_int(gen, 0, 4)), n, n};
}

/// Random spans: some proper, some empty (g0 == g1), sentinels (-1, -1) and reversed.
void random_spans(Generator& gen, RowData& rows, int n) {
  for (int b = 0; b < kBatch; ++b) {
    const int g0 = uniform_int(gen, -1, n);
    const int g1 = gen.below(4) == 0 ? g0 - static_cast<int>(gen.below(3)) : uniform_int(gen, g0, n + 1);
    rows.ints.push_back(g0);
    rows.ints.push_back(g1);
  }
}

template <class G>
Case<G> random_gist_decoder(Generator& gen, RowData& rows) {
  const int n = uniform_int(gen, 1, 48);
  random_spans(gen, rows, n);
  return {G(rows.ints.data(), kBatch, gen.below(3) == 0 ? uniform_int(gen, 0, n) : 0), n, n};
}

template <class G>
Case<G> random_gist_other(Generator& gen, RowData& rows) {
  const int n = uniform_int(gen, 1, 48);
  random_spans(gen, rows, n);
  if (gen.below(4) == 0) return {G(rows.ints[0], rows.ints[1]), n, n};
  return {G(rows.ints.data(), kBatch), uniform_int(gen, 1, 24), n};
}

Case<mask::ChunkedLocal> random_chunked(Generator& gen, RowData&) {
  const int chunk = uniform_int(gen, 1, 8), mem = uniform_int(gen, 0, 4);
  const int n_chunks = uniform_int(gen, -1, 5);
  const bool history = gen.below(2) == 0;
  const int n = uniform_int(gen, 1, 56);
  return {mask::ChunkedLocal(chunk, mem, {.n_chunks = n_chunks, .memory_sees_earlier_memory = history}), n, n};
}

Case<mask::DigestCross> random_digest(Generator& gen, RowData& rows) {
  const int n = uniform_int(gen, 1, 12), context = uniform_int(gen, 0, 36);
  mask::DigestCrossOptions options;
  if (context > 0 && gen.below(2) == 0) options.groups = uniform_int(gen, 1, std::min(n, context));
  if (gen.below(2) == 0) {
    for (int b = 0; b < kBatch; ++b) rows.ints.push_back(uniform_int(gen, -1, context + 1));
    options.context_lengths = rows.ints.data();
    options.rows = kBatch;
  }
  // Queries a little past n exercise the "after the last group" path.
  return {mask::DigestCross(context, n, options), n + 3, context + n};
}

Case<mask::Dense> random_dense(Generator& gen, RowData& rows) {
  const int n = uniform_int(gen, 1, 24);
  rows.bools = std::make_unique<bool[]>(static_cast<std::size_t>(kBatch * n * n));
  const double p = gen.uniform01();
  for (int i = 0; i < kBatch * n * n; ++i) rows.bools[static_cast<std::size_t>(i)] = gen.uniform01() < p;
  return {mask::Dense(rows.bools.get(), kBatch, n, n), n, n};
}

}  // namespace

TEST_CASE("classify is exact for the arithmetic policies (random parameters and tiles)") {
  check_policy("None", true, 1, 50, [](Generator& gen, RowData&) {
    const int n = uniform_int(gen, 1, 32);
    return Case<mask::None>{mask::None{}, n, n};
  });
  check_policy("Causal", true, 2, 400, random_causal);
  check_policy("SlidingWindow", true, 3, 400, random_window);
  check_policy("Gist", true, 4, 400, random_gist_decoder<mask::Gist>);
  check_policy("GistNegativeControl", true, 5, 400, random_gist_decoder<mask::GistNegativeControl>);
  check_policy("GistBidirectional", true, 6, 400, random_gist_other<mask::GistBidirectional>);
  check_policy("GistCross", true, 7, 400, random_gist_other<mask::GistCross>);
  check_policy("ChunkedLocal", true, 8, 600, random_chunked);
  check_policy("DigestCross", true, 9, 600, random_digest);
}

TEST_CASE("classify is exact for the per-row data policies") {
  check_policy("KeyPadding", true, 10, 400, random_padding);
  check_policy("Pruned", true, 11, 400, random_pruned);
}

TEST_CASE("Dense classify is conservative") {
  check_policy("Dense", false, 12, 200, random_dense);
}

TEST_CASE("combinators classify conservatively (random parts)") {
  check_policy("Intersect<Causal, KeyPadding>", false, 20, 300, [](Generator& gen, RowData& rows) {
    const auto c = random_causal(gen, rows);
    const auto p = random_padding(gen, rows);
    return Case{mask::Intersect(c.policy, p.policy), std::min(c.nq, p.nq), std::min(c.nk, p.nk)};
  });
  check_policy("Union<SlidingWindow, Gist>", false, 21, 300, [](Generator& gen, RowData& rows) {
    const auto w = random_window(gen, rows);
    const auto g = random_gist_decoder<mask::Gist>(gen, rows);
    return Case{w.policy | g.policy, std::min(w.nq, g.nq), std::min(w.nk, g.nk)};
  });
  check_policy("Intersect<ChunkedLocal, Pruned>", false, 22, 300, [](Generator& gen, RowData& rows) {
    const auto c = random_chunked(gen, rows);
    const auto p = random_pruned(gen, rows);
    return Case{c.policy & p.policy, std::min(c.nq, p.nq), std::min(c.nk, p.nk)};
  });
  check_policy("Union<Intersect<Causal, Window>, Dense>", false, 23, 300, [](Generator& gen, RowData& rows) {
    const auto c = random_causal(gen, rows);
    const auto w = random_window(gen, rows);
    const auto d = random_dense(gen, rows);
    const int nq = std::min({c.nq, w.nq, d.nq}), nk = std::min({c.nk, w.nk, d.nk});
    return Case{(c.policy & w.policy) | d.policy, nq, nk};
  });
  check_policy("Intersect<GistBidirectional, Union<KeyPadding, DigestCross>>", false, 24, 300,
               [](Generator& gen, RowData& rows) {
                 rows.ints.reserve(64);  // the parts keep pointers into rows.ints
                 const auto g = random_gist_other<mask::GistBidirectional>(gen, rows);
                 const auto p = random_padding(gen, rows);
                 const auto d = random_digest(gen, rows);
                 const int nq = std::min({g.nq, p.nq, d.nq}), nk = std::min({g.nk, p.nk, d.nk});
                 return Case{mask::Intersect(g.policy, mask::Union(p.policy, d.policy)), nq, nk};
               });
}

TEST_CASE("combinator rules on random exact parts") {
  // With exact parts, Intersect is Full iff both are Full and Empty if either is Empty;
  // Union is Full if either is Full and Empty iff both are Empty.
  Generator gen(30);
  RowData rows;
  for (int c = 0; c < 300; ++c) {
    const auto a = random_window(gen, rows).policy;
    const auto g = mask::Gist(uniform_int(gen, 0, 20), uniform_int(gen, 0, 20), uniform_int(gen, 0, 4));
    const int q0 = uniform_int(gen, 0, 30), q1 = q0 + uniform_int(gen, 1, 12);
    const int k0 = uniform_int(gen, 0, 30), k1 = k0 + uniform_int(gen, 1, 12);
    const TileKind ka = a.classify(0, q0, q1, k0, k1), kg = g.classify(0, q0, q1, k0, k1);
    CAPTURE(c);
    CHECK(mask::Intersect(a, g).classify(0, q0, q1, k0, k1) == mask::intersect_kinds(ka, kg));
    CHECK(mask::Union(a, g).classify(0, q0, q1, k0, k1) == mask::union_kinds(ka, kg));
  }
}

TEST_CASE("gist rows without a span act causal (random spans and offsets)") {
  Generator gen(40);
  for (int c = 0; c < 200; ++c) {
    const int n = uniform_int(gen, 1, 24), offset = uniform_int(gen, 0, 6);
    const int g0 = uniform_int(gen, -1, n), g1 = g0 - static_cast<int>(gen.below(3));  // g1 <= g0: no span
    const int tq = std::max(1, n - offset);
    CAPTURE(c);
    const auto causal = materialize(mask::Causal{offset}, 0, tq, n).to_vector();
    CHECK(materialize(mask::Gist(g0, g1, offset), 0, tq, n).to_vector() == causal);
    CHECK(materialize(mask::GistNegativeControl(g0, g1, offset), 0, tq, n).to_vector() == causal);
    CHECK(materialize(mask::GistBidirectional(g0, g1), 0, n, n).to_vector() == materialize(mask::None{}, 0, n, n).to_vector());
    CHECK(materialize(mask::GistCross(g0, g1), 0, tq, n).to_vector() == materialize(mask::None{}, 0, tq, n).to_vector());
  }
}

TEST_CASE("every query row of the decoder policies keeps its own position") {
  // Causal-like policies never leave a query without keys (it sees itself).
  Generator gen(41);
  for (int c = 0; c < 200; ++c) {
    RowData rows;
    const auto chunked = random_chunked(gen, rows);
    const auto gist = random_gist_decoder<mask::Gist>(gen, rows);
    CAPTURE(c);
    for (int q = 0; q < chunked.nq; ++q) CHECK(chunked.policy.allowed(0, q, q));
    for (int b = 0; b < kBatch; ++b)
      for (int q = 0; q + gist.policy.offset < gist.nk; ++q) CHECK(gist.policy.allowed(b, q, q + gist.policy.offset));
  }
}

}  // namespace test_classify_properties
