// Tensor factories: empty, zeros, ones, full, arange, from a std::vector or initializer
// list, and random tensors (randn, rand, uniform) drawn from an explicit Generator.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/random.hpp"
#include "condense/core/tensor.hpp"

namespace condense {

/// Uninitialised contiguous tensor.
template <Element T>
Tensor<T> empty(const Shape& shape, Device device = Device::cpu()) {
  return Tensor<T>::empty(shape, device);
}

/// Tensor filled with `value`.
template <Element T>
Tensor<T> full(const Shape& shape, T value, Device device = Device::cpu()) {
  check_shape("full", shape);
  if constexpr (!std::is_integral_v<T>) {  // integers stay exact through the host copy
    if (device.is_cuda()) {
      Tensor<T> out = Tensor<T>::empty(shape, device);
      detail::cuda_fill("full", out, convert_element<double>(value));
      return out;
    }
  }
  Tensor<T> out = Tensor<T>::empty(shape, Device::cpu());
  T* p = out.data();
  cpu::parallel_for(0, out.numel(), 65536, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) p[i] = value;
  });
  return out.to(device);
}

/// Tensor of zeros.
template <Element T>
Tensor<T> zeros(const Shape& shape, Device device = Device::cpu()) {
  check_shape("zeros", shape);
  return Tensor<T>::from_storage(Storage::zeros(static_cast<std::size_t>(numel_of(shape)) * sizeof(T), device), shape,
                                 contiguous_strides(shape), 0);
}

/// Tensor of ones.
template <Element T>
Tensor<T> ones(const Shape& shape, Device device = Device::cpu()) {
  return full<T>(shape, convert_element<T>(1.0f), device);
}

/// Zeros with the shape and device of `t`.
template <Element T>
Tensor<T> zeros_like(const Tensor<T>& t) { return zeros<T>(t.shape(), t.device()); }

/// Ones with the shape and device of `t`.
template <Element T>
Tensor<T> ones_like(const Tensor<T>& t) { return ones<T>(t.shape(), t.device()); }

/// 1-D tensor start, start+step, ... (< end).
template <Element T>
Tensor<T> arange(double start, double end, double step = 1.0, Device device = Device::cpu()) {
  CONDENSE_CHECK(step != 0.0, "arange", "step must be non-zero");
  const double count = (end - start) / step;
  const auto n = count > 0 ? static_cast<std::int64_t>(std::ceil(count)) : 0;
  Tensor<T> out = Tensor<T>::empty({n}, Device::cpu());
  for (std::int64_t i = 0; i < n; ++i) out.data()[i] = convert_element<T>(start + static_cast<double>(i) * step);
  return out.to(device);
}

/// 1-D tensor 0, 1, ..., end-1.
template <Element T>
Tensor<T> arange(std::int64_t end, Device device = Device::cpu()) {
  return arange<T>(0.0, static_cast<double>(end), 1.0, device);
}

/// Tensor holding `values` with `shape` (numel must match).
template <Element T>
Tensor<T> from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu()) {
  check_shape("from_vector", shape);
  CONDENSE_CHECK(static_cast<std::int64_t>(values.size()) == numel_of(shape), "from_vector", values.size(),
                 " values for shape ", shape);
  Tensor<T> out = Tensor<T>::empty(shape, Device::cpu());
  std::copy(values.begin(), values.end(), out.data());  // also unpacks std::vector<bool>
  return out.to(device);
}

/// 1-D tensor from a list: tensor<float>({1, 2, 3}); with a shape: tensor<float>({1,2,3,4}, {2,2}).
template <Element T>
Tensor<T> tensor(std::initializer_list<T> values, const Shape& shape = {}) {
  const Shape s = shape.empty() ? Shape{static_cast<std::int64_t>(values.size())} : shape;
  return from_vector<T>(std::vector<T>(values), s);
}

/// A scalar (0-dim) tensor.
template <Element T>
Tensor<T> scalar_tensor(T value, Device device = Device::cpu()) {
  return full<T>(Shape{}, value, device);
}

