// Shared test helpers: closeness checks between tensors and a gradcheck assertion that
// prints the report on failure.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "condense/autograd/gradcheck.hpp"
#include "condense/core/print.hpp"
#include "condense/core/tensor.hpp"

namespace condense::testing {

/// Largest |a - b| over all elements (shapes must match).
template <Element T>
double max_abs_diff(const Tensor<T>& a, const Tensor<T>& b) {
  REQUIRE(a.shape() == b.shape());
  const auto va = a.to_vector();
  const auto vb = b.to_vector();
  double worst = 0.0;
  for (std::size_t i = 0; i < va.size(); ++i) {
    const double d = std::abs(convert_element<double>(va[i]) - convert_element<double>(vb[i]));
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d);
  }
  return worst;
}

/// True when every |a - b| <= atol + rtol * |b|.
template <Element T>
bool allclose(const Tensor<T>& a, const Tensor<T>& b, double rtol = 1e-5, double atol = 1e-6) {
  if (a.shape() != b.shape()) return false;
  const auto va = a.to_vector();
  const auto vb = b.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i) {
    const double x = convert_element<double>(va[i]), y = convert_element<double>(vb[i]);
    if (!(std::abs(x - y) <= atol + rtol * std::abs(y))) return false;
  }
  return true;
}

/// Argument list type of functions under gradcheck.
using GradInputs = std::vector<Tensor<double>>;

/// Largest |element| of a tensor on any device (0 for an empty tensor).
template <Element T>
double max_abs(const Tensor<T>& t) {
  double m = 0.0;
  for (const T v : t.cpu().to_vector()) m = std::max(m, std::abs(convert_element<double>(v)));
  return m;
}

/// max |got - want| / max(max |want|, floor): the error relative to the reference's largest
/// entry (`floor` keeps an all-zero reference from dividing by zero). Tensors on any device.
template <Element T>
double relative_error(const Tensor<T>& got, const Tensor<T>& want, double floor = 1e-30) {
  return max_abs_diff(got.cpu(), want.cpu()) / std::max(max_abs(want), floor);
}

/// Values of a tensor as doubles (for CHECK comparisons against literals).
template <Element T>
std::vector<double> values(const Tensor<T>& t) {
  std::vector<double> out;
  for (const T v : t.to_vector()) out.push_back(convert_element<double>(v));  // T: vector<bool> yields proxies
  return out;
}

/// Number of elements where `got` differs from ref(x): NaN must match NaN, infinities must
/// match exactly, the rest within atol + rtol * |ref|. Describes the first few mismatches
/// in `report`.
template <Element T>
int mismatches(const Tensor<T>& got, const std::vector<double>& x, const std::function<double(double)>& ref, double rtol,
               double atol, std::string& report) {
  const auto g = values(got);
  REQUIRE(g.size() == x.size());
  int bad = 0;
  std::ostringstream out;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double r = ref(x[i]);
    bool ok;
    if (std::isnan(r)) ok = std::isnan(g[i]);
    else if (std::isinf(r)) ok = g[i] == r;
    else ok = std::abs(g[i] - r) <= atol + rtol * std::abs(r);
    if (!ok && ++bad <= 5) out << "x=" << x[i] << " got " << g[i] << " expected " << r << "\n";
  }
  report = out.str();
  return bad;
}

/// Spacing of the 16-bit float T just above 1 (bfloat16: 2^-7, float16: 2^-10).
template <HalfElement T>
inline constexpr double half_epsilon = std::is_same_v<T, bfloat16> ? 0x1p-7 : 0x1p-10;

/// `n` evenly spaced values from lo to hi (n >= 2).
inline std::vector<double> linspace(double lo, double hi, int n) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = lo + (hi - lo) * i / (n - 1);
  return v;
}

}  // namespace condense::testing

/// Runs gradcheck and fails the test with its report when the gradients disagree.
/// Usage: CHECK_GRADCHECK(fn, {inputs...}) or CHECK_GRADCHECK(fn, {inputs...}, options).
#define CHECK_GRADCHECK(...)                                                               \
  do {                                                                                     \
    const auto gradcheck_result_ = ::condense::gradcheck(__VA_ARGS__);                     \
    INFO(gradcheck_result_.report);                                                        \
    CHECK(gradcheck_result_.ok);                                                           \
  } while (0)

/// Checks that `got` equals ref(x) elementwise (see testing::mismatches) and prints the first
/// mismatches on failure.
#define CHECK_MATCHES(got, x, ref, rtol, atol)                                                   \
  do {                                                                                           \
    std::string check_matches_report_;                                                           \
    const int check_matches_bad_ = ::condense::testing::mismatches(got, x, ref, rtol, atol,     \
                                                                  check_matches_report_);      \
    INFO(check_matches_report_);                                                                 \
    CHECK(check_matches_bad_ == 0);                                                              \
  } while (0)
