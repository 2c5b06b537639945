// The CUDA scan kernels (kernels/detail/scan_kernels.cuh) run on the CPU through
// tests/emulation/cuda_emulation.hpp, checked against plain sequential scans: the chunked
// cumsum over contiguous lines (both passes, one chunk and many, lines that end inside a
// round of 256, forward and reverse, float bit for bit on whole numbers, wrapping int32 and
// int64), the one-thread-per-line scans (cumsum, cumprod, strided lines) and the arg
// reductions (one block per long line, one thread per line; ties and NaNs).
#define CONDENSE_CUDA_EMULATION 1
#include "emulation/cuda_emulation.hpp"
// The emulation header must come first: the kernels see its threadIdx, __syncthreads, ...
#include "detail/scan_kernels.cuh"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace test_scan_kernels_emulated {

using namespace condense;
namespace scan = condense::cuda::scan_detail;
namespace emu = condense_cuda_emulation;

namespace {

/// Sequential inclusive scan of each line of `lines` x n (wrapping for integers).
template <class T>
std::vector<T> reference_cumsum(const std::vector<T>& x, std::int64_t lines, std::int64_t n, bool reverse) {
  std::vector<T> out(x.size());
  for (std::int64_t l = 0; l < lines; ++l) {
    T acc = T(0);
    for (std::int64_t c = 0; c < n; ++c) {
      const std::int64_t at = l * n + (reverse ? n - 1 - c : c);
      if constexpr (std::is_integral_v<T>) {
        using U = std::make_unsigned_t<T>;
        acc = static_cast<T>(static_cast<U>(acc) + static_cast<U>(x[static_cast<std::size_t>(at)]));
      } else {
        acc = c == 0 ? x[static_cast<std::size_t>(at)] : acc + x[static_cast<std::size_t>(at)];
      }
      out[static_cast<std::size_t>(at)] = acc;
    }
  }
  return out;
}

/// The chunked cumsum (both passes) in emulation, as cuda::scan launches it.
template <class T>
std::vector<T> chunked_cumsum(const std::vector<T>& x, std::int64_t lines, std::int64_t n, bool reverse) {
  using C = cuda::detail::compute_t<T>;
  const auto plan = scan::chunked_cumsum_plan(lines, n);
  std::vector<C> totals(static_cast<std::size_t>(lines * plan.chunks));
  std::vector<T> out(x.size());
  if (plan.chunks > 1)
    emu::launch(dim3(plan.blocks), dim3(scan::scan_threads), 0, scan::cumsum_chunk_totals<T, C>, totals.data(), x.data(),
                lines, n, plan.chunks, reverse);
  emu::launch(dim3(plan.blocks), dim3(scan::scan_threads), 0, scan::cumsum_chunks<T, C>, out.data(), x.data(),
              static_cast<const C*>(totals.data()), lines, n, plan.chunks, reverse);
  return out;
}

}  // namespace

TEST_CASE("emulated scan kernels: the chunked cumsum equals a sequential scan, bit for bit on whole numbers") {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> small(-8, 8);
  // One chunk (a round of 256 and a partial one), several chunks (the first pass), a line
  // ending exactly on a chunk, and several lines.
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {{1, 300}, {1, 9000}, {3, 4096}, {2, 8193}, {5, 257}};
  for (const auto& [lines, n] : shapes) {
    for (const bool reverse : {false, true}) {
      CAPTURE(lines);
      CAPTURE(n);
      CAPTURE(reverse);
      std::vector<float> xf(static_cast<std::size_t>(lines * n));
      for (auto& v : xf) v = static_cast<float>(small(rng));  // whole numbers: every order gives the same sums
      CHECK(chunked_cumsum(xf, lines, n, reverse) == reference_cumsum(xf, lines, n, reverse));
      std::vector<std::int64_t> xi(xf.size());
      for (auto& v : xi) v = std::numeric_limits<std::int64_t>::max() / 3 + small(rng);  // wraps around
      CHECK(chunked_cumsum(xi, lines, n, reverse) == reference_cumsum(xi, lines, n, reverse));
      std::vector<std::int32_t> x32(xf.size());
      for (auto& v : x32) v = std::numeric_limits<std::int32_t>::max() / 5 + small(rng);
      CHECK(chunked_cumsum(x32, lines, n, reverse) == reference_cumsum(x32, lines, n, reverse));
    }
  }
}

