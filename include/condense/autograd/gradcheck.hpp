// gradcheck: compares the gradients autograd computes with central finite differences in
// double precision. The function under test maps a list of double tensors to one tensor;
// its output is projected onto fixed random weights so every output element is checked.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/core/factories.hpp"
#include "condense/core/tensor.hpp"

namespace condense {

/// Tolerances and step for gradcheck.
struct GradcheckOptions {
  double eps = 1e-6;    ///< finite-difference step
  double atol = 1e-6;   ///< absolute tolerance per element
  double rtol = 1e-4;   ///< relative tolerance per element
  double max_nmse = 1e-8;  ///< bound on sum((a-n)^2) / max(sum(n^2), tiny) per input
  std::uint64_t seed = 1234;  ///< seed of the output projection weights
};

/// Outcome of gradcheck: `ok`, the worst errors seen, and a readable report of failures.
struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0.0;
  double max_nmse = 0.0;
  std::string report;
};

/// Checks d(sum(f(inputs) * W))/d(inputs) from backward() against central differences.
/// Inputs may be non-contiguous views (perturbed through their strides) and of different
/// shapes (broadcasting). Every input is treated as a leaf that requires grad.
inline GradcheckResult gradcheck(const std::function<Tensor<double>(const std::vector<Tensor<double>>&)>& f,
                                 std::vector<Tensor<double>> inputs, const GradcheckOptions& options = {}) {
  GradcheckResult result;
  std::ostringstream report;
  for (auto& x : inputs) {
    x = x.detach();
    x.requires_grad_(true);
  }
  Tensor<double> weights;
  {
    NoGradGuard no_grad;
    const Tensor<double> probe = f(inputs);
    Generator gen(options.seed);
    weights = uniform<double>(probe.shape(), 0.5, 1.5, gen);
  }
  const auto loss_value = [&]() {
    NoGradGuard no_grad;
    return sum(mul(f(inputs), weights)).item();
  };
  sum(mul(f(inputs), weights)).backward();

  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Tensor<double>& x = inputs[k];
    const Tensor<double> analytic_grad = x.grad();
    const std::vector<double> analytic =
        analytic_grad.defined() ? analytic_grad.to_vector() : std::vector<double>(static_cast<std::size_t>(x.numel()), 0.0);
    // Walk the elements in row-major order through the strides.
    const Shape shape = x.shape();
    std::vector<std::int64_t> index(shape.size(), 0);
    double err2 = 0.0, ref2 = 0.0;
    for (std::int64_t flat = 0; flat < x.numel(); ++flat) {
      std::int64_t offset = 0;
      for (std::size_t d = 0; d < shape.size(); ++d) offset += index[d] * x.strides()[d];
      double* p = x.data() + offset;
      const double saved = *p;
      *p = saved + options.eps;
      const double up = loss_value();
      *p = saved - options.eps;
      const double down = loss_value();
      *p = saved;
      const double numeric = (up - down) / (2.0 * options.eps);
      const double a = analytic[static_cast<std::size_t>(flat)];
      const double err = std::abs(a - numeric);
      err2 += err * err;
      ref2 += numeric * numeric;
      result.max_abs_error = std::max(result.max_abs_error, err);
      if (!(err <= options.atol + options.rtol * std::abs(numeric))) {
        if (result.ok) report << "gradcheck mismatch:\n";
        result.ok = false;
        report << "  input " << k << " " << shape << " element " << flat << ": analytic " << a << ", numeric " << numeric
               << "\n";
      }
      for (std::size_t d = shape.size(); d-- > 0;) {
        if (++index[d] < shape[d]) break;
        index[d] = 0;
      }
    }
    const double nmse = err2 / std::max(ref2, 1e-300);
    result.max_nmse = std::max(result.max_nmse, ref2 > 1e-20 ? nmse : 0.0);
    if (ref2 > 1e-20 && nmse > options.max_nmse) {
      result.ok = false;
      report << "  input " << k << " " << shape << ": NMSE " << nmse << " > " << options.max_nmse << "\n";
    }
  }
  result.report = report.str();
  return result;
}

}  // namespace condense
