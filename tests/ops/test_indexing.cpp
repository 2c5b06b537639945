// cat, stack, index_select, gather and scatter_add: values for each dim position (first,
// middle, last, negative), non-contiguous inputs and indices, bool/int element types,
// repeated indices in backward, gradchecks, large inputs (parallel paths) against plain
// loops, and the error messages for bad input.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/indexing.hpp"
#include "test_util.hpp"

namespace test_indexing {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::values;

namespace {

using V = std::vector<double>;

/// Reference gather for rank 3 through at().
template <class T, class I>
V gather_ref3(const Tensor<T>& t, std::int64_t dim, const Tensor<I>& index) {
  V out;
  for (std::int64_t a = 0; a < index.size(0); ++a)
    for (std::int64_t b = 0; b < index.size(1); ++b)
      for (std::int64_t c = 0; c < index.size(2); ++c) {
        std::int64_t p[3] = {a, b, c};
        p[dim] = static_cast<std::int64_t>(index.at({a, b, c}));
        out.push_back(static_cast<double>(t.at({p[0], p[1], p[2]})));
      }
  return out;
}

/// Reference scatter_add for rank 2 (base and result contiguous, row-major values).
template <class T, class I>
V scatter_add_ref2(const Tensor<T>& base, std::int64_t dim, const Tensor<I>& index, const Tensor<T>& src) {
  V out = values(base.contiguous());
  const std::int64_t cols = base.size(1);
  for (std::int64_t a = 0; a < index.size(0); ++a)
    for (std::int64_t b = 0; b < index.size(1); ++b) {
      std::int64_t p[2] = {a, b};
      p[dim] = static_cast<std::int64_t>(index.at({a, b}));
      out[static_cast<std::size_t>(p[0] * cols + p[1])] += static_cast<double>(src.at({a, b}));
    }
  return out;
}

Tensor<std::int64_t> idx(std::initializer_list<std::int64_t> v, const Shape& shape = {}) {
  return tensor<std::int64_t>(v, shape);
}

}  // namespace

// ---- cat / stack -------------------------------------------------------------------------

TEST_CASE("cat values along first, middle, last and negative dims") {
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto b = tensor<float>({7, 8, 9}, {1, 3});
  auto c = tensor<float>({10, 20}, {2, 1});
  CHECK(cat({tensor<float>({1, 2}), tensor<float>({3, 4, 5})}).shape() == Shape{5});
  CHECK(values(cat({tensor<float>({1, 2}), tensor<float>({3, 4, 5})})) == V{1, 2, 3, 4, 5});
  auto r0 = cat({a, b}, 0);
  CHECK(r0.shape() == Shape{3, 3});
  CHECK(values(r0) == V{1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto r1 = cat({a, c}, 1);
  CHECK(r1.shape() == Shape{2, 4});
  CHECK(values(r1) == V{1, 2, 3, 10, 4, 5, 6, 20});
  CHECK(values(cat({c, a, c}, -1)) == V{10, 1, 2, 3, 10, 20, 4, 5, 6, 20});
  CHECK(values(cat({b, a}, -2)) == V{7, 8, 9, 1, 2, 3, 4, 5, 6});
  // rank 3, middle dim
  auto x = arange<float>(4).reshape({2, 1, 2});
  auto y = arange<float>(10.0, 18.0).reshape({2, 2, 2});
  auto r = cat({x, y}, 1);
  CHECK(r.shape() == Shape{2, 3, 2});
  CHECK(values(r) == V{0, 1, 10, 11, 12, 13, 2, 3, 14, 15, 16, 17});
  CHECK(values(cat({y, x}, -2)) == V{10, 11, 12, 13, 0, 1, 14, 15, 16, 17, 2, 3});
  CHECK(values(cat({x, x}, 2)) == V{0, 1, 0, 1, 2, 3, 2, 3});
  // a single tensor and a tensor with zero extent along dim
  CHECK(values(cat({a})) == values(a));
  auto none = zeros<float>({2, 0});
  CHECK(values(cat({none, c, none}, 1)) == V{10, 20});
  CHECK(cat({none, none}, 1).shape() == Shape{2, 0});
}

TEST_CASE("cat of non-contiguous inputs") {
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto at = a.transpose(0, 1);  // (3x2) [[1,4],[2,5],[3,6]]
  REQUIRE(!at.is_contiguous());
  CHECK(values(cat({at, tensor<float>({7, 8}, {1, 2})}, 0)) == V{1, 4, 2, 5, 3, 6, 7, 8});
  CHECK(values(cat({at, ones<float>({3, 1})}, 1)) == V{1, 4, 1, 2, 5, 1, 3, 6, 1});
  CHECK(values(cat({ones<float>({3, 1}), at, at}, 1)) == V{1, 1, 4, 1, 4, 1, 2, 5, 2, 5, 1, 3, 6, 3, 6});
  auto stepped = arange<float>(8).slice(0, 0, 8, 2);  // 0 2 4 6
  CHECK(values(cat({stepped, stepped.slice(0, 1, 3)})) == V{0, 2, 4, 6, 2, 4});
}

TEST_CASE("cat and stack of bool and integer tensors") {
  auto p = tensor<bool>({true, false});
  auto q = tensor<bool>({false});
  auto r = cat({p, q, p});
  CHECK(r.to_vector() == std::vector<bool>{true, false, false, true, false});
  auto m = tensor<bool>({true, false, false, true}, {2, 2});
  CHECK(cat({m, m.transpose(0, 1)}, 1).to_vector() ==
        std::vector<bool>{true, false, true, false, false, true, false, true});
  CHECK(stack({p, p}, 1).to_vector() == std::vector<bool>{true, true, false, false});
  auto i64 = tensor<std::int64_t>({1, 2, 3, 4}, {2, 2});
  CHECK(cat({i64, tensor<std::int64_t>({9, 9}, {2, 1})}, 1).to_vector() == std::vector<std::int64_t>{1, 2, 9, 3, 4, 9});
  auto i32 = tensor<std::int32_t>({5, 6});
  CHECK(cat({i32, i32}).to_vector() == std::vector<std::int32_t>{5, 6, 5, 6});
  CHECK(stack({i32, i32}, -1).to_vector() == std::vector<std::int32_t>{5, 5, 6, 6});
  auto h = tensor<bfloat16>({bfloat16(1.5f), bfloat16(-2.0f)});
  CHECK(values(cat({h, h.slice(0, 1, 2)}).cast<float>()) == V{1.5, -2.0, -2.0});
}

TEST_CASE("stack values") {
  auto p = tensor<float>({1, 2, 3});
  auto q = tensor<float>({4, 5, 6});
  auto s0 = stack({p, q});
  CHECK(s0.shape() == Shape{2, 3});
  CHECK(values(s0) == V{1, 2, 3, 4, 5, 6});
  auto s1 = stack({p, q}, 1);
  CHECK(s1.shape() == Shape{3, 2});
  CHECK(values(s1) == V{1, 4, 2, 5, 3, 6});
  CHECK(values(stack({p, q}, -1)) == V{1, 4, 2, 5, 3, 6});
  auto A = tensor<float>({1, 2, 3, 4}, {2, 2});
  auto B = tensor<float>({5, 6, 7, 8}, {2, 2});
  CHECK(stack({A, B}, 1).shape() == Shape{2, 2, 2});
  CHECK(values(stack({A, B}, 1)) == V{1, 2, 5, 6, 3, 4, 7, 8});
  CHECK(values(stack({A, B}, 2)) == V{1, 5, 2, 6, 3, 7, 4, 8});
  CHECK(values(stack({A, B}, -3)) == V{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(values(stack({A.transpose(0, 1), B}, 2)) == V{1, 5, 3, 6, 2, 7, 4, 8});
  auto s = stack({scalar_tensor(1.5f), scalar_tensor(2.5f)});
  CHECK(s.shape() == Shape{2});
  CHECK(values(s) == V{1.5, 2.5});
  CHECK(stack({A}).shape() == Shape{1, 2, 2});
}

TEST_CASE("cat and stack backward reach only the inputs that require grad") {
  auto a = tensor<double>({1, 2, 3, 4}, {2, 2}).requires_grad_();
  auto b = tensor<double>({5, 6}, {2, 1});  // constant
  auto w = tensor<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto y = cat({a, b}, 1);
  CHECK(y.grad_fn_name() == "cat");
  sum(y * w).backward();
  CHECK(values(a.grad()) == V{1, 2, 4, 5});
  CHECK(!b.grad().defined());

  auto p = tensor<double>({1, 2}).requires_grad_();
  auto q = tensor<double>({3, 4}).requires_grad_();
  auto s = stack({p, q, p}, 1);  // (2x3)
  CHECK(s.grad_fn_name() == "stack");
  sum(s * w).backward();
  CHECK(values(p.grad()) == V{1 + 3, 4 + 6});
  CHECK(values(q.grad()) == V{2, 5});
  // no recording when nothing requires grad
  CHECK(cat({b, b}).grad_fn_name().empty());
  CHECK(!stack({b, b}).requires_grad());
}

TEST_CASE("gradcheck: cat and stack") {
  Generator gen(11);
  auto a = randn<double>({2, 3}, gen);
  auto b = randn<double>({2, 2}, gen);
  auto c = randn<double>({3, 2}, gen).transpose(0, 1);  // (2x3) non-contiguous
  auto constant = randn<double>({2, 1}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return cat({x[0], x[1]}, 1); }, {a, b});
  CHECK_GRADCHECK([constant](const GradInputs& x) { return cat({x[0], constant, x[1], x[0]}, -1); }, {a, b});
  CHECK_GRADCHECK([](const GradInputs& x) { return cat({x[0], x[1], x[0]}, 0); }, {a, c});
  auto u = randn<double>({2, 3, 4}, gen);
  auto v = randn<double>({2, 1, 4}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return cat({x[1], x[0]}, 1); }, {u, v});
  CHECK_GRADCHECK([](const GradInputs& x) { return stack({x[0], x[1]}, 0); }, {a, c});
  CHECK_GRADCHECK([](const GradInputs& x) { return stack({x[0], x[1], x[0]}, 1); }, {a, c});
  CHECK_GRADCHECK([constant](const GradInputs& x) { return stack({x[0], constant.reshape({1, 2}).expand({2, 2}), x[1]}, -1); },
                  {b, randn<double>({2, 2}, gen).transpose(0, 1)});
}

TEST_CASE("cat and stack on large inputs") {
  auto a = arange<float>(300 * 500).reshape({300, 500});
  auto b = arange<float>(300 * 200).reshape({300, 200});
  auto r = cat({a, b, a.slice(1, 0, 100)}, 1);
  REQUIRE(r.shape() == Shape{300, 800});
  bool ok = true;
  for (std::int64_t i = 0; i < 300 && ok; i += 7)
    for (std::int64_t j = 0; j < 800 && ok; j += 3) {
      const float want = j < 500 ? a.at({i, j}) : j < 700 ? b.at({i, j - 500}) : a.at({i, j - 700});
      ok = r.at({i, j}) == want;
    }
  CHECK(ok);
  auto r0 = cat({a, a.transpose(0, 1).transpose(0, 1), a}, 0);
  CHECK(values(r0.slice(0, 300, 600)) == values(a));
  CHECK(values(r0.slice(0, 600, 900)) == values(a));
  auto s = stack({a, a, a}, 1);
  CHECK(values(s.select(1, 2)) == values(a));
}

TEST_CASE("cat and stack errors") {
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto c = tensor<float>({10, 20}, {2, 1});
  CHECK_THROWS_WITH_AS(cat(std::vector<Tensor<float>>{}), "[cat] expected a non-empty list of tensors", Error);
  CHECK_THROWS_WITH_AS(stack(std::vector<Tensor<float>>{}), "[stack] expected a non-empty list of tensors", Error);
  CHECK_THROWS_WITH_AS(cat({a, tensor<float>({1, 2, 3})}),
                       "[cat] tensor 1 has shape (3) of rank 1 but tensor 0 has shape (2x3) of rank 2", Error);
  CHECK_THROWS_WITH_AS(cat({a, a, c}, 0),
                       "[cat] tensor 2 has shape (2x1) but tensor 0 has shape (2x3): extents must match in every dim "
                       "except dim 0",
                       Error);
  CHECK_THROWS_WITH_AS(cat({a, a.transpose(0, 1)}, -1),
                       "[cat] tensor 1 has shape (3x2) but tensor 0 has shape (2x3): extents must match in every dim "
                       "except dim 1",
                       Error);
  CHECK_THROWS_WITH_AS(cat({a, a}, 2), "[cat] dim 2 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(cat({a, a}, -3), "[cat] dim -3 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(cat({scalar_tensor(1.0f), scalar_tensor(2.0f)}),
                       "[cat] tensor 0 is zero-dimensional and cannot be concatenated (use stack)", Error);
  CHECK_THROWS_WITH_AS(cat({a, Tensor<float>()}), "[cat] tensor 1 is undefined", Error);
  CHECK_THROWS_WITH_AS(stack({a, c}),
                       "[stack] tensor 1 has shape (2x1) but tensor 0 has shape (2x3): stack needs equal shapes", Error);
  CHECK_THROWS_WITH_AS(stack({a, a}, 3), "[stack] dim 3 out of range for a tensor of rank 3", Error);
  CHECK_THROWS_WITH_AS(stack({a, a}, -4), "[stack] dim -4 out of range for a tensor of rank 3", Error);
  CHECK_THROWS_WITH_AS(stack({Tensor<float>(), a}), "[stack] tensor 0 is undefined", Error);
}

// ---- index_select ------------------------------------------------------------------------

TEST_CASE("index_select values") {
  auto t = arange<float>(12).reshape({3, 4});
  auto r0 = index_select(t, 0, idx({2, 0, 2}));
  CHECK(r0.shape() == Shape{3, 4});
  CHECK(values(r0) == V{8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11});
  auto r1 = index_select(t, 1, idx({3, 1}));
  CHECK(r1.shape() == Shape{3, 2});
  CHECK(values(r1) == V{3, 1, 7, 5, 11, 9});
  CHECK(values(index_select(t, -1, tensor<std::int32_t>({3, 1}))) == V{3, 1, 7, 5, 11, 9});
  CHECK(values(index_select(t, -2, tensor<std::int32_t>({1}))) == V{4, 5, 6, 7});
  // rank 3: first, middle and last dims
  auto u = arange<float>(24).reshape({2, 3, 4});
  CHECK(values(index_select(u, 0, idx({1}))) == values(u.select(0, 1)));
  auto m = index_select(u, 1, idx({2, 0}));
  CHECK(m.shape() == Shape{2, 2, 4});
  CHECK(values(m) == V{8, 9, 10, 11, 0, 1, 2, 3, 20, 21, 22, 23, 12, 13, 14, 15});
  CHECK(values(index_select(u, 2, idx({0, 0, 3}))) ==
        V{0, 0, 3, 4, 4, 7, 8, 8, 11, 12, 12, 15, 16, 16, 19, 20, 20, 23});
  // non-contiguous input and index
  auto tt = t.transpose(0, 1);  // (4x3) [[0,4,8],[1,5,9],[2,6,10],[3,7,11]]
  CHECK(values(index_select(tt, 0, idx({1, 1}))) == V{1, 5, 9, 1, 5, 9});
  CHECK(values(index_select(tt, 1, idx({2}))) == V{8, 9, 10, 11});
  auto stepped = idx({2, 9, 0, 9}).slice(0, 0, 4, 2);  // [2, 0] with stride 2
  REQUIRE(!stepped.is_contiguous());
  CHECK(values(index_select(t, 0, stepped)) == V{8, 9, 10, 11, 0, 1, 2, 3});
  CHECK(values(index_select(u.permute({2, 0, 1}), 1, stepped.slice(0, 1, 2))) == values(u.select(0, 0).transpose(0, 1)));
  // empty index, other element types
  CHECK(index_select(t, 0, from_vector<std::int64_t>({}, {0})).shape() == Shape{0, 4});
  auto mask = tensor<bool>({true, false, false}, {3});
  CHECK(index_select(mask, 0, idx({1, 0})).to_vector() == std::vector<bool>{false, true});
  CHECK(index_select(tensor<std::int64_t>({5, 6, 7}), 0, idx({2, 2, 0})).to_vector() == std::vector<std::int64_t>{7, 7, 5});
  CHECK(index_select(t, 0, idx({1})).grad_fn_name().empty());
}

TEST_CASE("index_select backward accumulates repeated indices") {
  auto t = arange<double>(12).reshape({3, 4}).requires_grad_();
  auto y = index_select(t, 0, idx({2, 0, 2}));
  CHECK(y.grad_fn_name() == "index_select");
  sum(y).backward();
  CHECK(values(t.grad()) == V{1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 2});
  t.zero_grad();
  auto w = tensor<double>({1, 10, 100}).reshape({1, 3});
  sum(index_select(t, 1, tensor<std::int32_t>({3, 3, 1})) * w).backward();
  CHECK(values(t.grad()) == V{0, 100, 0, 11, 0, 100, 0, 11, 0, 100, 0, 11});
}

TEST_CASE("gradcheck: index_select") {
  Generator gen(12);
  auto a = randn<double>({4, 3}, gen);
  auto nc = randn<double>({3, 4}, gen).transpose(0, 1);  // (4x3) non-contiguous
  auto u = randn<double>({2, 3, 4}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return index_select(x[0], 0, idx({3, 1, 3, 3})); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return index_select(x[0], 1, idx({2, 0, 2})); }, {nc});
  CHECK_GRADCHECK([](const GradInputs& x) { return index_select(x[0], -1, tensor<std::int32_t>({0, 0})); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return index_select(x[0], 1, idx({1, 2, 1})); }, {u});
  CHECK_GRADCHECK([](const GradInputs& x) { return index_select(x[0].permute({2, 0, 1}), 2, idx({2, 2, 0})); }, {u});
}

TEST_CASE("index_select on large inputs against a loop") {
  Generator gen(13);
  auto t = randn<float>({2000, 64}, gen);
  auto ix = randint<std::int64_t>({3000}, 0, 2000, gen);
  auto r = index_select(t, 0, ix);
  auto rc = index_select(t, 1, randint<std::int32_t>({100}, 0, 64, gen));
  REQUIRE(r.shape() == Shape{3000, 64});
  REQUIRE(rc.shape() == Shape{2000, 100});
  const auto iv = ix.to_vector();
  bool ok = true;
  for (std::int64_t k = 0; k < 3000 && ok; k += 13)
    for (std::int64_t c = 0; c < 64 && ok; ++c) ok = r.at({k, c}) == t.at({iv[static_cast<std::size_t>(k)], c});
  CHECK(ok);
  // backward with many repeats: counts per row
  auto td = zeros<double>({2000, 64}).requires_grad_();
  sum(index_select(td, 0, ix)).backward();
  std::vector<double> counts(2000, 0.0);
  for (auto k : iv) counts[static_cast<std::size_t>(k)] += 1.0;
  CHECK(values(td.grad().select(1, 17)) == counts);
  CHECK(values(td.grad().select(1, 63)) == counts);
  // along the last dim, backward split over rows
  auto tl = zeros<double>({3000, 40}).requires_grad_();
  auto cols = randint<std::int64_t>({50}, 0, 40, gen);
  sum(index_select(tl, 1, cols)).backward();
  std::vector<double> col_counts(40, 0.0);
  for (auto k : cols.to_vector()) col_counts[static_cast<std::size_t>(k)] += 1.0;
  CHECK(values(tl.grad().select(0, 2999)) == col_counts);
  CHECK(values(tl.grad().select(0, 1234)) == col_counts);
}

TEST_CASE("index_select errors") {
  auto t = arange<float>(12).reshape({3, 4});
  CHECK_THROWS_WITH_AS(index_select(t, 0, idx({0, 1}, {1, 2})), "[index_select] index must be 1-D, got shape (1x2)", Error);
  CHECK_THROWS_WITH_AS(index_select(t, 0, Tensor<std::int64_t>::empty(Shape{})),
                       "[index_select] index must be 1-D, got shape ()", Error);
  CHECK_THROWS_WITH_AS(index_select(t, 1, idx({0, 4, 1})),
                       "[index_select] index 4 out of range for dim 1 of extent 4 (input shape (3x4))", Error);
  CHECK_THROWS_WITH_AS(index_select(t, 0, tensor<std::int32_t>({-1})),
                       "[index_select] index -1 out of range for dim 0 of extent 3 (input shape (3x4))", Error);
  CHECK_THROWS_WITH_AS(index_select(t, -1, idx({1, 7, 9})),
                       "[index_select] index 7 out of range for dim 1 of extent 4 (input shape (3x4))", Error);
  CHECK_THROWS_WITH_AS(index_select(zeros<float>({0, 4}), 1, idx({5})),
                       "[index_select] index 5 out of range for dim 1 of extent 4 (input shape (0x4))", Error);
  CHECK_THROWS_WITH_AS(index_select(t, 2, idx({0})), "[index_select] dim 2 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(index_select(Tensor<float>(), 0, idx({0})), "[index_select] undefined tensor argument", Error);
}

// ---- gather ------------------------------------------------------------------------------

TEST_CASE("gather values") {
  auto t = tensor<float>({1, 2, 3, 4}, {2, 2});
  CHECK(values(gather(t, 1, idx({0, 0, 1, 0}, {2, 2}))) == V{1, 1, 4, 3});
  CHECK(values(gather(t, 0, idx({1, 0, 0, 0}, {2, 2}))) == V{3, 2, 1, 2});
  CHECK(values(gather(t, -1, tensor<std::int32_t>({1, 1, 0, 1}, {2, 2}))) == V{2, 2, 3, 4});
  // index smaller than t outside dim, or longer along dim
  auto m = arange<float>(12).reshape({3, 4});
  auto g0 = gather(m, 0, idx({2, 1, 0, 2}, {2, 2}));
  CHECK(g0.shape() == Shape{2, 2});
  CHECK(values(g0) == V{8, 5, 0, 9});
  auto s = arange<float>(6).reshape({2, 3});
  auto g1 = gather(s, 1, idx({0, 1, 2, 2, 0, 1, 1, 1, 0, 2}, {2, 5}));
  CHECK(g1.shape() == Shape{2, 5});
  CHECK(values(g1) == V{0, 1, 2, 2, 0, 4, 4, 4, 3, 5});
  CHECK(values(gather(s, 1, idx({2}, {1, 1}))) == V{2});
  // non-contiguous input and index
  auto st = s.transpose(0, 1);  // (3x2) [[0,3],[1,4],[2,5]]
  CHECK(values(gather(st, 0, idx({2, 0, 1, 1}, {2, 2}))) == V{2, 3, 1, 4});
  auto it = idx({1, 0, 0, 1, 1, 1}, {3, 2}).transpose(0, 1);  // (2x3) [[1,0,1],[0,1,1]]
  CHECK(values(gather(st, 1, it.transpose(0, 1))) == V{3, 0, 1, 4, 5, 5});
  CHECK(values(gather(s, 0, it)) == V{3, 1, 5, 0, 4, 5});
  // other element types, empty index
  CHECK(gather(tensor<bool>({true, false, false, true}, {2, 2}), 1, idx({1, 1, 0, 1}, {2, 2})).to_vector() ==
        std::vector<bool>{false, false, false, true});
  CHECK(gather(tensor<std::int32_t>({4, 5, 6}), 0, idx({2, 0})).to_vector() == std::vector<std::int32_t>{6, 4});
  CHECK(gather(s, 1, from_vector<std::int64_t>({}, {2, 0})).shape() == Shape{2, 0});
}

TEST_CASE("gather on rank 3 against a loop, every dim and layout") {
  Generator gen(21);
  auto t = randn<double>({3, 4, 5}, gen);
  auto tp = randn<double>({5, 3, 4}, gen).permute({1, 2, 0});  // (3x4x5) non-contiguous
  REQUIRE(!tp.is_contiguous());
  const Shape ishapes[3] = {{6, 3, 2}, {2, 7, 3}, {3, 2, 8}};
  for (std::int64_t dim = 0; dim < 3; ++dim) {
    CAPTURE(dim);
    auto index = randint<std::int64_t>(ishapes[dim], 0, t.size(dim), gen);
    CHECK(values(gather(t, dim, index)) == gather_ref3(t, dim, index));
    CHECK(values(gather(tp, dim - 3, index)) == gather_ref3(tp, dim, index));
    auto i32 = randint<std::int32_t>({ishapes[dim][2], ishapes[dim][1], ishapes[dim][0]}, 0, t.size(dim), gen).permute({2, 1, 0});
    CHECK(values(gather(tp, dim, i32)) == gather_ref3(tp, dim, i32));
  }
  // large: parallel paths, gather along each dim of a matrix
  auto big = randn<float>({64, 1000}, gen);
  auto i0 = randint<std::int64_t>({64, 1000}, 0, 64, gen);
  auto i1 = randint<std::int64_t>({64, 1000}, 0, 1000, gen);
  auto r0 = gather(big, 0, i0), r1 = gather(big, 1, i1);
  bool ok = true;
  for (std::int64_t a = 0; a < 64 && ok; ++a)
    for (std::int64_t b = 0; b < 1000 && ok; b += 7)
      ok = r0.at({a, b}) == big.at({i0.at({a, b}), b}) && r1.at({a, b}) == big.at({a, i1.at({a, b})});
  CHECK(ok);
}

TEST_CASE("gather backward accumulates repeated indices") {
  auto t = zeros<double>({2, 3}).requires_grad_();
  auto y = gather(t, 1, idx({0, 0, 2, 1, 1, 1}, {2, 3}));
  CHECK(y.grad_fn_name() == "gather");
  sum(y).backward();
  CHECK(values(t.grad()) == V{2, 0, 1, 0, 3, 0});
  t.zero_grad();
  sum(gather(t, 0, idx({1, 1, 1, 1}, {2, 2})) * tensor<double>({1, 2, 3, 4}, {2, 2})).backward();
  CHECK(values(t.grad()) == V{0, 0, 0, 4, 6, 0});
}

TEST_CASE("gradcheck: gather") {
  Generator gen(22);
  auto a = randn<double>({3, 4}, gen);
  auto nc = randn<double>({4, 3}, gen).transpose(0, 1);  // (3x4) non-contiguous
  auto u = randn<double>({2, 3, 4}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return gather(x[0], 0, idx({2, 2, 0, 1, 2, 2, 2, 0}, {2, 4})); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return gather(x[0], 1, idx({3, 3, 3, 0, 1, 0}, {3, 2})); }, {nc});
  CHECK_GRADCHECK([](const GradInputs& x) { return gather(x[0], -1, tensor<std::int32_t>({1, 1, 1, 1, 1}, {1, 5})); }, {a});
  auto i3 = randint<std::int64_t>({2, 5, 3}, 0, 3, gen);
  CHECK_GRADCHECK([i3](const GradInputs& x) { return gather(x[0], 1, i3); }, {u});
  auto i3b = randint<std::int64_t>({2, 3, 6}, 0, 4, gen);
  CHECK_GRADCHECK([i3b](const GradInputs& x) { return gather(x[0].permute({0, 1, 2}), 2, i3b.transpose(0, 2).transpose(0, 2)); }, {u});
}

TEST_CASE("gather errors") {
  auto s = arange<float>(6).reshape({2, 3});
  CHECK_THROWS_WITH_AS(gather(s, 1, idx({0, 1})), "[gather] index of shape (2) must have the same rank as the input of shape (2x3)",
                       Error);
  CHECK_THROWS_WITH_AS(gather(s, 1, idx({0, 5, 3, 1}, {2, 2})),
                       "[gather] index 5 out of range for dim 1 of extent 3 (input shape (2x3))", Error);
  CHECK_THROWS_WITH_AS(gather(s, 0, tensor<std::int32_t>({0, -2}, {1, 2})),
                       "[gather] index -2 out of range for dim 0 of extent 2 (input shape (2x3))", Error);
  CHECK_THROWS_WITH_AS(gather(s, 1, idx({0, 0, 0}, {3, 1})),
                       "[gather] index of shape (3x1) is larger than the input of shape (2x3) in dim 0 (only dim 1 may be "
                       "larger)",
                       Error);
  CHECK_THROWS_WITH_AS(gather(s, 2, idx({0}, {1, 1})), "[gather] dim 2 out of range for a tensor of rank 2", Error);
  // the error is found in the parallel path too
  auto big = zeros<float>({64, 1000});
  auto bad = zeros<std::int64_t>({64, 1000});
  bad.data()[40000] = 1000;
  CHECK_THROWS_WITH_AS(gather(big, 1, bad), "[gather] index 1000 out of range for dim 1 of extent 1000 (input shape (64x1000))",
                       Error);
}

// ---- scatter_add -------------------------------------------------------------------------

TEST_CASE("scatter_add values") {
  // dim 0, index smaller than src
  auto r = scatter_add(zeros<float>({3, 5}), 0, idx({0, 1, 2, 0, 0}, {1, 5}), ones<float>({2, 5}));
  CHECK(values(r) == V{1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0});
  auto r2 = scatter_add(zeros<float>({3, 5}), 0, idx({0, 1, 2, 0, 0, 1, 2, 0, 0, 0}, {2, 5}), ones<float>({2, 5}));
  CHECK(values(r2) == V{1, 0, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0});
  // dim 1 (and -1), base kept
  auto src = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(values(scatter_add(ones<float>({2, 3}), 1, idx({0, 0, 2, 1, 1, 1}, {2, 3}), src)) == V{4, 1, 4, 1, 16, 1});
  CHECK(values(scatter_add(zeros<float>({2, 4}), -1, tensor<std::int32_t>({3, 0}, {1, 2}), src)) == V{2, 0, 0, 1, 0, 0, 0, 0});
  // non-contiguous base, index and src
  auto base = arange<float>(6).reshape({3, 2}).transpose(0, 1);  // (2x3) [[0,2,4],[1,3,5]]
  auto it = idx({2, 0, 0, 2}, {2, 2}).transpose(0, 1);          // [[2,0],[0,2]]
  auto sr = tensor<float>({10, 20, 30, 40}, {2, 2}).transpose(0, 1);  // [[10,30],[20,40]]
  CHECK(values(scatter_add(base, 1, it, sr)) == V{30, 2, 14, 21, 3, 45});
  CHECK(values(scatter_add(base, 1, it, sr)) == scatter_add_ref2(base, 1, it, sr));
  // integer elements
  CHECK(scatter_add(zeros<std::int64_t>({3}), 0, idx({2, 2, 0}), tensor<std::int64_t>({1, 2, 3})).to_vector() ==
        std::vector<std::int64_t>{3, 0, 3});
  auto out = scatter_add(zeros<float>({2, 2}), 0, from_vector<std::int64_t>({}, {0, 2}), ones<float>({1, 2}));
  CHECK(values(out) == V{0, 0, 0, 0});
}

TEST_CASE("scatter_add on large inputs against a loop (both parallel splits)") {
  Generator gen(31);
  auto base = randint<std::int64_t>({64, 1000}, -5, 5, gen);
  auto src = randint<std::int64_t>({64, 1000}, -50, 50, gen);
  auto i0 = randint<std::int64_t>({64, 1000}, 0, 64, gen);     // dim 0: split over columns
  auto i1 = randint<std::int64_t>({64, 1000}, 0, 1000, gen);   // dim 1: split over rows
  CHECK(values(scatter_add(base, 0, i0, src)) == scatter_add_ref2(base, 0, i0, src));
  CHECK(values(scatter_add(base, 1, i1, src)) == scatter_add_ref2(base, 1, i1, src));
  auto few = randint<std::int64_t>({4000, 3}, 0, 3, gen);  // dim 1 with many rows
  auto fsrc = randint<std::int64_t>({4000, 3}, -9, 9, gen);
  auto fbase = zeros<std::int64_t>({4000, 3});
  CHECK(values(scatter_add(fbase, 1, few, fsrc)) == scatter_add_ref2(fbase, 1, few, fsrc));
  auto one = randint<std::int64_t>({1, 50000}, 0, 7, gen);  // dim 0 from one row into seven
  auto osrc = randint<std::int64_t>({1, 50000}, -9, 9, gen);
  auto obase = zeros<std::int64_t>({7, 50000});
  CHECK(values(scatter_add(obase, 0, one, osrc)) == scatter_add_ref2(obase, 0, one, osrc));
}

TEST_CASE("gradcheck: scatter_add with respect to base and src") {
  Generator gen(32);
  auto base = randn<double>({3, 4}, gen);
  auto src = randn<double>({2, 5}, gen);  // larger than the index in both dims
  auto i0 = idx({2, 2, 0, 1, 0, 2, 1, 1}, {2, 4});
  auto i1 = idx({3, 3, 0, 1, 1, 1}, {2, 3});
  CHECK_GRADCHECK([i0](const GradInputs& x) { return scatter_add(x[0], 0, i0, x[1]); }, {base, src});
  CHECK_GRADCHECK([i1](const GradInputs& x) { return scatter_add(x[0], -1, i1, x[1]); }, {base, src});
  auto nsrc = randn<double>({4, 3}, gen).transpose(0, 1);  // (3x4) non-contiguous
  CHECK_GRADCHECK([i1](const GradInputs& x) { return scatter_add(x[0], 1, i1, x[1]); }, {base.transpose(0, 1).transpose(0, 1), nsrc});
  // gather's gradient is itself differentiable through scatter_add
  auto t = zeros<double>({3}).requires_grad_();
  auto s = tensor<double>({1, 2, 3, 4}).requires_grad_();
  auto y = scatter_add(t, 0, idx({0, 0, 2, 0}), s);
  CHECK(y.grad_fn_name() == "scatter_add");
  CHECK(values(y) == V{7, 0, 3});
  sum(y * tensor<double>({1, 10, 100})).backward();
  CHECK(values(t.grad()) == V{1, 10, 100});
  CHECK(values(s.grad()) == V{1, 1, 100, 1});
}

TEST_CASE("scatter_add errors") {
  auto base = zeros<float>({2, 3});
  auto src = ones<float>({2, 3});
  CHECK_THROWS_WITH_AS(scatter_add(base, 0, idx({0, 1}), src),
                       "[scatter_add] base (2x3), index (2) and src (2x3) must have the same rank", Error);
  CHECK_THROWS_WITH_AS(scatter_add(base, 0, idx({0, 1}, {1, 2}), ones<float>({2})),
                       "[scatter_add] base (2x3), index (1x2) and src (2) must have the same rank", Error);
  CHECK_THROWS_WITH_AS(scatter_add(base, 0, idx({0, 0, 0, 0}, {1, 4}), ones<float>({2, 5})),
                       "[scatter_add] index of shape (1x4) is larger than base of shape (2x3) in dim 1 (only dim 0 may be "
                       "larger)",
                       Error);
  CHECK_THROWS_WITH_AS(scatter_add(base, 1, idx({0, 0, 0, 0}, {1, 4}), src),
                       "[scatter_add] index of shape (1x4) is larger than src of shape (2x3) in dim 1", Error);
  CHECK_THROWS_WITH_AS(scatter_add(base, 1, idx({0, 3, 1}, {1, 3}), src),
                       "[scatter_add] index 3 out of range for dim 1 of extent 3 (base shape (2x3))", Error);
  CHECK_THROWS_WITH_AS(scatter_add(base, 0, tensor<std::int32_t>({0, -1, 1}, {1, 3}), src),
                       "[scatter_add] index -1 out of range for dim 0 of extent 2 (base shape (2x3))", Error);
  CHECK_THROWS_WITH_AS(scatter_add(base, -3, idx({0}, {1, 1}), src), "[scatter_add] dim -3 out of range for a tensor of rank 2",
                       Error);
}

}  // namespace test_indexing
