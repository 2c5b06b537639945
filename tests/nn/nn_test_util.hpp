// Helpers shared by the nn tests: parameter names of a module, and gradcheck of a module
// with respect to its parameters (the gradcheck inputs are put into the parameter slots).
#pragma once

#include <string>
#include <vector>

#include "condense/nn/module.hpp"
#include "test_util.hpp"

namespace condense::testing {

/// Names of a module's parameters, in order.
template <FloatingElement T>
std::vector<std::string> names_of(const nn::Module<T>& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.named_parameters()) out.push_back(n);
  return out;
}

/// Puts gradcheck inputs x[first..] into the module's parameter slots, in named order.
template <FloatingElement T>
void bind_params(const nn::Module<T>& m, const GradInputs& x, std::size_t first) {
  std::size_t i = first;
  m.for_each_parameter([&](const std::string&, Tensor<T>& slot) { slot = x.at(i++); });
}

/// Gradcheck inputs: `inputs` followed by copies of every parameter of `m`.
template <FloatingElement T>
GradInputs with_params(const nn::Module<T>& m, GradInputs inputs) {
  for (const auto& p : m.parameters()) inputs.push_back(p.detach().clone());
  return inputs;
}

}  // namespace condense::testing
