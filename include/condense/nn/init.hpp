// Parameter initialisation helpers (namespace condense::nn::init): fill an existing tensor
// in place, without recording autograd history, from an explicit Generator. Used by the
// module constructors; also handy for re-initialising a model.
#pragma once

#include <cmath>
#include <cstdint>

#include "condense/core/error.hpp"
#include "condense/core/factories.hpp"
#include "condense/core/random.hpp"
#include "condense/core/tensor.hpp"

namespace condense::nn::init {
namespace detail {

/// Writes `values` (contiguous, same shape) into `t` through its strides; no autograd.
template <DifferentiableElement T>
void assign(const Tensor<T>& t, const Tensor<T>& values, const char* op) {
  CONDENSE_CHECK(t.defined(), op, "undefined tensor");
  CONDENSE_CHECK(t.device().is_cpu(), op, "initialisation needs a CPU tensor, got ", t.describe());
  condense::detail::copy_into(t.detach(), values, op);
}

/// fan_in, fan_out of a weight: [out, in, ...] as in PyTorch (1-D: fan_in = fan_out = n).
template <DifferentiableElement T>
std::pair<double, double> fans(const Tensor<T>& t, const char* op) {
  CONDENSE_CHECK(t.dim() >= 1, op, "needs a tensor with at least one dim, got ", t.shape());
  if (t.dim() == 1) return {static_cast<double>(t.size(0)), static_cast<double>(t.size(0))};
  double receptive = 1.0;
  for (std::int64_t d = 2; d < t.dim(); ++d) receptive *= static_cast<double>(t.size(d));
  return {static_cast<double>(t.size(1)) * receptive, static_cast<double>(t.size(0)) * receptive};
}

}  // namespace detail

/// t ~ N(mean, std^2), in place.
template <DifferentiableElement T>
void normal_(const Tensor<T>& t, double mean, double std, Generator& gen) {
  CONDENSE_CHECK(std >= 0.0, "init::normal_", "std must be >= 0, got ", std);
  detail::assign(t, randn<T>(t.shape(), gen, mean, std), "init::normal_");
}

/// t ~ U[low, high), in place.
template <DifferentiableElement T>
void uniform_(const Tensor<T>& t, double low, double high, Generator& gen) {
  detail::assign(t, uniform<T>(t.shape(), low, high, gen), "init::uniform_");
}

/// t = value everywhere, in place.
template <DifferentiableElement T>
void constant_(const Tensor<T>& t, double value) {
  detail::assign(t, full<T>(t.shape(), static_cast<T>(value)), "init::constant_");
}

/// t = 0, in place.
template <DifferentiableElement T>
void zeros_(const Tensor<T>& t) { constant_(t, 0.0); }

/// t = 1, in place.
template <DifferentiableElement T>
void ones_(const Tensor<T>& t) { constant_(t, 1.0); }

/// Glorot / Xavier uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
// t: [out, in, ...]
template <DifferentiableElement T>
void xavier_uniform_(const Tensor<T>& t, Generator& gen, double gain = 1.0) {
  const auto [fan_in, fan_out] = detail::fans(t, "init::xavier_uniform_");
  const double a = gain * std::sqrt(6.0 / std::max(fan_in + fan_out, 1.0));
  uniform_(t, -a, a, gen);
}

/// Glorot / Xavier normal: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)).
// t: [out, in, ...]
template <DifferentiableElement T>
void xavier_normal_(const Tensor<T>& t, Generator& gen, double gain = 1.0) {
  const auto [fan_in, fan_out] = detail::fans(t, "init::xavier_normal_");
  normal_(t, 0.0, gain * std::sqrt(2.0 / std::max(fan_in + fan_out, 1.0)), gen);
}

/// PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with
/// a = sqrt(5) gives the same bound); also used for the bias with the weight's fan_in.
template <DifferentiableElement T>
void fan_in_uniform_(const Tensor<T>& t, double fan_in, Generator& gen) {
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(fan_in) : 0.0;
  uniform_(t, -bound, bound, gen);
}

}  // namespace condense::nn::init
