// amax/amin, max/min (values + indices), argmax/argmin and logsumexp: values against plain
// double loops, ties, NaN and -inf handling, integer types, gradchecks over several dims
// (keepdim, non-contiguous inputs), the tie-splitting gradient of amax, and error messages.
// Also the vectorised sum path of the reduce kernel.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "condense/core/factories.hpp"
#include "condense/ops/reduce.hpp"
#include "test_util.hpp"

namespace test_reduce {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::values;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Reference reduction of a row-major (A x B x C) buffer over the masked dims with `fold`
/// (an associative fold from `init`); returns the kept dims in row-major order.
std::vector<double> reference_reduce(const std::vector<double>& v, std::int64_t A, std::int64_t B, std::int64_t C,
                                     std::array<bool, 3> red, double init,
                                     const std::function<double(double, double)>& fold) {
  const std::int64_t ka = red[0] ? 1 : A, kb = red[1] ? 1 : B, kc = red[2] ? 1 : C;
  std::vector<double> out(static_cast<std::size_t>(ka * kb * kc), init);
  for (std::int64_t a = 0; a < A; ++a)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t o = ((red[0] ? 0 : a) * kb + (red[1] ? 0 : b)) * kc + (red[2] ? 0 : c);
        auto& acc = out[static_cast<std::size_t>(o)];
        acc = fold(acc, v[static_cast<std::size_t>((a * B + b) * C + c)]);
      }
  return out;
}

}  // namespace

TEST_CASE("reduce: amax and amin values over dims against plain loops") {
  Generator gen(11);
  const auto t = randn<double>({3, 4, 5}, gen);
  const auto v = t.to_vector();
  const auto mx = [](double a, double b) { return std::max(a, b); };
  const auto mn = [](double a, double b) { return std::min(a, b); };
  CHECK(values(amax(t, {2})) == reference_reduce(v, 3, 4, 5, {false, false, true}, -kInf, mx));
  CHECK(values(amax(t, {0})) == reference_reduce(v, 3, 4, 5, {true, false, false}, -kInf, mx));
  CHECK(values(amax(t, {0, 2})) == reference_reduce(v, 3, 4, 5, {true, false, true}, -kInf, mx));
  CHECK(values(amin(t, {-2})) == reference_reduce(v, 3, 4, 5, {false, true, false}, kInf, mn));
  CHECK(values(amin(t, {1, 2}, true)) == reference_reduce(v, 3, 4, 5, {false, true, true}, kInf, mn));
  CHECK(amin(t, {1, 2}, true).shape() == Shape{3, 1, 1});
  CHECK(amax(t).shape() == Shape{});
  CHECK(amax(t).item() == reference_reduce(v, 3, 4, 5, {true, true, true}, -kInf, mx)[0]);
  CHECK(amin(t).item() == reference_reduce(v, 3, 4, 5, {true, true, true}, kInf, mn)[0]);
  // non-contiguous input: the same values as the contiguous copy
  const auto tt = t.transpose(0, 2);
  CHECK(values(amax(tt, {1})) == values(amax(tt.contiguous(), {1})));
  CHECK(values(amin(tt, {0, 2})) == values(amin(tt.contiguous(), {0, 2})));
  // long contiguous rows use the vectorised block path
  const auto big = randn<float>({7, 1000}, gen);
  const auto bv = big.to_vector();
  for (std::int64_t r = 0; r < 7; ++r) {
    float m = -INFINITY;
    for (std::int64_t j = 0; j < 1000; ++j) m = std::max(m, bv[static_cast<std::size_t>(r * 1000 + j)]);
    CHECK(amax(big, {1}).to_vector()[static_cast<std::size_t>(r)] == m);
  }
}

TEST_CASE("reduce: amax/amin on integer tensors and NaN propagation") {
  const auto i32 = tensor<std::int32_t>({3, -7, 9, 9, 0, -2}, {2, 3});
  CHECK(values(amax(i32, {1})) == std::vector<double>{9, 9});
  CHECK(values(amin(i32, {0})) == std::vector<double>{3, -7, -2});
  const auto i64 = tensor<std::int64_t>({std::numeric_limits<std::int64_t>::min(), 5, -1});
  CHECK(amax(i64).item() == 5);
  CHECK(amin(i64).item() == std::numeric_limits<std::int64_t>::min());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto f = tensor<double>({1, nan, 3, 4, 5, 6}, {2, 3});
  const auto m = values(amax(f, {1}));
  CHECK(std::isnan(m[0]));
  CHECK(m[1] == 6);
  CHECK(std::isnan(values(amin(f, {1}))[0]));
  // NaN in a long contiguous row (block path)
  auto row = zeros<float>({1, 100});
  row.data()[57] = NAN;
  CHECK(std::isnan(amax(row, {1}).item()));
  CHECK(std::isnan(amin(row).item()));
}

