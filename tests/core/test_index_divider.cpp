// The multiply-shift divider of the strided CUDA kernels (condense/backend/cuda/
// index_divider.hpp), checked on the CPU against `/` and `%`: every divisor up to 2^12
// with every dividend near its multiples and the top of the range, powers of two and their
// neighbours, and random divisors and dividends across the whole 31-bit range.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "condense/backend/cuda/index_divider.hpp"

namespace test_index_divider {

using condense::cuda::IndexDivider;

namespace {

constexpr std::uint32_t top = 0x7fffffffu;  ///< the largest dividend the divider takes

/// Dividends that stress `d`: 0..2d, around a few multiples spread over the range, and the top.
std::vector<std::uint32_t> dividends_for(std::uint32_t d, std::mt19937_64& rng) {
  std::vector<std::uint32_t> n;
  for (std::uint64_t i = 0; i <= 2ull * d && i <= top && n.size() < 20000; ++i) n.push_back(static_cast<std::uint32_t>(i));
  std::uniform_int_distribution<std::uint32_t> any(0, top);
  for (int k = 0; k < 200; ++k) {
    const std::uint64_t multiple = static_cast<std::uint64_t>(any(rng) / d) * d;
    for (std::int64_t delta = -2; delta <= 2; ++delta) {
      const auto v = static_cast<std::int64_t>(multiple) + delta;
      if (v >= 0 && v <= top) n.push_back(static_cast<std::uint32_t>(v));
    }
  }
  for (std::uint32_t back = 0; back < 64; ++back) n.push_back(top - back);
  return n;
}

/// The number of dividends `divider` gets wrong.
std::int64_t mistakes(const IndexDivider& divider, const std::vector<std::uint32_t>& dividends) {
  std::int64_t wrong = 0;
  const std::uint32_t d = divider.divisor();
  for (const std::uint32_t n : dividends)
    if (divider.divide(n) != n / d || divider.remainder(n) != n % d) ++wrong;
  return wrong;
}

}  // namespace

TEST_CASE("IndexDivider: every divisor up to 4096, near its multiples and the top of the range") {
  std::mt19937_64 rng(1);
  std::int64_t wrong = 0;
  for (std::uint32_t d = 1; d <= 4096; ++d) wrong += mistakes(IndexDivider(d), dividends_for(d, rng));
  CHECK(wrong == 0);
}

TEST_CASE("IndexDivider: powers of two, their neighbours and the largest divisors") {
  std::mt19937_64 rng(2);
  for (int bits = 0; bits <= 31; ++bits) {
    for (std::int64_t delta = -1; delta <= 1; ++delta) {
      const std::int64_t d = (std::int64_t{1} << bits) + delta;
      if (d < 1 || d > top) continue;
      CAPTURE(d);
      CHECK(mistakes(IndexDivider(static_cast<std::uint32_t>(d)), dividends_for(static_cast<std::uint32_t>(d), rng)) == 0);
    }
  }
  for (std::uint32_t d = top; d > top - 16; --d) {
    CAPTURE(d);
    CHECK(mistakes(IndexDivider(d), dividends_for(d, rng)) == 0);
  }
}

TEST_CASE("IndexDivider: random divisors and dividends over the 31-bit range") {
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<std::uint32_t> any(1, top);
  std::uniform_int_distribution<int> bits(1, 31);
  std::int64_t wrong = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    // a divisor of every magnitude, [2^(b-1), 2^b) for b in 1..31 (a uniform draw over the
    // whole range would favour the large ones)
    const int b = bits(rng);
    const std::uint32_t low = std::uint32_t{1} << (b - 1);
    const std::uint32_t d = low + static_cast<std::uint32_t>(rng() % low);
    std::vector<std::uint32_t> n;
    for (int k = 0; k < 500; ++k) n.push_back(any(rng));
    wrong += mistakes(IndexDivider(d), n);
  }
  CHECK(wrong == 0);
  // The default divides by one.
  const IndexDivider one;
  CHECK(one.divide(top) == top);
  CHECK(one.remainder(12345) == 0);
}

}  // namespace test_index_divider
