// cumsum and cumprod: values against plain loops along every dim (contiguous, strided and
// multi-block inputs, integer types), gradchecks, and cumprod's backward on inputs holding
// exact zeros against an independent O(n^2) reference of the derivative.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>

#include "condense/core/factories.hpp"
#include "condense/ops/scan.hpp"
#include "test_util.hpp"

namespace test_scan {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::values;

namespace {

/// Inclusive scan of a row-major (A x B x C) buffer along `dim` with `op`, in double.
std::vector<double> reference_scan(const std::vector<double>& v, std::int64_t A, std::int64_t B, std::int64_t C, int dim,
                                   const std::function<double(double, double)>& op) {
  std::vector<double> out(v.size());
  const std::int64_t ext[3] = {A, B, C};
  const std::int64_t stride[3] = {B * C, C, 1};
  for (std::int64_t a = 0; a < A; ++a)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t idx[3] = {a, b, c};
        const std::int64_t at = a * B * C + b * C + c;
        if (idx[dim] == 0) {
          out[static_cast<std::size_t>(at)] = v[static_cast<std::size_t>(at)];
        } else {
          out[static_cast<std::size_t>(at)] = op(out[static_cast<std::size_t>(at - stride[dim])], v[static_cast<std::size_t>(at)]);
        }
        (void)ext;
      }
  return out;
}

bool close(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(std::abs(a[i] - b[i]) <= tol * (1 + std::abs(b[i])))) return false;
  return true;
}

/// d/dx_j of sum_k g_k * prod_{i <= k} x_i along a 1-D line, by the O(n^2) definition.
std::vector<double> cumprod_grad_reference(const std::vector<double>& x, const std::vector<double>& g) {
  const std::size_t n = x.size();
  std::vector<double> out(n, 0.0);
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t k = j; k < n; ++k) {
      double p = g[k];
      for (std::size_t i = 0; i <= k; ++i)
        if (i != j) p *= x[i];
      out[j] += p;
    }
  return out;
}

const auto plus = [](double a, double b) { return a + b; };
const auto times = [](double a, double b) { return a * b; };

}  // namespace

TEST_CASE("scan: cumsum and cumprod values along every dim") {
  Generator gen(21);
  const auto t = uniform<double>({3, 4, 5}, 0.5, 1.5, gen);
  const auto v = t.to_vector();
  for (int d = 0; d < 3; ++d) {
    CAPTURE(d);
    CHECK(close(values(cumsum(t, d)), reference_scan(v, 3, 4, 5, d, plus), 1e-14));
    CHECK(close(values(cumprod(t, d)), reference_scan(v, 3, 4, 5, d, times), 1e-14));
  }
  CHECK(values(cumsum(t, -1)) == values(cumsum(t, 2)));
  CHECK(values(cumsum(tensor<float>({1, 2, 3, 4}), 0)) == std::vector<double>{1, 3, 6, 10});
  CHECK(values(cumprod(tensor<float>({1, 2, 3, 4}, {2, 2}), 0)) == std::vector<double>{1, 2, 3, 8});
  CHECK(values(cumprod(tensor<float>({2, 0, 3, 4}), 0)) == std::vector<double>{2, 0, 0, 0});
  // strided input: same as its contiguous copy
  const auto tt = t.transpose(0, 2);
  REQUIRE(!tt.is_contiguous());
  for (int d = 0; d < 3; ++d) {
    CHECK(values(cumsum(tt, d)) == values(cumsum(tt.contiguous(), d)));
    CHECK(values(cumprod(tt, d)) == values(cumprod(tt.contiguous(), d)));
  }
  // integer types keep their type
  const auto i = tensor<std::int32_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(cumsum(i, 1).to_vector() == std::vector<std::int32_t>{1, 3, 6, 4, 9, 15});
  CHECK(cumprod(i, 0).to_vector() == std::vector<std::int32_t>{1, 2, 3, 4, 10, 18});
  CHECK(cumsum(tensor<std::int64_t>({5, -5, 7}), 0).to_vector() == std::vector<std::int64_t>{5, 0, 7});
  // and wrap around in two's complement (as the CUDA kernels do) instead of overflowing
  constexpr std::int32_t max32 = std::numeric_limits<std::int32_t>::max();
  CHECK(cumsum(tensor<std::int32_t>({max32, 1, 1}), 0).to_vector() ==
        std::vector<std::int32_t>{max32, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::min() + 1});
  CHECK(cumprod(tensor<std::int64_t>({std::int64_t{1} << 62, 4, 3}), 0).to_vector() ==
        std::vector<std::int64_t>{std::int64_t{1} << 62, 0, 0});
  CHECK(cumprod(tensor<std::int32_t>({65536, 65535}), 0).to_vector() == std::vector<std::int32_t>{65536, -65536});
  // scalars and empty tensors
  CHECK(cumsum(scalar_tensor<double>(3.0), 0).item() == 3.0);
  CHECK(cumprod(scalar_tensor<double>(3.0), -1).shape() == Shape{});
  CHECK(cumsum(zeros<float>({2, 0}), 1).shape() == Shape{2, 0});
  CHECK(cumprod(zeros<float>({0, 3}), 1).shape() == Shape{0, 3});
}

TEST_CASE("scan: wide and long inputs (several blocks, several threads)") {
  Generator gen(22);
  const auto t = uniform<double>({3, 40, 600}, 0.9, 1.1, gen);  // inner 600 > one block of 256
  const auto v = t.to_vector();
  CHECK(close(values(cumsum(t, 1)), reference_scan(v, 3, 40, 600, 1, plus), 1e-13));
  CHECK(close(values(cumprod(t, 1)), reference_scan(v, 3, 40, 600, 1, times), 1e-13));
  CHECK(close(values(cumsum(t, 2)), reference_scan(v, 3, 40, 600, 2, plus), 1e-13));
  CHECK(close(values(cumprod(t, 0)), reference_scan(v, 3, 40, 600, 0, times), 1e-13));
}