TEST_CASE("reduce: amax gradient splits evenly among ties") {
  auto x = tensor<double>({1, 3, 3, 2, 5, 5, 5, 0}, {2, 4}).requires_grad_();
  auto y = amax(x, {1});
  CHECK(y.grad_fn_name() == "amax");
  y.backward(tensor<double>({6.0, 3.0}));
  CHECK(values(x.grad()) == std::vector<double>{0, 3, 3, 0, 1, 1, 1, 0});
  auto z = tensor<double>({2, -1, 2, -1}, {2, 2}).requires_grad_();
  sum(amin(z)).backward();  // two ties among four elements
  CHECK(values(z.grad()) == std::vector<double>{0, 0.5, 0, 0.5});
  auto w = tensor<double>({4, 4, 1, 4}, {2, 2}).requires_grad_();
  amax(w, {0}, true).backward(tensor<double>({2.0, 8.0}, {1, 2}));
  CHECK(values(w.grad()) == std::vector<double>{2, 4, 0, 4});
}

TEST_CASE("reduce: gradcheck amax and amin") {
  Generator gen(12);
  const auto a = randn<double>({3, 4, 5}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return amax(x[0], {2}); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return amax(x[0], {0}, true); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return amin(x[0], {0, 2}); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return amin(x[0]); }, {a});
  const auto nc = randn<double>({5, 4}, gen).transpose(0, 1);
  REQUIRE(!nc.is_contiguous());
  CHECK_GRADCHECK([](const GradInputs& x) { return amax(x[0], {1}, true) * 2.0; }, {nc});
  CHECK_GRADCHECK([](const GradInputs& x) { return amin(x[0], {0}); }, {nc});
}

TEST_CASE("reduce: max and min return values and first indices") {
  const auto t = tensor<float>({1, 5, 5, 2, 7, 0, 7, 7, 3, 3, 3, 3}, {3, 4});
  const auto r = max(t, 1);
  CHECK(values(r.values) == std::vector<double>{5, 7, 3});
  CHECK(values(r.indices) == std::vector<double>{1, 0, 0});
  const auto c = min(t, 0, true);
  CHECK(c.values.shape() == Shape{1, 4});
  CHECK(c.indices.shape() == Shape{1, 4});
  CHECK(values(c.values) == std::vector<double>{1, 0, 3, 2});
  CHECK(values(c.indices) == std::vector<double>{0, 1, 2, 0});
  const auto r0 = max(t, -2);
  CHECK(values(r0.values) == std::vector<double>{7, 5, 7, 7});
  CHECK(values(r0.indices) == std::vector<double>{1, 0, 1, 1});
  // against a plain loop on a random 3-D tensor, reducing the middle dim of a transposed view
  Generator gen(13);
  const auto u = randn<double>({4, 6, 5}, gen).transpose(0, 2);  // (5x6x4)
  const auto m = max(u, 1);
  const auto uv = u.contiguous().to_vector();
  const auto mv = values(m.values), mi = values(m.indices);
  for (std::int64_t a = 0; a < 5; ++a)
    for (std::int64_t c = 0; c < 4; ++c) {
      double best = -kInf;
      std::int64_t at = 0;
      for (std::int64_t b = 0; b < 6; ++b)
        if (uv[static_cast<std::size_t>((a * 6 + b) * 4 + c)] > best) best = uv[static_cast<std::size_t>((a * 6 + b) * 4 + c)], at = b;
      CHECK(mv[static_cast<std::size_t>(a * 4 + c)] == best);
      CHECK(mi[static_cast<std::size_t>(a * 4 + c)] == at);
    }
  // integer types
  const auto i = tensor<std::int64_t>({4, 9, 9, -3}, {2, 2});
  CHECK(values(max(i, 1).values) == std::vector<double>{9, 9});
  CHECK(values(max(i, 1).indices) == std::vector<double>{1, 0});
  CHECK(values(min(tensor<std::int32_t>({2, 2, 1, 1}), 0).indices) == std::vector<double>{2});
  // NaN wins, at its first position
  const auto n = tensor<double>({1, NAN, 9, NAN});
  CHECK(std::isnan(max(n, 0).values.item()));
  CHECK(max(n, 0).indices.item() == 1);
  CHECK(min(n, 0).indices.item() == 1);
  // a scalar has one position
  const auto s = scalar_tensor<double>(2.5);
  CHECK(max(s, 0).values.item() == 2.5);
  CHECK(max(s, -1).indices.item() == 0);
  CHECK(max(s, 0).values.shape() == Shape{});
}

