// The rope op: values against a plain double loop in the rotate_half layout, positions
// shared ([T]) or per row ([B, T]), relative-position property, the inverse rotation,
// gradchecks (including non-contiguous input), and shape errors.
#include <doctest/doctest.h>

#include <cmath>

#include "condense/core/factories.hpp"
#include "condense/ops/rope.hpp"
#include "test_util.hpp"

namespace test_rope {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::max_abs_diff;

namespace {

/// Plain loop: out[b,h,t,i] and out[..., i + D/2] from x at position pos(b, t).
Tensor<double> rope_loop(const Tensor<double>& x, const std::vector<std::int64_t>& pos, bool per_row, double theta) {
  const std::int64_t B = x.size(0), H = x.size(1), L = x.size(2), D = x.size(3), h2 = D / 2;
  Tensor<double> out = zeros<double>(x.shape());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t t = 0; t < L; ++t) {
        const double p = static_cast<double>(pos[static_cast<std::size_t>(per_row ? b * L + t : t)]);
        for (std::int64_t i = 0; i < h2; ++i) {
          const double a = p / std::pow(theta, 2.0 * static_cast<double>(i) / static_cast<double>(D));
          const double x1 = x.at({b, h, t, i}), x2 = x.at({b, h, t, i + h2});
          const std::int64_t base = ((b * H + h) * L + t) * D;
          out.data()[base + i] = x1 * std::cos(a) - x2 * std::sin(a);
          out.data()[base + i + h2] = x2 * std::cos(a) + x1 * std::sin(a);
        }
      }
  return out;
}

}  // namespace

TEST_CASE("rope values match a plain loop, shared and per-row positions") {
  Generator gen(1);
  const auto x = randn<double>({2, 3, 5, 8}, gen);
  const std::vector<std::int64_t> pos = {0, 1, 2, 7, 100};
  const auto p1 = from_vector<std::int64_t>(pos, {5});
  CHECK(max_abs_diff(rope(x, p1), rope_loop(x, pos, false, 10000.0)) < 1e-12);
  CHECK(max_abs_diff(rope(x, p1, 500.0), rope_loop(x, pos, false, 500.0)) < 1e-12);
  const std::vector<std::int64_t> pos2 = {3, 4, 5, 6, 7, 0, 0, 0, 1, 2};
  const auto p2 = from_vector<std::int64_t>(pos2, {2, 5});
  CHECK(max_abs_diff(rope(x, p2), rope_loop(x, pos2, true, 10000.0)) < 1e-12);
  // Position 0 is the identity; float matches double.
  const auto zero = zeros<std::int64_t>({5});
  CHECK(max_abs_diff(rope(x, zero), x) == 0.0);
  const auto xf = x.cast<float>();
  CHECK(max_abs_diff(rope(xf, p2).cast<double>(), rope_loop(x, pos2, true, 10000.0)) < 1e-5);
}

TEST_CASE("rope: non-contiguous input, relative positions, inverse rotation") {
  Generator gen(2);
  // [B, T, H, D] transposed to [B, H, T, D], as attention feeds it.
  const auto base = randn<double>({2, 4, 3, 6}, gen);
  const auto x = base.transpose(1, 2);
  REQUIRE(!x.is_contiguous());
  const auto pos = from_vector<std::int64_t>({5, 6, 7, 8}, {4});
  const auto y = rope(x, pos);
  CHECK(y.is_contiguous());
  CHECK(max_abs_diff(y, rope(x.contiguous(), pos)) == 0.0);
  // Inner stride != 1 as well.
  const auto wide = randn<double>({1, 2, 4, 12}, gen).slice(3, 0, 12, 2);
  CHECK(max_abs_diff(rope(wide, pos), rope(wide.contiguous(), pos)) < 1e-15);
  // <rope(q, m), rope(k, n)> depends only on m - n.
  const auto q = randn<double>({1, 1, 1, 8}, gen), k = randn<double>({1, 1, 1, 8}, gen);
  const auto dot = [&](std::int64_t m, std::int64_t n) {
    return sum(rope(q, from_vector<std::int64_t>({m}, {1})) * rope(k, from_vector<std::int64_t>({n}, {1}))).item();
  };
  CHECK(dot(3, 1) == doctest::Approx(dot(12, 10)).epsilon(1e-12));
  CHECK(dot(0, 5) == doctest::Approx(dot(20, 25)).epsilon(1e-12));
  // The table form equals the position form; rotating back by the inverse gives x again.
  const auto table = rope_table<double>(pos, 6);
  CHECK(max_abs_diff(rope(x, table), y) == 0.0);
  const auto neg = from_vector<std::int64_t>({-5, -6, -7, -8}, {4});
  CHECK(max_abs_diff(rope(y, neg), x.contiguous()) < 1e-12);
}

TEST_CASE("gradcheck: rope") {
  Generator gen(3);
  const auto pos = from_vector<std::int64_t>({0, 3, 9}, {3});
  const auto pos2 = from_vector<std::int64_t>({1, 2, 3, 7, 0, 4}, {2, 3});
  CHECK_GRADCHECK([&](const GradInputs& x) { return rope(x[0], pos); }, {randn<double>({2, 2, 3, 4}, gen)});
  CHECK_GRADCHECK([&](const GradInputs& x) { return rope(x[0], pos2, 100.0); }, {randn<double>({2, 1, 3, 6}, gen)});
  // Non-contiguous leaf.
  const auto nc = randn<double>({2, 3, 2, 4}, gen).transpose(1, 2);
  REQUIRE(!nc.is_contiguous());
  CHECK_GRADCHECK([&](const GradInputs& x) { return rope(x[0], pos2) * x[0]; }, {nc});
}

TEST_CASE("rope errors") {
  Generator gen(4);
  const auto x = randn<float>({1, 2, 3, 4}, gen);
  CHECK_THROWS_WITH_AS(rope(x, from_vector<std::int64_t>({0, 1}, {2})),
                       "[rope] x (1x2x3x4) has 3 positions but the table has 2", Error);
  CHECK_THROWS_WITH_AS(rope(x, zeros<std::int64_t>({2, 3})),
                       "[rope] positions are given per row for 2 rows but x (1x2x3x4) has batch 1", Error);
  CHECK_THROWS_WITH_AS(rope(randn<float>({1, 2, 3, 5}, gen), zeros<std::int64_t>({3})),
                       "[rope] head dim must be positive and even, got 5", Error);
  CHECK_THROWS_WITH_AS(rope(randn<float>({2, 3, 4}, gen), zeros<std::int64_t>({3})),
                       "[rope] x must be [B, H, T, D], got (2x3x4)", Error);
  CHECK_THROWS_WITH_AS(rope(x, zeros<std::int64_t>({1, 1, 3})), "[rope] positions must be [T] or [B, T], got (1x1x3)",
                       Error);
  CHECK_THROWS_WITH_AS(rope(x, zeros<std::int64_t>({3}), -1.0), "[rope] theta must be positive, got -1", Error);
}

}  // namespace test_rope
