// Comparisons, logical ops, any/all, where and masked_fill: values with broadcasting and
// scalars, non-contiguous inputs, NaN and 16-bit floats, gradchecks (broadcast cond, a, b
// and mask), large inputs, and the error messages for bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/compare.hpp"
#include "test_util.hpp"

namespace test_compare {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::values;

namespace {

using V = std::vector<double>;
using B = std::vector<bool>;

Tensor<bool> mask(std::initializer_list<bool> v, const Shape& shape = {}) { return tensor<bool>(v, shape); }

}  // namespace

TEST_CASE("comparisons between tensors with broadcasting") {
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto b = tensor<float>({2, 5, 3});
  auto e = eq(a, b);
  CHECK(e.shape() == Shape{2, 3});
  CHECK(e.to_vector() == B{false, false, true, false, true, false});
  CHECK(ne(a, b).to_vector() == B{true, true, false, true, false, true});
  CHECK(lt(a, b).to_vector() == B{true, true, false, false, false, false});
  CHECK(le(a, b).to_vector() == B{true, true, true, false, true, false});
  CHECK(gt(a, b).to_vector() == B{false, false, false, true, false, true});
  CHECK(ge(a, b).to_vector() == B{false, false, true, true, true, true});
  auto col = tensor<float>({2, 5}, {2, 1});
  CHECK(lt(a, col).to_vector() == B{true, false, false, true, false, false});
  CHECK(gt(col, b).shape() == Shape{2, 3});
  CHECK(gt(col, b).to_vector() == B{false, false, false, true, false, true});
  // non-contiguous operands
  auto at = a.transpose(0, 1);  // [[1,4],[2,5],[3,6]]
  CHECK(eq(at, tensor<float>({1, 5, 3, 5, 3, 0}, {3, 2})).to_vector() == B{true, false, false, true, true, false});
  // integers, bools, NaN, 16-bit floats
  CHECK(le(tensor<std::int64_t>({1, 5, 9}), tensor<std::int64_t>({5})).to_vector() == B{true, true, false});
  CHECK(eq(mask({true, false}), mask({true, true})).to_vector() == B{true, false});
  CHECK(lt(mask({false, true}), mask({true, true})).to_vector() == B{true, false});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto n = tensor<double>({nan, 1.0});
  CHECK(eq(n, n).to_vector() == B{false, true});
  CHECK(ne(n, n).to_vector() == B{true, false});
  CHECK(ge(n, n).to_vector() == B{false, true});
  auto h = tensor<float16>({float16(1.5f), float16(-2.0f), float16(0.0f)});
  auto hz = tensor<float16>({float16(-0.0f)});
  CHECK(gt(h, hz).to_vector() == B{true, false, false});
  CHECK(eq(h, hz).to_vector() == B{false, false, true});
  auto bf = tensor<bfloat16>({bfloat16(3.0f), bfloat16(-1.0f)});
  CHECK(lt(bf, tensor<bfloat16>({bfloat16(0.5f)})).to_vector() == B{false, true});
  // comparisons never record
  auto g = tensor<double>({1, 2}).requires_grad_();
  CHECK(!lt(g, g).requires_grad());
}

TEST_CASE("comparisons with a scalar") {
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(gt(a, 3.0f).to_vector() == B{false, false, false, true, true, true});
  CHECK(ge(a, 3).to_vector() == B{false, false, true, true, true, true});
  CHECK(le(a, 2.0f).to_vector() == B{true, true, false, false, false, false});
  CHECK(lt(a, 2.0f).to_vector() == B{true, false, false, false, false, false});
  CHECK(eq(a, 5.0f).to_vector() == B{false, false, false, false, true, false});
  CHECK(ne(a, 5.0f).to_vector() == B{true, true, true, true, false, true});
  CHECK(ge(a.transpose(0, 1), 3.0f).to_vector() == B{false, true, false, true, true, true});
  CHECK(ge(a.transpose(0, 1), 3.0f).shape() == Shape{3, 2});
  CHECK(lt(tensor<std::int32_t>({-1, 0, 1}), 0).to_vector() == B{true, false, false});
  CHECK(eq(mask({true, false, true}), true).to_vector() == B{true, false, true});
  CHECK(gt(tensor<float16>({float16(0.25f), float16(-1.0f)}), float16(0.0f)).to_vector() == B{true, false});
  CHECK(eq(scalar_tensor(2.0), 2.0).shape() == Shape{});
  CHECK(eq(scalar_tensor(2.0), 2.0).item());
  CHECK(eq(zeros<float>({0, 3}), 0.0f).shape() == Shape{0, 3});
  // large contiguous and strided inputs
  auto big = arange<float>(300 * 500).reshape({300, 500});
  auto r = lt(big, 75000.0f).to_vector();
  bool ok = true;
  for (std::size_t i = 0; i < r.size(); ++i) ok = ok && r[i] == (i < 75000);
  CHECK(ok);
  auto rt = ge(big.transpose(0, 1), 75000.0f);  // element (j, i) holds i*500 + j
  CHECK(rt.select(0, 7).slice(0, 148, 152).to_vector() == B{false, false, true, true});
}

TEST_CASE("logical ops") {
  auto m1 = mask({true, false, true, false, true, false}, {2, 3});
  auto m2 = mask({true, false, false});
  CHECK(logical_and(m1, m2).to_vector() == B{true, false, false, false, false, false});
  CHECK(logical_or(m1, m2).to_vector() == B{true, false, true, true, true, false});
  CHECK(logical_xor(m1, m2).to_vector() == B{false, false, true, true, true, false});
  CHECK(logical_not(m1).to_vector() == B{false, true, false, true, false, true});
  auto t = m1.transpose(0, 1);  // [[T,F],[F,T],[T,F]]
  CHECK(logical_not(t).shape() == Shape{3, 2});
  CHECK(logical_not(t).to_vector() == B{false, true, true, false, false, true});
  CHECK(logical_and(t, mask({false, true}, {1, 2})).to_vector() == B{false, false, false, true, false, false});
  auto x = tensor<float>({-2, -1, 0, 1, 2});
  CHECK(logical_and(gt(x, -2.0f), lt(x, 2.0f)).to_vector() == B{false, true, true, true, false});
}

TEST_CASE("any and all") {
  CHECK(!any(mask({false, false})));
  CHECK(any(mask({false, true})));
  CHECK(all(mask({true, true})));
  CHECK(!all(mask({true, false})));
  CHECK(!any(zeros<bool>({0})));
  CHECK(all(zeros<bool>({0, 3})));
  CHECK(any(scalar_tensor(true)));
  CHECK(!all(scalar_tensor(false)));
  auto m = mask({true, false, true, false}, {2, 2});
  CHECK(!all(m.transpose(0, 1)));
  CHECK(all(m.select(1, 0)));  // column 0: true, true
  CHECK(!any(m.select(1, 1)));
  auto big = zeros<bool>({200000});
  CHECK(!any(big));
  big.data()[199999] = true;
  CHECK(any(big));
  CHECK(!any(big.slice(0, 0, 200000, 2)));
  auto full = ones<bool>({400, 500});
  CHECK(all(full));
  full.data()[150000] = false;
  CHECK(!all(full));
  CHECK(all(full.slice(0, 301, 400)));
}

TEST_CASE("where values with broadcasting and scalars") {
  auto cond = mask({true, false, true, false, true, false}, {2, 3});
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto b = tensor<float>({10, 20, 30});
  CHECK(values(where(cond, a, b)) == V{1, 20, 3, 10, 5, 30});
  CHECK(values(where(cond, b, a)) == V{10, 2, 30, 4, 20, 6});
  // broadcast cond
  CHECK(values(where(mask({true, false, true}), a, tensor<float>({100, 200}, {2, 1}))) == V{1, 100, 3, 4, 200, 6});
  // all three broadcast to a larger shape
  auto w = where(mask({true, false}, {2, 1}), tensor<float>({1, 2, 3}), tensor<float>({7, 8, 9}, {1, 3}));
  CHECK(w.shape() == Shape{2, 3});
  CHECK(values(w) == V{1, 2, 3, 7, 8, 9});
  auto w3 = where(mask({true, false}, {2, 1, 1}), tensor<float>({1, 2}, {2, 1}), tensor<float>({5, 6, 7}));
  CHECK(w3.shape() == Shape{2, 2, 3});
  CHECK(values(w3) == V{1, 1, 1, 2, 2, 2, 5, 6, 7, 5, 6, 7});
  // scalar conveniences
  CHECK(values(where(cond, a, 0.0f)) == V{1, 0, 3, 0, 5, 0});
  CHECK(values(where(cond, -1.0f, a)) == V{-1, 2, -1, 4, -1, 6});
  CHECK(values(where(mask({false, true}, {2, 1}), 7.0f, b)) == V{10, 20, 30, 7, 7, 7});
  // non-contiguous inputs
  auto at = a.transpose(0, 1);  // [[1,4],[2,5],[3,6]]
  CHECK(values(where(cond.transpose(0, 1), at, 0.0f)) == V{1, 0, 0, 5, 3, 0});
  // other element types, 0-dim
  CHECK(where(cond, tensor<std::int64_t>({1, 2, 3}), tensor<std::int64_t>({-1})).to_vector() ==
        std::vector<std::int64_t>{1, -1, 3, -1, 2, -1});
  CHECK(where(cond, mask({false}), true).to_vector() == B{false, true, false, true, false, true});
  CHECK(where(scalar_tensor(true), scalar_tensor(1.0), scalar_tensor(2.0)).item() == 1.0);
  auto h = where(mask({true, false}), tensor<float16>({float16(0.5f), float16(0.25f)}), float16(-1.0f));
  CHECK(values(h.cast<float>()) == V{0.5, -1.0});
  CHECK(where(scalar_tensor(false), a, b).shape() == Shape{2, 3});
  CHECK(values(where(scalar_tensor(false), a, b)) == V{10, 20, 30, 10, 20, 30});
}

TEST_CASE("masked_fill values") {
  auto t = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(values(masked_fill(t, mask({false, true, false}), -1.0f)) == V{1, -1, 3, 4, -1, 6});
  CHECK(values(masked_fill(t, mask({true, false}, {2, 1}), 9.0f)) == V{9, 9, 9, 4, 5, 6});
  CHECK(values(masked_fill(t, mask({true, false, false, false, false, true}, {2, 3}), 0.0f)) == V{0, 2, 3, 4, 5, 0});
  CHECK(values(masked_fill(t.transpose(0, 1), mask({true, false}), 0.0f)) == V{0, 4, 0, 5, 0, 6});
  // the mask may also enlarge the result (PyTorch's out-of-place broadcasting)
  auto wide = masked_fill(tensor<float>({1, 2, 3}), mask({true, false}, {2, 1}), 0.0f);
  CHECK(wide.shape() == Shape{2, 3});
  CHECK(values(wide) == V{0, 0, 0, 1, 2, 3});
  CHECK(masked_fill(tensor<std::int32_t>({1, 2}), mask({false, true}), 5).to_vector() == std::vector<std::int32_t>{1, 5});
  const float inf = std::numeric_limits<float>::infinity();
  auto scores = masked_fill(zeros<float>({2, 2}), mask({false, true, false, false}, {2, 2}), -inf);
  CHECK(std::isinf(scores.at({0, 1})));
  CHECK(scores.at({0, 0}) == 0.0f);
  // large: split across threads
  auto big = arange<float>(300 * 500).reshape({300, 500});
  auto cols = lt(arange<float>(500), 250.0f);
  auto filled = masked_fill(big, cols, -1.0f);
  CHECK(filled.at({299, 249}) == -1.0f);
  CHECK(filled.at({299, 250}) == 299.0f * 500 + 250);
  CHECK(filled.at({0, 499}) == 499.0f);
}

TEST_CASE("where and masked_fill gradients") {
  auto cond = mask({true, false, true, true, true, false}, {2, 3});
  auto a = zeros<double>({2, 3}).requires_grad_();
  auto b = zeros<double>({3}).requires_grad_();
  auto y = where(cond, a, b);
  CHECK(y.grad_fn_name() == "where");
  sum(y).backward();
  CHECK(values(a.grad()) == V{1, 0, 1, 1, 1, 0});
  CHECK(values(b.grad()) == V{0, 1, 1});
  auto t = ones<double>({2, 3}).requires_grad_();
  auto f = masked_fill(t, mask({false, true, false}), 0.0);
  CHECK(f.grad_fn_name() == "masked_fill");
  sum(f * tensor<double>({1, 2, 3, 4, 5, 6}, {2, 3})).backward();
  CHECK(values(t.grad()) == V{1, 0, 3, 4, 0, 6});
  // only the tensor side of a scalar where gets a gradient
  auto c = ones<double>({3}).requires_grad_();
  sum(where(mask({true, false, true}), c, 5.0)).backward();
  CHECK(values(c.grad()) == V{1, 0, 1});
  CHECK(!where(cond, zeros<double>({2, 3}), 1.0).requires_grad());
}

TEST_CASE("gradcheck: where and masked_fill with broadcasting") {
  Generator gen(41);
  auto c23 = gt(randn<double>({2, 3}, gen), 0.0);
  auto c3 = mask({true, false, true});
  auto c214 = gt(randn<double>({2, 1, 4}, gen), 0.0);
  auto a = randn<double>({2, 3}, gen);
  auto b = randn<double>({3}, gen);
  auto col = randn<double>({2, 1}, gen);
  auto nc = randn<double>({3, 2}, gen).transpose(0, 1);  // (2x3) non-contiguous
  CHECK_GRADCHECK([c23](const GradInputs& x) { return where(c23, x[0], x[1]); }, {a, b});
  CHECK_GRADCHECK([c3](const GradInputs& x) { return where(c3, x[0], x[1]); }, {col, nc});
  CHECK_GRADCHECK([c214](const GradInputs& x) { return where(c214, x[0], x[1]); }, {randn<double>({3, 1}, gen), b.slice(0, 0, 1)});
  CHECK_GRADCHECK([c23](const GradInputs& x) { return where(c23.transpose(0, 1), x[0], 0.5) * where(c23.transpose(0, 1), 2.0, x[0]); },
                  {nc.transpose(0, 1)});
  CHECK_GRADCHECK([c3](const GradInputs& x) { return masked_fill(x[0], c3, 0.0); }, {nc});
  CHECK_GRADCHECK([](const GradInputs& x) { return masked_fill(x[0], mask({false, true}, {2, 1}), -3.0); }, {b});
  CHECK_GRADCHECK([c214](const GradInputs& x) { return masked_fill(x[0], c214, 1.0); }, {randn<double>({3, 4}, gen)});
}

TEST_CASE("comparison and selection errors") {
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto cond = mask({true, false, true, false, true, false}, {2, 3});
  CHECK_THROWS_WITH_AS(eq(a, tensor<float>({1, 2})), "[eq] shapes cannot be broadcast: (2x3) and (2)", Error);
  CHECK_THROWS_WITH_AS(ge(a, tensor<float>({1, 2}, {1, 2})), "[ge] shapes cannot be broadcast: (2x3) and (1x2)", Error);
  CHECK_THROWS_WITH_AS(logical_or(cond, mask({true, false})), "[logical_or] shapes cannot be broadcast: (2x3) and (2)", Error);
  CHECK_THROWS_WITH_AS(lt(Tensor<float>(), 1.0f), "[lt] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(where(cond, a, tensor<float>({1, 2})), "[where] shapes cannot be broadcast: (2x3), (2x3) and (2)", Error);
  CHECK_THROWS_WITH_AS(where(mask({true, false}), a, a), "[where] shapes cannot be broadcast: (2), (2x3) and (2x3)", Error);
  CHECK_THROWS_WITH_AS(where(cond, tensor<float>({1, 2, 3, 4}), 0.0f), "[where] shapes cannot be broadcast: (2x3), (4) and ()",
                       Error);
  CHECK_THROWS_WITH_AS(where(Tensor<bool>(), a, a), "[where] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(masked_fill(a, mask({true, false}), 0.0f),
                       "[masked_fill] mask of shape (2) cannot be broadcast with the input of shape (2x3)", Error);
  CHECK_THROWS_WITH_AS(masked_fill(a, mask({true, false, true}, {3, 1}), 0.0f),
                       "[masked_fill] mask of shape (3x1) cannot be broadcast with the input of shape (2x3)", Error);
  CHECK_THROWS_WITH_AS(masked_fill(a, Tensor<bool>(), 0.0f), "[masked_fill] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(any(Tensor<bool>()), "[any] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(all(Tensor<bool>()), "[all] undefined tensor argument", Error);
}

}  // namespace test_compare
