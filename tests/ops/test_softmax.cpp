// softmax and log_softmax: values against a plain double loop along every dim (the row
// path, the blocked strided path for inner >= 16 and the transposed path for small inner),
// strided inputs, stability for large values, rows of all -inf, scalars and empty
// tensors, the fused backward against its formula, gradchecks, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "condense/backend/cpu/reduce.hpp"
#include "condense/core/factories.hpp"
#include "condense/ops/softmax.hpp"
#include "test_util.hpp"

namespace test_softmax {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::values;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// softmax (or log_softmax) of a contiguous tensor along `dim`, by a plain double loop.
template <Element T>
std::vector<double> reference_softmax(const Tensor<T>& t, std::int64_t dim, bool log) {
  const auto v = values(t.contiguous());
  const Shape& s = t.shape();
  std::int64_t outer = 1, inner = 1;
  for (std::int64_t i = 0; i < dim; ++i) outer *= s[static_cast<std::size_t>(i)];
  for (std::size_t i = static_cast<std::size_t>(dim) + 1; i < s.size(); ++i) inner *= s[i];
  const std::int64_t n = s[static_cast<std::size_t>(dim)];
  std::vector<double> out(v.size());
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t i = 0; i < inner; ++i) {
      auto at = [&](std::int64_t k) { return static_cast<std::size_t>((o * n + k) * inner + i); };
      double m = -kInf;
      for (std::int64_t k = 0; k < n; ++k) m = std::max(m, v[at(k)]);
      double sum = 0;
      for (std::int64_t k = 0; k < n; ++k) sum += std::exp(v[at(k)] - m);
      for (std::int64_t k = 0; k < n; ++k) out[at(k)] = log ? v[at(k)] - m - std::log(sum) : std::exp(v[at(k)] - m) / sum;
    }
  return out;
}

bool close(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(std::abs(a[i] - b[i]) <= tol * (1 + std::abs(b[i])))) return false;
  return true;
}

}  // namespace

TEST_CASE("softmax: values along every dim and every kernel path") {
  Generator gen(31);
  // (4x5x3): dim 2 -> rows, dim 1 -> inner 3 (transposed path), dim 0 -> inner 15
  // (4x20x17): dim 1 -> inner 17 (blocked strided path), (2x7x300): two inner blocks
  for (const Shape& shape : {Shape{4, 5, 3}, Shape{4, 20, 17}, Shape{2, 7, 300}, Shape{3, 1000}}) {
    const auto t = randn<double>(shape, gen) * 3.0;
    for (std::int64_t d = 0; d < t.dim(); ++d) {
      CAPTURE(shape);
      CAPTURE(d);
      CHECK(close(values(softmax(t, d)), reference_softmax(t, d, false), 1e-13));
      CHECK(close(values(log_softmax(t, d)), reference_softmax(t, d, true), 1e-13));
      const auto tf = t.cast<float>();
      CHECK(close(values(softmax(tf, d)), reference_softmax(tf, d, false), 2e-6));
      CHECK(close(values(log_softmax(tf, d)), reference_softmax(tf, d, true), 2e-6));
    }
  }
  const auto t = randn<double>({3, 4}, gen);
  CHECK(values(softmax(t, -1)) == values(softmax(t, 1)));
  CHECK(values(log_softmax(t, -2)) == values(log_softmax(t, 0)));
  // rows sum to one
  const auto s = values(sum(softmax(randn<float>({64, 513}, gen), 1), {1}));
  for (double v : s) CHECK(v == doctest::Approx(1.0).epsilon(1e-5));
  // hand-computed: softmax([0, log 3]) = [1/4, 3/4]
  const auto h = values(softmax(tensor<double>({0.0, std::log(3.0)}), 0));
  CHECK(h[0] == doctest::Approx(0.25));
  CHECK(h[1] == doctest::Approx(0.75));
}

TEST_CASE("softmax: strided inputs equal their contiguous copies") {
  Generator gen(32);
  const auto base = randn<double>({6, 5, 20}, gen);
  const auto views = {base.transpose(0, 2), base.slice(2, 0, 20, 3), base.permute({1, 2, 0})};
  for (const auto& v : views) {
    REQUIRE(!v.is_contiguous());
    for (std::int64_t d = 0; d < 3; ++d) {
      CHECK(values(softmax(v, d)) == values(softmax(v.contiguous(), d)));
      CHECK(values(log_softmax(v, d)) == values(log_softmax(v.contiguous(), d)));
    }
  }
}

