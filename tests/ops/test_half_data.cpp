// The 16-bit floats (bfloat16, float16) in the data-movement and lookup ops on the CPU:
// embedding, rope, the comparisons, where and masked_fill, cat, stack, index_select,
// gather, scatter_add, cumsum and cumprod, and the uniform factories. Ops that only move
// values return them as stored; ops that compute equal the float op on the widened inputs
// rounded once. Gradients equal the float gradients rounded once, bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/compare.hpp"
#include "condense/ops/embedding.hpp"
#include "condense/ops/indexing.hpp"
#include "condense/ops/rope.hpp"
#include "condense/ops/scan.hpp"
#include "half_test_util.hpp"
#include "test_util.hpp"

namespace test_half_data {

using namespace condense;
using condense::testing::bits;
using condense::testing::check_equals_float_rounded;
using condense::testing::values;

namespace {

/// check_equals_float_rounded with one function, generic over the element type, for both
/// the 16-bit and the float inputs.
template <HalfElement T, class F>
void check_rounded(const std::vector<Tensor<T>>& inputs, F f, Generator& gen) {
  check_equals_float_rounded<T>(inputs, f, f, gen);
}

}  // namespace

TEST_CASE_TEMPLATE("16-bit embedding: rows gathered as stored, gradient summed in float", T, bfloat16, float16) {
  Generator gen(21);
  const auto weight = randn<T>({6, 9}, gen);
  // Every row is hit many times, so a 16-bit running sum would round differently.
  const auto ids = randint<std::int64_t>({4, 15}, 0, 6, gen);
  const auto ids32 = ids.template cast<std::int32_t>();
  const Tensor<T> out = embedding(weight, ids);
  CHECK(out.shape() == Shape{4, 15, 9});
  CHECK(bits(out) == bits(index_select(weight, 0, ids.reshape({60})).reshape({4, 15, 9})));
  CHECK(bits(embedding(weight, ids32)) == bits(out));
  check_rounded<T>({weight}, [&](const auto& v) { return embedding(v[0], ids); }, gen);
  check_rounded<T>({weight}, [&](const auto& v) { return embedding(v[0], ids32, -2); }, gen);
  // padding_idx: that row's gradient is zero
  auto leaf = weight.clone();
  leaf.requires_grad_();
  embedding(leaf, ids, 1).backward(randn<T>({4, 15, 9}, gen));
  CHECK(values(leaf.grad().select(0, 1)) == std::vector<double>(9, 0.0));
  CHECK_THROWS_WITH_AS(embedding(weight, tensor<std::int64_t>({0, 6})), doctest::Contains("[embedding] id 6 out of range"),
                       Error);
  CHECK_THROWS_WITH_AS(embedding(weight.reshape({54}), ids), doctest::Contains("[embedding]"), Error);
}

TEST_CASE_TEMPLATE("16-bit rope: the float rotation rounded once, gradients too", T, bfloat16, float16) {
  Generator gen(22);
  const auto x = randn<T>({2, 3, 5, 8}, gen);
  const auto shared = tensor<std::int64_t>({0, 1, 2, 7, 100});
  const auto per_row = tensor<std::int64_t>({3, 4, 5, 6, 7, 0, 0, 1, 2, 3}, {2, 5});
  const RopeTable<float> table = rope_table<compute_type_t<T>>(shared, 8);
  check_rounded<T>({x}, [&](const auto& v) { return rope(v[0], table); }, gen);
  check_rounded<T>({x}, [&](const auto& v) { return rope(v[0], per_row, 500.0); }, gen);
  // a strided view: the [B, T, H, D] -> [B, H, T, D] transpose of a projection
  const auto projected = randn<T>({2, 5, 3, 8}, gen);
  check_rounded<T>({projected}, [&](const auto& v) { return rope(v[0].transpose(1, 2), table); }, gen);
  CHECK_THROWS_WITH_AS(rope(randn<T>({2, 3, 5, 6}, gen), table), doctest::Contains("[rope]"), Error);
  CHECK_THROWS_WITH_AS(rope(randn<T>({2, 3, 4, 8}, gen), shared), doctest::Contains("[rope]"), Error);
  CHECK_THROWS_WITH_AS(rope(randn<T>({3, 5, 8}, gen), shared), doctest::Contains("[rope] x must be [B, H, T, D]"), Error);
}

TEST_CASE_TEMPLATE("16-bit comparisons: in float, with 16-bit and float scalars", T, bfloat16, float16) {
  Generator gen(23);
  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr float inf = std::numeric_limits<float>::infinity();
  const auto a = cat({randn<T>({4, 5}, gen), tensor<float>({nan, inf, -inf, 0.0f, -0.0f}, {1, 5}).template cast<T>()});
  const auto b = cat({a.slice(0, 0, 2), randn<T>({3, 5}, gen)});  // equal rows and different ones
  const Tensor<float> af = a.template cast<float>(), bf = b.template cast<float>();
  CHECK(values(eq(a, b)) == values(eq(af, bf)));
  CHECK(values(ne(a, b)) == values(ne(af, bf)));
  CHECK(values(lt(a, b)) == values(lt(af, bf)));
  CHECK(values(le(a, b)) == values(le(af, bf)));
  CHECK(values(gt(a, b)) == values(gt(af, bf)));
  CHECK(values(ge(a, b)) == values(ge(af, bf)));
  CHECK(values(lt(a, b.slice(0, 1, 2))) == values(lt(af, bf.slice(0, 1, 2))));  // broadcasting
  CHECK(values(eq(a.transpose(0, 1), b.transpose(0, 1))) == values(eq(af.transpose(0, 1), bf.transpose(0, 1))));
  CHECK(values(ne(a, a))[20] == 1.0);  // NaN != NaN
  // 16-bit scalars
  const T s = T(0.5f);
  CHECK(values(eq(a, s)) == values(eq(af, 0.5f)));
  CHECK(values(ge(a, s)) == values(ge(af, 0.5f)));
  CHECK(values(lt(a, T(-inf))) == std::vector<double>(25, 0.0));
  // float scalars are compared unrounded: `above` is not exact in 16 bits and rounds to `near`
  const T near = T(0.3f);
  const float above = std::nextafter(static_cast<float>(near), 1.0f);
  REQUIRE(T(above) == near);
  const auto c = tensor<float>({static_cast<float>(near), -1.0f, 2.0f, nan}).template cast<T>();
  const Tensor<float> cf = c.template cast<float>();
  CHECK(values(gt(c, above)) == values(gt(cf, above)));
  CHECK(values(lt(c, above)) != values(lt(c, T(above))));  // rounding `above` would change the answer
  CHECK(values(eq(c, above)) == values(eq(cf, above)));
  CHECK(values(ne(c, above)) == values(ne(cf, above)));
  CHECK(values(lt(c, above)) == values(lt(cf, above)));
  CHECK(values(le(c, above)) == values(le(cf, above)));
  CHECK(values(ge(c, above)) == values(ge(cf, above)));
  CHECK(values(lt(a, 0.25f)) == values(lt(af, 0.25f)));
  CHECK_THROWS_WITH_AS(eq(a, randn<T>({3, 5}, gen)), doctest::Contains("[eq] shapes cannot be broadcast"), Error);
  CHECK_THROWS_WITH_AS(gt(Tensor<T>(), 0.5f), doctest::Contains("[gt]"), Error);
}

TEST_CASE_TEMPLATE("16-bit where and masked_fill: values as stored, gradients as in float", T, bfloat16, float16) {
  Generator gen(24);
  const auto a = randn<T>({3, 4}, gen);
  const auto b = randn<T>({4}, gen);
  const auto cond = gt(randn<float>({3, 4}, gen), 0.0f);
  const auto row_mask = gt(randn<float>({1, 4}, gen), 0.0f);
  check_rounded<T>({a, b}, [&](const auto& v) { return where(cond, v[0], v[1]); }, gen);
  check_rounded<T>({a}, [&](const auto& v) { return where(cond, v[0], 0.375f) * v[0]; }, gen);
  check_rounded<T>({b}, [&](const auto& v) { return where(cond, -1.5f, v[0]); }, gen);
  check_rounded<T>({a}, [&](const auto& v) { return masked_fill(v[0], row_mask, 2.0f); }, gen);
  check_rounded<T>({a}, [&](const auto& v) { return masked_fill(v[0].transpose(0, 1), cond.transpose(0, 1), 0.1f); },
                                gen);
  // 16-bit scalars, and a value that is not exact in 16 bits: rounded once, as in float then cast
  CHECK(bits(where(cond, a, T(0.1f))) == bits(where(cond, a.template cast<float>(), 0.1f).template cast<T>()));
  CHECK(bits(where(cond, T(0.1f), a)) == bits(where(cond, 0.1f, a)));
  CHECK(bits(masked_fill(a, cond, T(3.0f))) == bits(masked_fill(a, cond, 3.0f)));
  // -inf fill, as attention masks do; softmax-style use keeps the -inf
  constexpr float inf = std::numeric_limits<float>::infinity();
  const auto filled = values(masked_fill(a, cond, -inf));
  const auto mask_values = values(cond);
  const auto a_values = values(a);
  for (std::size_t i = 0; i < filled.size(); ++i) CHECK(filled[i] == (mask_values[i] != 0 ? -inf : a_values[i]));
  CHECK_THROWS_WITH_AS(masked_fill(a, gt(randn<float>({2, 4}, gen), 0.0f), -inf), doctest::Contains("[masked_fill]"), Error);
  CHECK_THROWS_WITH_AS(where(cond, a, randn<T>({3}, gen)), doctest::Contains("[where] shapes cannot be broadcast"), Error);
}

TEST_CASE_TEMPLATE("16-bit cat, stack, index_select, gather and scatter_add", T, bfloat16, float16) {
  Generator gen(25);
  const auto a = randn<T>({2, 3}, gen), b = randn<T>({2, 5}, gen), c = randn<T>({2, 3}, gen);
  // cat and stack move values as stored; their gradients are slices of the upstream gradient
  const auto joined = cat({a, b}, 1);
  CHECK(bits(joined.slice(1, 0, 3)) == bits(a));
  CHECK(bits(joined.slice(1, 3, 8)) == bits(b));
  check_rounded<T>({a, b}, [](const auto& v) { return cat({v[0], v[1]}, -1); }, gen);
  check_rounded<T>({a, c}, [](const auto& v) { return stack({v[0], v[1].transpose(0, 1).transpose(0, 1)}, 1); }, gen);
  CHECK(bits(stack({a, c}).select(0, 1)) == bits(c));
  // index_select and gather: repeated positions accumulate their gradients in float
  const auto t = randn<T>({5, 7}, gen);
  const auto repeats = tensor<std::int64_t>({4, 0, 4, 4, 1, 0, 4, 4, 2, 4, 4});
  check_rounded<T>({t}, [&](const auto& v) { return index_select(v[0], 0, repeats); }, gen);
  check_rounded<T>({t}, [&](const auto& v) { return index_select(v[0].transpose(0, 1), 1, repeats); }, gen);
  CHECK(bits(index_select(t, 1, tensor<std::int32_t>({6, 6, 0}))) == bits(cat({t.slice(1, 6, 7), t.slice(1, 6, 7), t.slice(1, 0, 1)}, 1)));
  const auto where_from = randint<std::int64_t>({12, 7}, 0, 5, gen);
  check_rounded<T>({t}, [&](const auto& v) { return gather(v[0], 0, where_from); }, gen);
  const auto along_rows = randint<std::int32_t>({5, 20}, 0, 7, gen);
  check_rounded<T>({t}, [&](const auto& v) { return gather(v[0], 1, along_rows); }, gen);
  // scatter_add computes: through float, rounded once
  const auto base = randn<T>({5, 7}, gen), src = randn<T>({12, 7}, gen);
  check_rounded<T>({base, src}, [&](const auto& v) { return scatter_add(v[0], 0, where_from, v[1]); }, gen);
  CHECK_THROWS_WITH_AS(cat({a, randn<T>({3, 3}, gen)}, 1), doctest::Contains("[cat]"), Error);
  CHECK_THROWS_WITH_AS(stack({a, b}), doctest::Contains("[stack]"), Error);
  CHECK_THROWS_WITH_AS(index_select(t, 0, tensor<std::int64_t>({5})), doctest::Contains("[index_select] index 5 out of range"),
                       Error);
  CHECK_THROWS_WITH_AS(gather(t, 0, tensor<std::int64_t>({-1}, {1, 1})), doctest::Contains("[gather] index -1 out of range"), Error);
  CHECK_THROWS_WITH_AS(scatter_add(base, 0, tensor<std::int64_t>({5}, {1, 1}), src), doctest::Contains("[scatter_add]"), Error);
}

TEST_CASE_TEMPLATE("16-bit cumsum and cumprod accumulate in float and round each output once", T, bfloat16, float16) {
  Generator gen(26);
  const auto x = randn<T>({3, 9, 4}, gen);
  const auto near_one = add(mul(randn<float>({3, 9, 4}, gen), 0.1f), 1.0f).template cast<T>();
  for (const std::int64_t dim : {0, 1, 2, -1}) {
    CAPTURE(dim);
    check_rounded<T>({x}, [&](const auto& v) { return cumsum(v[0], dim); }, gen);
    check_rounded<T>({near_one}, [&](const auto& v) { return cumprod(v[0], dim); }, gen);
  }
  check_rounded<T>({x}, [](const auto& v) { return cumsum(v[0].transpose(0, 2), 1); }, gen);
  // 4096 terms of 2^-12 sum to 1 exactly; a 16-bit running sum would stall long before
  const auto small = full<T>({4096}, convert_element<T>(0x1p-12));
  CHECK(values(cumsum(small, 0)).back() == 1.0);
  CHECK_THROWS_WITH_AS(cumsum(x, 3), doctest::Contains("[cumsum]"), Error);
  CHECK_THROWS_WITH_AS(cumprod(Tensor<T>(), 0), doctest::Contains("[cumprod]"), Error);
}

TEST_CASE_TEMPLATE("16-bit uniform and rand: draws rounded once, never the excluded bound", T, bfloat16, float16) {
  // Near 1 the draws round up to 1 in 16 bits (bfloat16: one in 512, float16: one in 4096):
  // those take the largest value below 1 instead.
  constexpr std::int64_t n = 200000;
  Generator gen(27), same(27);
  const auto u = rand<T>({n}, gen);
  const auto ref = rand<float>({n}, same);  // the same draws, rounded to float
  const T below_one = T::from_bits(static_cast<std::uint16_t>(T(1.0f).bits - 1));
  const auto uv = u.to_vector();
  const auto rv = ref.to_vector();
  std::int64_t clamped = 0, mismatched = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const T rounded = T(rv[static_cast<std::size_t>(i)]);
    const T expected = static_cast<float>(rounded) >= 1.0f ? below_one : rounded;
    clamped += static_cast<float>(rounded) >= 1.0f;
    mismatched += !(uv[static_cast<std::size_t>(i)] == expected);
  }
  CHECK(clamped > 0);  // the case occurred
  CHECK(mismatched == 0);
  double lowest = 1.0, highest = 0.0, total = 0.0;
  for (const T v : uv) {
    const double d = static_cast<float>(v);
    lowest = std::min(lowest, d);
    highest = std::max(highest, d);
    total += d;
  }
  CHECK(lowest >= 0.0);
  CHECK(highest < 1.0);
  CHECK(std::abs(total / n - 0.5) < 0.01);
  // any range: samples stay in [low, high) even when the bounds are not exact in 16 bits
  const auto r = values(uniform<T>({50000}, -0.1, 0.1, gen));
  CHECK(*std::min_element(r.begin(), r.end()) >= -0.1);
  CHECK(*std::max_element(r.begin(), r.end()) < 0.1);
  CHECK(values(uniform<T>({3}, 2.0, 2.0, gen)) == std::vector<double>(3, 2.0));
  CHECK_THROWS_WITH_AS(uniform<T>({3}, 1.0001, 1.0002, gen), doctest::Contains("[uniform] no"), Error);
  CHECK_THROWS_WITH_AS(uniform<T>({3}, 1.0, 0.5, gen), doctest::Contains("[uniform] low 1 > high 0.5"), Error);
}

}  // namespace test_half_data
