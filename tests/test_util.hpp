// Shared test helpers: closeness checks between tensors and a gradcheck assertion that
// prints the report on failure.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
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
    const double d = std::abs(static_cast<double>(va[i]) - static_cast<double>(vb[i]));
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
    const double x = static_cast<double>(va[i]), y = static_cast<double>(vb[i]);
    if (!(std::abs(x - y) <= atol + rtol * std::abs(y))) return false;
  }
  return true;
}

/// Argument list type of functions under gradcheck.
using GradInputs = std::vector<Tensor<double>>;

/// Values of a tensor as doubles (for CHECK comparisons against literals).
template <Element T>
std::vector<double> values(const Tensor<T>& t) {
  std::vector<double> out;
  for (const T v : t.to_vector()) out.push_back(convert_element<double>(v));  // T: vector<bool> yields proxies
  return out;
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