TEST_CASE("softmax: stable for large magnitudes") {
  const auto t = tensor<float>({1000, 1001, 1002, -1000, -1001, -1002}, {2, 3});
  const auto ref = reference_softmax(t.cast<double>(), 1, false);
  CHECK(close(values(softmax(t, 1)), ref, 1e-6));
  CHECK(close(values(log_softmax(t, 1)), reference_softmax(t.cast<double>(), 1, true), 1e-6));
  CHECK(close(values(softmax(t.transpose(0, 1).contiguous(), 0)), values(softmax(t, 1).transpose(0, 1)), 1e-6));
}

TEST_CASE("softmax: rows of all -inf, partly -inf rows, NaN") {
  // Each path: rows (dim last), transposed (inner 2) and blocked (inner 16).
  const double ninf = -kInf;
  auto rows = tensor<double>({ninf, ninf, ninf, 0.0, ninf, std::log(3.0)}, {2, 3});
  CHECK(values(softmax(rows, 1)) == std::vector<double>{0, 0, 0, 0.25, 0, 0.75});
  const auto ls = values(log_softmax(rows, 1));
  CHECK(ls[0] == ninf);
  CHECK(ls[1] == ninf);
  CHECK(ls[2] == ninf);
  CHECK(ls[3] == doctest::Approx(std::log(0.25)));
  CHECK(ls[4] == ninf);
  CHECK(ls[5] == doctest::Approx(std::log(0.75)));
  CHECK(values(softmax(rows.transpose(0, 1).contiguous(), 0)) == values(softmax(rows, 1).transpose(0, 1)));
  CHECK(values(log_softmax(rows.transpose(0, 1).contiguous(), 0)) == values(log_softmax(rows, 1).transpose(0, 1)));
  // blocked path: a (3x16) tensor along dim 0 with columns 0 and 5 all -inf
  Generator gen(33);
  auto wide = randn<double>({3, 16}, gen);
  for (std::int64_t k = 0; k < 3; ++k) wide.data()[k * 16] = wide.data()[k * 16 + 5] = ninf;
  const auto sw = softmax(wide, 0), lw = log_softmax(wide, 0);
  for (std::int64_t k = 0; k < 3; ++k) {
    CHECK(sw.at({k, 0}) == 0.0);
    CHECK(sw.at({k, 5}) == 0.0);
    CHECK(lw.at({k, 0}) == ninf);
    CHECK(lw.at({k, 5}) == ninf);
  }
  CHECK(close(values(softmax(wide, 0).narrow(1, 1, 4)), values(softmax(wide.narrow(1, 1, 4).contiguous(), 0)), 1e-15));
  // softmax of an all -inf row has a zero gradient
  auto x = rows.detach().clone().requires_grad_();
  softmax(x, 1).backward(tensor<double>({1, 2, 3, 4, 5, 6}, {2, 3}));
  const auto gx = values(x.grad());
  CHECK(gx[0] == 0.0);
  CHECK(gx[1] == 0.0);
  CHECK(gx[2] == 0.0);
  CHECK(std::isfinite(gx[3]));
  // NaN makes its row NaN
  const auto n = values(softmax(tensor<float>({1, NAN, 2, 1, 2, 3}, {2, 3}), 1));
  CHECK(std::isnan(n[0]));
  CHECK(std::isnan(n[2]));
  CHECK(!std::isnan(n[3]));
}

TEST_CASE_TEMPLATE("cpu::vexp: exact zeros below the normal range, NaN kept, close to std::exp elsewhere", T, float,
                   double) {
  // Lengths that exercise the vector path alone, the scalar tail alone, and both.
  const T lowest = cpu::ExpFlushOp<T>::lowest_exponent;
  for (const int n : {1, 3, 8, 13, 16, 37}) {
    Eigen::Array<T, Eigen::Dynamic, 1> x(n);
    for (int i = 0; i < n; ++i) x(i) = static_cast<T>(-40.0 + 3.7 * i);
    const T specials[] = {-std::numeric_limits<T>::infinity(), lowest - T(1), lowest + T(0.5),
                          std::numeric_limits<T>::quiet_NaN(), T(0), T(-1000), T(1000)};
    for (int i = 0; i < n; ++i)
      if (i % 3 == 0) x(i) = specials[(i / 3) % 7];
    const Eigen::Array<T, Eigen::Dynamic, 1> e = cpu::vexp(x);
    for (int i = 0; i < n; ++i) {
      CAPTURE(n);
      CAPTURE(x(i));
      if (std::isnan(x(i))) {
        CHECK(std::isnan(e(i)));
      } else if (x(i) < lowest) {
        CHECK(e(i) == T(0));  // exactly zero, no denormal
        CHECK_FALSE(std::signbit(e(i)));
      } else if (std::isinf(std::exp(x(i)))) {
        CHECK(e(i) == std::numeric_limits<T>::infinity());  // overflow as std::exp
      } else {
        const T ref = std::exp(x(i));
        CHECK(std::isnormal(e(i)));
        CHECK(std::abs(e(i) - ref) <= T(4) * std::numeric_limits<T>::epsilon() * ref);
      }
    }
  }
}