TEST_CASE("reduce: max/min gradient goes to the first extreme position") {
  auto x = tensor<double>({1, 5, 5, 2, 7, 0}, {2, 3}).requires_grad_();
  auto r = max(x, 1);
  CHECK(r.values.grad_fn_name() == "max");
  CHECK(!r.indices.requires_grad());
  r.values.backward(tensor<double>({10.0, 20.0}));
  CHECK(values(x.grad()) == std::vector<double>{0, 10, 0, 0, 20, 0});
  auto y = tensor<double>({3, 1, 1, 3}, {2, 2}).requires_grad_();
  min(y, 0, true).values.backward(tensor<double>({1.0, 2.0}, {1, 2}));
  CHECK(values(y.grad()) == std::vector<double>{0, 2, 1, 0});

  Generator gen(14);
  const auto a = randn<double>({3, 4, 5}, gen);
  CHECK_GRADCHECK([](const GradInputs& v) { return max(v[0], 2).values; }, {a});
  CHECK_GRADCHECK([](const GradInputs& v) { return max(v[0], 0, true).values; }, {a});
  CHECK_GRADCHECK([](const GradInputs& v) { return min(v[0], 1).values * 3.0; }, {a});
  const auto nc = randn<double>({6, 4}, gen).slice(0, 0, 6, 2).transpose(0, 1);  // (4x3), strided
  REQUIRE(!nc.is_contiguous());
  CHECK_GRADCHECK([](const GradInputs& v) { return max(v[0], 1).values; }, {nc});
  CHECK_GRADCHECK([](const GradInputs& v) { return min(v[0], 0, true).values; }, {nc});
}

TEST_CASE("reduce: argmax and argmin, per dim and flattened") {
  const auto t = tensor<double>({0, 4, 4, 1, 9, 2, 9, -5, 3}, {3, 3});
  CHECK(values(argmax(t, 1)) == std::vector<double>{1, 1, 0});
  CHECK(values(argmax(t, 0)) == std::vector<double>{2, 1, 0});
  CHECK(values(argmin(t, 1)) == std::vector<double>{0, 0, 1});
  CHECK(argmax(t, 1, true).shape() == Shape{3, 1});
  CHECK(argmax(t).shape() == Shape{});
  CHECK(argmax(t).item() == 4);  // first of the two 9s in row-major order
  CHECK(argmin(t).item() == 7);
  // flattened argmax of a non-contiguous view counts in the view's row-major order
  const auto tt = t.transpose(0, 1);  // [[0,1,9],[4,9,-5],[4,2,3]]
  CHECK(argmax(tt).item() == 2);
  CHECK(argmin(tt).item() == 5);
  CHECK(values(argmax(tt, 1)) == std::vector<double>{2, 1, 0});
  CHECK(argmax(tensor<std::int32_t>({-4, 6, 6, 1})).item() == 1);
  CHECK(argmin(tensor<std::int64_t>({5, 2, 8, 1}, {2, 2}), 0).to_vector() == std::vector<std::int64_t>{0, 1});
  CHECK(argmax(tensor<float>({1, NAN, 3})).item() == 1);
  CHECK(argmax(tensor<float>({-INFINITY, -INFINITY})).item() == 0);
}

