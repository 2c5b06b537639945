// Device: the runtime tag that says where a tensor's storage lives (CPU or CUDA device i).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace condense {

/// Where a tensor lives. `Device::cpu()` or `Device::cuda(index)`.
struct Device {
  enum class Kind : std::uint8_t { CPU, CUDA };
  Kind kind = Kind::CPU;
  int index = 0;

  /// The host.
  static constexpr Device cpu() { return Device{Kind::CPU, 0}; }
  /// CUDA device number `index`.
  static constexpr Device cuda(int index = 0) { return Device{Kind::CUDA, index}; }

  constexpr bool is_cpu() const { return kind == Kind::CPU; }
  constexpr bool is_cuda() const { return kind == Kind::CUDA; }
  friend constexpr bool operator==(Device, Device) = default;

  /// "cpu" or "cuda:0".
  std::string str() const { return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index); }
  friend std::ostream& operator<<(std::ostream& os, Device d) { return os << d.str(); }
};

}  // namespace condense
