// Division by a divisor fixed at launch time as a multiply-high, an add and a shift
// (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994).
// The strided CUDA kernels split a linear element index into coordinates with it: a GPU
// has no integer divide instruction, and 64-bit division by a runtime divisor costs tens
// of instructions per dim and operand, enough to make a transposing copy compute-bound.
// Host and device code; tests/core/test_index_divider.cpp checks it against `/` and `%`.
#pragma once

#include <cstdint>

#include "condense/core/config.hpp"

namespace condense::cuda {

/// n / d and n % d for every n < 2^31, with the divisor 1 <= d < 2^31 fixed at construction.
class IndexDivider {
 public:
  /// Division by 1.
  IndexDivider() = default;

  /// Division by `divisor` (1 <= divisor < 2^31; the launchers check the extents they pass).
  explicit IndexDivider(std::uint32_t divisor) : divisor_(divisor) {
    // shift = ceil(log2(divisor)); multiplier = floor(2^32 (2^shift - divisor) / divisor) + 1,
    // which is below 2^32 (1 for a power of two).
    while (shift_ < 31 && (std::uint64_t{1} << shift_) < divisor) ++shift_;
    const std::uint64_t excess = (std::uint64_t{1} << shift_) - divisor;  // < divisor <= 2^31
    multiplier_ = static_cast<std::uint32_t>((excess << 32) / divisor + 1);
  }

  /// The divisor d.
  CONDENSE_HD std::uint32_t divisor() const { return divisor_; }

  /// n / d for n < 2^31 (the high word of n * multiplier never exceeds n, so the sum fits).
  CONDENSE_HD std::uint32_t divide(std::uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const std::uint32_t high = __umulhi(n, multiplier_);
#else
    const auto high = static_cast<std::uint32_t>((static_cast<std::uint64_t>(n) * multiplier_) >> 32);
#endif
    return (high + n) >> shift_;
  }

  /// n % d for n < 2^31.
  CONDENSE_HD std::uint32_t remainder(std::uint32_t n) const { return n - divide(n) * divisor_; }

 private:
  std::uint32_t divisor_ = 1;
  std::uint32_t multiplier_ = 1;
  std::uint32_t shift_ = 0;
};

}  // namespace condense::cuda