TEST_CASE("reduce: empty reductions and bad dims throw") {
  const auto e = zeros<float>({2, 0});
  CHECK_THROWS_WITH_AS(max(e, 1), "[max] cannot reduce over dim 1 of extent 0 in shape (2x0)", Error);
  CHECK_THROWS_WITH_AS(min(e, -1), "[min] cannot reduce over dim 1 of extent 0 in shape (2x0)", Error);
  CHECK_THROWS_WITH_AS(argmax(e, 1), "[argmax] cannot reduce over dim 1 of extent 0 in shape (2x0)", Error);
  CHECK_THROWS_WITH_AS(argmin(e), "[argmin] cannot reduce a tensor with no elements (shape (2x0))", Error);
  CHECK_THROWS_WITH_AS(amax(e), "[amax] cannot reduce over dim 1 of extent 0 in shape (2x0)", Error);
  CHECK_THROWS_WITH_AS(amin(e, {1}), "[amin] cannot reduce over dim 1 of extent 0 in shape (2x0)", Error);
  // reducing a non-empty dim of an empty tensor is fine
  CHECK(max(e, 0).values.shape() == Shape{0});
  CHECK(amax(e, {0}).shape() == Shape{0});
  const auto t = zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(max(t, 2), "[max] dim 2 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(argmin(t, -3), "[argmin] dim -3 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(amax(t, {0, -2}), "[amax] dim 0 listed twice for shape (2x3)", Error);
  CHECK_THROWS_WITH_AS(logsumexp(t, {5}), "[logsumexp] dim 5 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(max(scalar_tensor<float>(1.0f), 1), "[max] dim 1 out of range for a tensor of rank 1", Error);
  CHECK_THROWS_WITH_AS(amax(Tensor<float>()), "[amax] undefined tensor argument", Error);
}

TEST_CASE("reduce: logsumexp values, stability and infinities") {
  Generator gen(15);
  const auto t = randn<double>({3, 4, 5}, gen);
  const auto v = t.to_vector();
  // plain double loop: log(sum(exp)) without a shift is accurate for these small values
  const auto direct = [&](std::array<bool, 3> red) {
    auto s = reference_reduce(v, 3, 4, 5, red, 0.0, [](double a, double b) { return a + std::exp(b); });
    for (auto& x : s) x = std::log(x);
    return s;
  };
  const auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!(std::abs(a[i] - b[i]) <= 1e-12 * (1 + std::abs(b[i])))) return false;
    return true;
  };
  CHECK(close(values(logsumexp(t, {2})), direct({false, false, true})));
  CHECK(close(values(logsumexp(t, {0})), direct({true, false, false})));
  CHECK(close(values(logsumexp(t, {0, 2}, true)), direct({true, false, true})));
  CHECK(logsumexp(t, {0, 2}, true).shape() == Shape{1, 4, 1});
  CHECK(close(values(logsumexp(t)), direct({true, true, true})));
  CHECK(close(values(logsumexp(t.transpose(0, 2), {1})), values(logsumexp(t, {1}).transpose(0, 1))));
  // stable for large magnitudes: log(e^1000 + e^1000) = 1000 + log 2
  const auto big = tensor<float>({1000, 1000, -1000, -1000}, {2, 2});
  const auto lb = values(logsumexp(big, {1}));
  CHECK(lb[0] == doctest::Approx(1000 + std::log(2.0)).epsilon(1e-6));
  CHECK(lb[1] == doctest::Approx(-1000 + std::log(2.0)).epsilon(1e-6));
  // a row of all -inf gives -inf (not NaN); partly -inf rows ignore the -inf entries
  const auto inf_rows = tensor<double>({-kInf, -kInf, -kInf, 0.0, -kInf, 0.0}, {2, 3});
  const auto li = values(logsumexp(inf_rows, {1}));
  CHECK(li[0] == -kInf);
  CHECK(li[1] == doctest::Approx(std::log(2.0)));
  CHECK(logsumexp(tensor<double>({1.0, kInf})).item() == kInf);
  CHECK(std::isnan(logsumexp(tensor<double>({1.0, NAN})).item()));
  // reducing an empty dim gives -inf (log of an empty sum)
  CHECK(values(logsumexp(zeros<double>({2, 0}), {1})) == std::vector<double>{-kInf, -kInf});
}

TEST_CASE("reduce: logsumexp gradients") {
  Generator gen(16);
  const auto a = randn<double>({3, 4, 5}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return logsumexp(x[0], {2}); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return logsumexp(x[0], {0}, true); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return logsumexp(x[0], {0, 2}); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return logsumexp(x[0]); }, {a});
  const auto nc = randn<double>({5, 4}, gen).transpose(0, 1);
  CHECK_GRADCHECK([](const GradInputs& x) { return logsumexp(x[0], {1}, true); }, {nc});
  CHECK_GRADCHECK([](const GradInputs& x) { return logsumexp(x[0], {0}); }, {nc});
  // the gradient is the softmax of the row; rows of all -inf get zeros
  auto x = tensor<double>({0.0, std::log(3.0), -kInf, -kInf}, {2, 2}).requires_grad_();
  logsumexp(x, {1}).backward(tensor<double>({2.0, 5.0}));
  const auto g = values(x.grad());
  CHECK(g[0] == doctest::Approx(0.5));
  CHECK(g[1] == doctest::Approx(1.5));
  CHECK(g[2] == 0.0);
  CHECK(g[3] == 0.0);
}

TEST_CASE("reduce: sum over contiguous rows matches a double loop") {
  Generator gen(17);
  const auto t = randn<float>({33, 1000}, gen);
  const auto v = t.to_vector();
  const auto s = values(sum(t, {1}));
  for (std::size_t r = 0; r < 33; ++r) {
    double ref = 0;
    for (std::size_t j = 0; j < 1000; ++j) ref += v[r * 1000 + j];
    CHECK(s[r] == doctest::Approx(ref).epsilon(1e-5));
  }
  const auto i = arange<std::int32_t>(1000).reshape({10, 100});
  CHECK(values(sum(i, {1}))[9] == 99 * 100 / 2 + 900 * 100);
}

}  // namespace test_reduce
