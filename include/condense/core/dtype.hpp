// Element types: the DType tag, the 16-bit storage types bfloat16 and float16 (converted
// to and from float on the CPU), and the concepts that say which element types an op takes.
#pragma once

#include <bit>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "condense/core/config.hpp"

namespace condense {

/// bfloat16 storage type: the upper 16 bits of an IEEE float. Arithmetic happens in float.
struct bfloat16 {
  std::uint16_t bits = 0;
  constexpr bfloat16() = default;
  /// Rounds to nearest even; NaN stays NaN.
  CONDENSE_HD explicit bfloat16(float value) {
    std::uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<std::uint16_t>(u >> 16);
    }
  }
  CONDENSE_HD explicit operator float() const {
    std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  static constexpr bfloat16 from_bits(std::uint16_t b) { bfloat16 r; r.bits = b; return r; }
  friend constexpr bool operator==(bfloat16 a, bfloat16 b) { return a.bits == b.bits; }
};

/// IEEE 754 binary16 storage type. Arithmetic happens in float.
struct float16 {
  std::uint16_t bits = 0;
  constexpr float16() = default;
  /// Rounds to nearest even, overflows to infinity, keeps subnormals and NaN.
  CONDENSE_HD explicit float16(float value) {
    std::uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) { bits = static_cast<std::uint16_t>(sign | 0x7e00u); return; }
    if (abs >= 0x477ff000u) { bits = static_cast<std::uint16_t>(sign | 0x7c00u); return; }  // rounds to inf
    if (abs < 0x38800000u) {  // subnormal half (or zero)
      if (abs < 0x33000000u) { bits = static_cast<std::uint16_t>(sign); return; }
      const std::uint32_t exponent = abs >> 23;
      const std::uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
      const std::uint32_t shift = 126u - exponent;  // 14..24
      std::uint32_t half = mantissa >> shift;
      const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
      const std::uint32_t halfway = 1u << (shift - 1u);
      if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
      bits = static_cast<std::uint16_t>(sign | half);
      return;
    }
    std::uint32_t rebased = abs - 0x38000000u;  // exponent bias 127 -> 15
    rebased += 0xfffu + ((rebased >> 13) & 1u);
    bits = static_cast<std::uint16_t>(sign | (rebased >> 13));
  }
  CONDENSE_HD explicit operator float() const {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    std::uint32_t exponent = (bits >> 10) & 0x1fu;
    std::uint32_t mantissa = bits & 0x3ffu;
    std::uint32_t u;
    if (exponent == 0x1fu) {
      u = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
      u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exponent = 113u;
      while ((mantissa & 0x400u) == 0) { mantissa <<= 1; --exponent; }
      u = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  static constexpr float16 from_bits(std::uint16_t b) { float16 r; r.bits = b; return r; }
  friend constexpr bool operator==(float16 a, float16 b) { return a.bits == b.bits; }
};

/// Runtime tag of an element type.
enum class DType : std::uint8_t { Float32, Float64, Int32, Int64, BFloat16, Float16, Bool };

/// Every element type a Tensor<T> may hold.
template <class T>
concept Element = std::same_as<T, float> || std::same_as<T, double> ||
                  std::same_as<T, std::int32_t> || std::same_as<T, std::int64_t> ||
                  std::same_as<T, bfloat16> || std::same_as<T, float16> || std::same_as<T, bool>;

/// Boolean masks (comparisons, masked_fill, where) are Tensor<bool>, one byte per element.
static_assert(sizeof(bool) == 1, "condense stores bool tensors as one byte per element");

/// Element types with CPU arithmetic and autograd (float and double).
template <class T>
concept FloatingElement = std::same_as<T, float> || std::same_as<T, double>;

/// Element types with CPU arithmetic (floating or integer).
template <class T>
concept ArithmeticElement = FloatingElement<T> || std::same_as<T, std::int32_t> ||
                            std::same_as<T, std::int64_t>;

/// The 16-bit floats (bfloat16, float16): stored in 16 bits, computed in float. The ops
/// that take them widen each element to float, compute in float and round the result once,
/// on the CPU and in the CUDA kernels alike.
template <class T>
concept HalfElement = std::same_as<T, bfloat16> || std::same_as<T, float16>;

/// Element types of the elementwise arithmetic ops and sums: the arithmetic types and the
/// 16-bit floats (computed in float).
template <class T>
concept NumericElement = ArithmeticElement<T> || HalfElement<T>;

/// Element types autograd differentiates: float, double and the 16-bit floats (whose
/// gradients are stored in their own type).
template <class T>
concept DifferentiableElement = FloatingElement<T> || HalfElement<T>;

/// The type arithmetic on T happens in: float for the 16-bit floats, T itself otherwise.
template <class T>
using compute_type_t = std::conditional_t<HalfElement<T>, float, T>;

/// Integer index element types (embedding ids, gather indices, targets).
template <class T>
concept IndexElement = std::same_as<T, std::int32_t> || std::same_as<T, std::int64_t>;

template <Element T> struct dtype_traits;
template <> struct dtype_traits<float> { static constexpr DType value = DType::Float32; static constexpr std::string_view name = "float32"; };
template <> struct dtype_traits<double> { static constexpr DType value = DType::Float64; static constexpr std::string_view name = "float64"; };
template <> struct dtype_traits<std::int32_t> { static constexpr DType value = DType::Int32; static constexpr std::string_view name = "int32"; };
template <> struct dtype_traits<std::int64_t> { static constexpr DType value = DType::Int64; static constexpr std::string_view name = "int64"; };
template <> struct dtype_traits<bfloat16> { static constexpr DType value = DType::BFloat16; static constexpr std::string_view name = "bfloat16"; };
template <> struct dtype_traits<float16> { static constexpr DType value = DType::Float16; static constexpr std::string_view name = "float16"; };
template <> struct dtype_traits<bool> { static constexpr DType value = DType::Bool; static constexpr std::string_view name = "bool"; };

/// The DType tag of element type T.
template <Element T>
inline constexpr DType dtype_of = dtype_traits<T>::value;

/// Size in bytes of one element of `dtype`.
constexpr std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float32: case DType::Int32: return 4;
    case DType::Float64: case DType::Int64: return 8;
    case DType::BFloat16: case DType::Float16: return 2;
    case DType::Bool: return 1;
  }
  return 0;
}

/// Lower-case name of `dtype` ("float32", "bfloat16", ...).
constexpr std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::BFloat16: return "bfloat16";
    case DType::Float16: return "float16";
    case DType::Bool: return "bool";
  }
  return "?";
}

/// Converts between element types (through float for the 16-bit types).
template <Element To, Element From>
CONDENSE_HD To convert_element(From value) {
  if constexpr (std::is_same_v<To, From>) {
    return value;
  } else if constexpr (std::is_same_v<From, bfloat16> || std::is_same_v<From, float16>) {
    return convert_element<To>(static_cast<float>(value));
  } else if constexpr (std::is_same_v<To, bfloat16> || std::is_same_v<To, float16>) {
    return To(static_cast<float>(value));
  } else {
    return static_cast<To>(value);
  }
}

}  // namespace condense
