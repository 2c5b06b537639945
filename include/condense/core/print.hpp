// Printing: `std::cout << t` shows the element type, shape, device, grad status and the
// first few values of each row ("..." where elided).
#pragma once

#include <cstdint>
#include <ostream>
#include <sstream>
#include <string>

#include "condense/core/tensor.hpp"

namespace condense {

/// Writes "Tensor<float32>(2x3, cpu, requires_grad) [[...], [...]]" with at most
/// `edge` values at each end of every dimension.
template <Element T>
void print_tensor(std::ostream& os, const Tensor<T>& t, std::int64_t edge = 3) {
  if (!t.defined()) {
    os << "Tensor(undefined)";
    return;
  }
  const std::string dims = t.shape().str();  // "(2x3)"
  os << "Tensor<" << dtype_name(t.dtype()) << ">" << dims.substr(0, dims.size() - 1) << ", " << t.device();
  if (t.requires_grad()) os << ", requires_grad";
  if (!t.grad_fn_name().empty()) os << ", grad_fn=" << t.grad_fn_name();
  os << ") ";
  const Tensor<T> host = t.detach().cpu().contiguous();
  const T* p = host.data();
  const Shape& shape = host.shape();
  const auto print_value = [&](T v) {
    if constexpr (std::is_same_v<T, bool>) os << (v ? "true" : "false");
    else if constexpr (FloatingElement<T>) os << v;
    else if constexpr (IndexElement<T>) os << v;
    else os << static_cast<float>(v);
  };
  // Recursive walk over dims with elision.
  const auto walk = [&](auto&& self, std::size_t d, std::int64_t offset) -> void {
    if (d == shape.size()) {
      print_value(p[offset]);
      return;
    }
    const std::int64_t n = shape[d];
    const std::int64_t stride = host.strides()[d];
    os << '[';
    for (std::int64_t i = 0; i < n; ++i) {
      if (n > 2 * edge && i == edge) {
        os << "..., ";
        i = n - edge - 1;
        continue;
      }
      self(self, d + 1, offset + i * stride);
      if (i + 1 < n) os << ", ";
    }
    os << ']';
  };
  walk(walk, 0, 0);
}

template <Element T>
std::ostream& operator<<(std::ostream& os, const Tensor<T>& t) {
  print_tensor(os, t);
  return os;
}

/// The printed form of `t` as a string.
template <Element T>
std::string to_string(const Tensor<T>& t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

}  // namespace condense