TEST_CASE("scan: gradcheck cumsum and cumprod") {
  Generator gen(23);
  const auto a = randn<double>({3, 4, 5}, gen);
  for (int d = -1; d < 3; ++d) {
    CAPTURE(d);
    CHECK_GRADCHECK([d](const GradInputs& x) { return cumsum(x[0], d); }, {a});
    CHECK_GRADCHECK([d](const GradInputs& x) { return cumprod(x[0], d); }, {a});
  }
  const auto nc = randn<double>({5, 4}, gen).transpose(0, 1);
  REQUIRE(!nc.is_contiguous());
  CHECK_GRADCHECK([](const GradInputs& x) { return cumsum(x[0], 0) * 2.0; }, {nc});
  CHECK_GRADCHECK([](const GradInputs& x) { return cumprod(x[0], 1); }, {nc});
  CHECK_GRADCHECK([](const GradInputs& x) { return cumprod(x[0], 0); }, {nc});
  const auto wide = uniform<double>({2, 3, 300}, 0.5, 1.5, gen);  // two inner blocks
  CHECK_GRADCHECK([](const GradInputs& x) { return cumprod(x[0], 1); }, {wide});
}

TEST_CASE("scan: cumprod backward with exact zeros in the input") {
  // Rows with one zero, two zeros, a zero first and a zero last. cumprod is linear in each
  // single input, so central differences are exact there and gradcheck applies directly.
  const auto x = tensor<double>({0.5, 0.0, 2.0, -1.5, 3.0,     //
                                 1.5, 0.0, -2.0, 0.0, 0.7,     //
                                 0.0, 1.2, 0.8, 2.5, -0.3,     //
                                 0.9, -1.1, 1.3, 0.6, 0.0},
                                {4, 5});
  CHECK_GRADCHECK([](const GradInputs& v) { return cumprod(v[0], 1); }, {x});
  CHECK_GRADCHECK([](const GradInputs& v) { return cumprod(v[0].transpose(0, 1), 0); }, {x});
  CHECK_GRADCHECK([](const GradInputs& v) { return cumprod(v[0], 0); }, {x});

  // Against the O(n^2) definition of the derivative, row by row, with a fixed g.
  Generator gen(24);
  const auto g = randn<double>({4, 5}, gen);
  auto xr = x.detach().clone().requires_grad_();
  cumprod(xr, 1).backward(g);
  const auto got = values(xr.grad());
  const auto xv = x.to_vector(), gv = g.to_vector();
  for (std::size_t r = 0; r < 4; ++r) {
    const std::vector<double> xrow(xv.begin() + r * 5, xv.begin() + r * 5 + 5);
    const std::vector<double> grow(gv.begin() + r * 5, gv.begin() + r * 5 + 5);
    const auto ref = cumprod_grad_reference(xrow, grow);
    for (std::size_t j = 0; j < 5; ++j) {
      CAPTURE(r);
      CAPTURE(j);
      CHECK(got[r * 5 + j] == doctest::Approx(ref[j]).epsilon(1e-12));
      CHECK(std::isfinite(got[r * 5 + j]));
    }
  }
  // A row of one zero: only the zero's own gradient survives past it.
  auto z = tensor<double>({2.0, 0.0, 3.0}).requires_grad_();
  cumprod(z, 0).backward(tensor<double>({1.0, 1.0, 1.0}));
  // d/dx0 = 1 + x1 + x1 x2 = 1; d/dx1 = x0 + x0 x2 = 8; d/dx2 = x0 x1 = 0
  CHECK(values(z.grad()) == std::vector<double>{1.0, 8.0, 0.0});
  // float keep probabilities that reach exactly 0
  auto p = tensor<float>({0.9f, 0.5f, 0.0f, 0.0f, 0.8f}).requires_grad_();
  cumprod(p, 0).backward(ones<float>({5}));
  const auto pg = values(p.grad());
  CHECK(pg[0] == doctest::Approx(1.0 + 0.5));
  CHECK(pg[1] == doctest::Approx(0.9));
  CHECK(pg[2] == doctest::Approx(0.45));
  CHECK(pg[3] == 0.0);
  CHECK(pg[4] == 0.0);
}

TEST_CASE("scan: cumsum backward is a reversed running sum") {
  auto x = tensor<double>({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  auto y = cumsum(x, 1);
  CHECK(y.grad_fn_name() == "cumsum");
  y.backward(tensor<double>({1, 10, 100, 2, 20, 200}, {2, 3}));
  CHECK(values(x.grad()) == std::vector<double>{111, 110, 100, 222, 220, 200});
  auto w = tensor<double>({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  cumsum(w, 0).backward(tensor<double>({1, 2, 3, 4, 5, 6}, {2, 3}));
  CHECK(values(w.grad()) == std::vector<double>{5, 7, 9, 4, 5, 6});
}

TEST_CASE("scan: errors") {
  const auto t = zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(cumsum(t, 2), "[cumsum] dim 2 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(cumprod(t, -3), "[cumprod] dim -3 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(cumsum(scalar_tensor<float>(1.0f), 1), "[cumsum] dim 1 out of range for a tensor of rank 1", Error);
  CHECK_THROWS_WITH_AS(cumprod(Tensor<double>(), 0), "[cumprod] undefined tensor argument", Error);
}

}  // namespace test_scan
