// Helpers of the 16-bit float tests: the bits of a bfloat16 / float16 tensor, and the check
// that an op on 16-bit tensors gives the float op's value and gradients rounded once.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/core/tensor.hpp"

namespace condense::testing {

/// Bits of every element, to compare results exactly (NaN included).
template <HalfElement T>
std::vector<std::uint16_t> bits(const Tensor<T>& t) {
  std::vector<std::uint16_t> out;
  for (const T v : t.contiguous().to_vector()) out.push_back(v.bits);
  return out;
}

/// Runs `on_half` on leaf copies of `inputs` and `on_float` on float copies, back-propagates
/// the same upstream gradient through both, and checks that the value and every input's
/// gradient equal the float ones rounded to T, bit for bit.
template <HalfElement T, class OnHalf, class OnFloat>
void check_equals_float_rounded(const std::vector<Tensor<T>>& inputs, OnHalf on_half, OnFloat on_float, Generator& gen) {
  std::vector<Tensor<T>> half_leaves;
  std::vector<Tensor<float>> float_leaves;
  for (const auto& t : inputs) {
    half_leaves.push_back(t.clone());
    half_leaves.back().requires_grad_();
    float_leaves.push_back(t.template cast<float>());
    float_leaves.back().requires_grad_();
  }
  const Tensor<T> y = on_half(half_leaves);
  const Tensor<float> yw = on_float(float_leaves);
  CHECK(bits(y) == bits(yw.template cast<T>()));
  const auto upstream = randn<T>(y.shape(), gen);
  y.backward(upstream);
  yw.backward(upstream.template cast<float>());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    CAPTURE(i);
    REQUIRE(half_leaves[i].grad().defined());
    CHECK(half_leaves[i].grad().dtype() == dtype_of<T>);
    CHECK(bits(half_leaves[i].grad()) == bits(float_leaves[i].grad().template cast<T>()));
  }
}

}  // namespace condense::testing