TEST_CASE("softmax: scalars and empty tensors") {
  CHECK(softmax(scalar_tensor<double>(7.0), 0).item() == 1.0);
  CHECK(log_softmax(scalar_tensor<double>(7.0), -1).item() == 0.0);
  CHECK(softmax(scalar_tensor<double>(7.0), 0).shape() == Shape{});
  CHECK(softmax(zeros<float>({0, 5}), 1).shape() == Shape{0, 5});
  CHECK(log_softmax(zeros<float>({3, 0}), 1).shape() == Shape{3, 0});
  auto s = scalar_tensor<double>(2.0).requires_grad_();
  softmax(s, 0).backward();
  CHECK(s.grad().item() == 0.0);
}

TEST_CASE("softmax: fused backward matches its formula") {
  Generator gen(34);
  for (const Shape& shape : {Shape{5, 7}, Shape{3, 6, 4}, Shape{2, 9, 20}}) {
    for (std::int64_t d = 0; d < static_cast<std::int64_t>(shape.size()); ++d) {
      CAPTURE(shape);
      CAPTURE(d);
      const auto x0 = randn<double>(shape, gen);
      const auto g = randn<double>(shape, gen);
      auto x = x0.clone().requires_grad_();
      auto y = softmax(x, d);
      CHECK(y.grad_fn_name() == "softmax");
      y.backward(g);
      const auto yd = y.detach();
      const auto expect = yd * (g - sum(g * yd, {d}, true));
      CHECK(close(values(x.grad()), values(expect), 1e-13));
      auto x2 = x0.clone().requires_grad_();
      auto ly = log_softmax(x2, d);
      CHECK(ly.grad_fn_name() == "log_softmax");
      ly.backward(g);
      const auto p = softmax(x0, d);
      const auto expect2 = g - p * sum(g, {d}, true);
      CHECK(close(values(x2.grad()), values(expect2), 1e-13));
    }
  }
}

TEST_CASE("softmax: gradcheck along every dim and path") {
  Generator gen(35);
  const auto a = randn<double>({3, 4, 5}, gen);
  for (std::int64_t d = -1; d < 3; ++d) {
    CAPTURE(d);
    CHECK_GRADCHECK([d](const GradInputs& x) { return softmax(x[0], d); }, {a});
    CHECK_GRADCHECK([d](const GradInputs& x) { return log_softmax(x[0], d); }, {a});
  }
  const auto blocked = randn<double>({2, 3, 16}, gen);  // inner 16: blocked strided path
  CHECK_GRADCHECK([](const GradInputs& x) { return softmax(x[0], 1); }, {blocked});
  CHECK_GRADCHECK([](const GradInputs& x) { return log_softmax(x[0], 0); }, {blocked});
  const auto nc = randn<double>({5, 4}, gen).transpose(0, 1);
  REQUIRE(!nc.is_contiguous());
  CHECK_GRADCHECK([](const GradInputs& x) { return softmax(x[0], 1) * 2.0; }, {nc});
  CHECK_GRADCHECK([](const GradInputs& x) { return log_softmax(x[0], 0); }, {nc});
  // composed with a broadcast: softmax(x + b) along the last dim
  const auto b = randn<double>({4}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return softmax(x[0] + x[1], -1); }, {randn<double>({3, 4}, gen), b});
}

TEST_CASE("softmax: errors") {
  const auto t = zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(softmax(t, 2), "[softmax] dim 2 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(log_softmax(t, -3), "[log_softmax] dim -3 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(softmax(scalar_tensor<float>(1.0f), 1), "[softmax] dim 1 out of range for a tensor of rank 1", Error);
  CHECK_THROWS_WITH_AS(softmax(Tensor<double>(), 0), "[softmax] undefined tensor argument", Error);
}

}  // namespace test_softmax