/// Standard normal samples (times `stddev`, plus `mean`), drawn in double and rounded to T.
template <DifferentiableElement T>
Tensor<T> randn(const Shape& shape, Generator& gen = default_generator(), double mean = 0.0, double stddev = 1.0,
                Device device = Device::cpu()) {
  check_shape("randn", shape);
  Tensor<T> out = Tensor<T>::empty(shape, Device::cpu());
  for (std::int64_t i = 0; i < out.numel(); ++i) out.data()[i] = convert_element<T>(mean + stddev * gen.normal());
  return out.to(device);
}

namespace detail {

/// The representable neighbour of finite `x` one step towards +infinity (`up`) or -infinity.
template <DifferentiableElement T>
T next_representable(T x, bool up) {
  if constexpr (FloatingElement<T>) {
    return std::nextafter(x, up ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity());
  } else {  // sign and magnitude bits, as in IEEE floats: a step away from zero adds one
    const bool negative = (x.bits & 0x8000u) != 0;
    if ((x.bits & 0x7fffu) == 0) return T::from_bits(up ? 0x0001u : 0x8001u);
    return T::from_bits(static_cast<std::uint16_t>(negative == up ? x.bits - 1u : x.bits + 1u));
  }
}

/// The least value of T that is >= low and the greatest that is < high (both equal to low
/// rounded when low == high): the samples of uniform() rounded to T are clamped to them, so
/// rounding never reaches the excluded bound. Throws when no value of T lies in [low, high).
template <DifferentiableElement T>
std::pair<T, T> uniform_range(double low, double high) {
  const auto value = [](T x) { return convert_element<double>(x); };
  if (low == high) return {convert_element<T>(low), convert_element<T>(low)};
  T lo = convert_element<T>(low), hi = convert_element<T>(high);
  while (value(lo) < low) lo = next_representable(lo, true);
  while (value(next_representable(lo, false)) >= low) lo = next_representable(lo, false);
  while (value(hi) >= high) hi = next_representable(hi, false);
  while (value(next_representable(hi, true)) < high) hi = next_representable(hi, true);
  CONDENSE_CHECK(value(lo) <= value(hi), "uniform", "no ", dtype_traits<T>::name, " value lies in [", low, ", ", high, ")");
  return {lo, hi};
}

}  // namespace detail

/// Uniform samples in [low, high), drawn in double and rounded to T (float, double or a
/// 16-bit float); a sample that rounds outside the range takes the nearest value of T inside
/// it, so `high` is never returned (except when low == high: every sample is low rounded).
template <DifferentiableElement T>
Tensor<T> uniform(const Shape& shape, double low, double high, Generator& gen = default_generator(),
                  Device device = Device::cpu()) {
  check_shape("uniform", shape);
  CONDENSE_CHECK(std::isfinite(low) && std::isfinite(high), "uniform", "bounds must be finite, got [", low, ", ", high, ")");
  CONDENSE_CHECK(low <= high, "uniform", "low ", low, " > high ", high);
  const auto [lo, hi] = detail::uniform_range<T>(low, high);
  const double lo_value = convert_element<double>(lo), hi_value = convert_element<double>(hi);
  Tensor<T> out = Tensor<T>::empty(shape, Device::cpu());
  for (std::int64_t i = 0; i < out.numel(); ++i) {
    const T x = convert_element<T>(low + (high - low) * gen.uniform01());
    const double v = convert_element<double>(x);
    out.data()[i] = v < lo_value ? lo : (v > hi_value ? hi : x);
  }
  return out.to(device);
}

/// Uniform samples in [0, 1) (float, double or a 16-bit float; 1 is never returned).
template <DifferentiableElement T>
Tensor<T> rand(const Shape& shape, Generator& gen = default_generator(), Device device = Device::cpu()) {
  return uniform<T>(shape, 0.0, 1.0, gen, device);
}

/// Uniform integers in [low, high).
template <IndexElement T>
Tensor<T> randint(const Shape& shape, std::int64_t low, std::int64_t high, Generator& gen = default_generator(),
                  Device device = Device::cpu()) {
  check_shape("randint", shape);
  CONDENSE_CHECK(low < high, "randint", "empty range [", low, ", ", high, ")");
  Tensor<T> out = Tensor<T>::empty(shape, Device::cpu());
  const auto span = static_cast<std::uint64_t>(high - low);
  for (std::int64_t i = 0; i < out.numel(); ++i) out.data()[i] = static_cast<T>(low + static_cast<std::int64_t>(gen.below(span)));
  return out.to(device);
}

}  // namespace condense