TEST_CASE("emulated scan kernels: the chunked cumsum of random floats stays within rounding of a sequential scan") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  const std::int64_t lines = 2, n = 10000;
  std::vector<float> x(static_cast<std::size_t>(lines * n));
  for (auto& v : x) v = normal(rng);
  const auto got = chunked_cumsum(x, lines, n, false);
  std::vector<double> exact(x.size());
  for (std::int64_t l = 0; l < lines; ++l) {
    double acc = 0;
    for (std::int64_t c = 0; c < n; ++c) exact[static_cast<std::size_t>(l * n + c)] = acc += x[static_cast<std::size_t>(l * n + c)];
  }
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(got[i]) - exact[i]));
  CHECK(worst < 1e-3);
}

TEST_CASE("emulated scan kernels: one thread per line scans strided lines, cumprod included") {
  // [outer 3, n 5, inner 7]: each thread walks one (outer, inner) line with stride 7.
  const std::int64_t outer = 3, n = 5, inner = 7, lines = outer * inner;
  std::vector<double> x(static_cast<std::size_t>(outer * n * inner));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.5 + static_cast<double>(i % 11) / 8;
  for (const auto code : {cuda::ScanOp::Sum, cuda::ScanOp::Prod}) {
    for (const bool reverse : {false, true}) {
      std::vector<double> out(x.size());
      emu::launch(dim3(cuda::detail::grid_for(lines, scan::line_threads)), dim3(scan::line_threads), 0,
                  scan::scan_lines<double, double>, out.data(), static_cast<const double*>(x.data()), lines, n, inner, code, reverse);
      for (std::int64_t o = 0; o < outer; ++o)
        for (std::int64_t i = 0; i < inner; ++i) {
          double acc = code == cuda::ScanOp::Sum ? 0.0 : 1.0;
          for (std::int64_t c = 0; c < n; ++c) {
            const std::int64_t k = reverse ? n - 1 - c : c, at = (o * n + k) * inner + i;
            acc = code == cuda::ScanOp::Sum ? acc + x[static_cast<std::size_t>(at)] : acc * x[static_cast<std::size_t>(at)];
            CHECK(out[static_cast<std::size_t>(at)] == doctest::Approx(acc).epsilon(1e-12));
          }
        }
    }
  }
}

TEST_CASE("emulated scan kernels: arg reductions over long rows in blocks and short lines per thread") {
  const std::int64_t rows = 3, n = 2000;
  std::vector<float> x(static_cast<std::size_t>(rows * n));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 1000);
  x[1 * n + 1500] = 5000.f;  // row 1: a unique maximum late in the row
  x[2 * n + 700] = 999.f;    // row 2: ties with the first 999: the first position wins
  x[2 * n + 10] = std::nanf("");  // and a NaN wins over everything
  for (const bool blocks : {true, false}) {
    CAPTURE(blocks);
    std::vector<float> values(static_cast<std::size_t>(rows));
    std::vector<std::int64_t> indices(static_cast<std::size_t>(rows));
    if (blocks) {
      emu::launch(dim3(rows), dim3(scan::arg_block_threads), 0, scan::arg_reduce_rows<float, float>, values.data(),
                  indices.data(), static_cast<const float*>(x.data()), rows, n, true);
    } else {
      emu::launch(dim3(cuda::detail::grid_for(rows, scan::line_threads)), dim3(scan::line_threads), 0,
                  scan::arg_reduce_lines<float, float>, values.data(), indices.data(), static_cast<const float*>(x.data()), rows, n,
                  std::int64_t{1}, true);
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      std::int64_t best = 0;
      for (std::int64_t k = 1; k < n; ++k) {
        const float v = x[static_cast<std::size_t>(r * n + k)], b = x[static_cast<std::size_t>(r * n + best)];
        if (!std::isnan(b) && (std::isnan(v) || v > b)) best = k;
      }
      CHECK(indices[static_cast<std::size_t>(r)] == best);
    }
    CHECK(indices[1] == 1500);
    CHECK(indices[2] == 10);
  }
}

}  // namespace test_scan_kernels_emulated
