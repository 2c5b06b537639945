// Tensor factories: empty, zeros, ones, full, arange, from a std::vector or initializer
// list, and random tensors (randn, rand, uniform) drawn from an explicit Generator.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
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

/// Uniform samples in [low, high).
template <FloatingElement T>
Tensor<T> uniform(const Shape& shape, double low, double high, Generator& gen = default_generator(),
                  Device device = Device::cpu()) {
  check_shape("uniform", shape);
  CONDENSE_CHECK(low <= high, "uniform", "low ", low, " > high ", high);
  Tensor<T> out = Tensor<T>::empty(shape, Device::cpu());
  for (std::int64_t i = 0; i < out.numel(); ++i) out.data()[i] = static_cast<T>(low + (high - low) * gen.uniform01());
  return out.to(device);
}

/// Uniform samples in [0, 1).
template <FloatingElement T>
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
