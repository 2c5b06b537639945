// The small products of the CPU attention kernels (condense/backend/cpu/tile_gemm.hpp):
// tile_gemm (the AVX2 kernel where the build has it) and tile_gemm_portable (Eigen) against
// a plain triple loop in double, over every row count around the 6-row blocks, every column
// count around the 16- and 8-column blocks and the masked tail, A read both ways round,
// overwrite and accumulate; the columns of C past `cols` must stay untouched.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "condense/backend/cpu/tile_gemm.hpp"

namespace test_tile_gemm {

using condense::cpu::TileOperand;

namespace {

/// One product of the given extents checked against the triple loop; returns the largest
/// error relative to the largest |reference| (0 when exact).
template <class T, class Product>
double product_error(std::int64_t rows, std::int64_t cols, std::int64_t depth, bool a_transposed, bool accumulate,
                     std::mt19937& rng, Product product) {
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  const std::int64_t ldb = cols + 3, ldc = cols + 5;  // padded rows: the kernels must honour the strides
  std::vector<T> a(static_cast<std::size_t>(rows * depth + 1)), b(static_cast<std::size_t>(depth * ldb + 1));
  std::vector<T> c(static_cast<std::size_t>(rows * ldc + 1));
  for (T& e : a) e = static_cast<T>(uniform(rng));
  for (T& e : b) e = static_cast<T>(uniform(rng));
  for (T& e : c) e = static_cast<T>(uniform(rng));
  const TileOperand<T> op{a.data(), a_transposed ? 1 : depth, a_transposed ? rows : 1};
  std::vector<double> expected(c.begin(), c.end());
  double largest = 1e-30;
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      double sum = 0;
      for (std::int64_t k = 0; k < depth; ++k)
        sum += static_cast<double>(a[static_cast<std::size_t>(i * op.row_stride + k * op.inner_stride)]) *
               static_cast<double>(b[static_cast<std::size_t>(k * ldb + j)]);
      double& e = expected[static_cast<std::size_t>(i * ldc + j)];
      e = accumulate ? e + sum : sum;
      largest = std::max(largest, std::abs(e));
    }
  }
  product(rows, cols, depth, op, b.data(), ldb, c.data(), ldc, accumulate);
  double worst = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    const auto row = static_cast<std::int64_t>(i) / ldc, col = static_cast<std::int64_t>(i) % ldc;
    const bool inside = row < rows && col < cols;
    const double err = std::abs(static_cast<double>(c[i]) - expected[i]);
    if (!inside && err != 0.0) return INFINITY;  // a write outside C
    worst = std::max(worst, err / largest);
  }
  return worst;
}

template <class T, class Product>
void check_all_shapes(Product product, double tolerance) {
  std::mt19937 rng(7);
  for (std::int64_t rows : {1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 64})
    for (std::int64_t cols : {1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 33, 64})
      for (std::int64_t depth : {0, 1, 5, 64})
        for (bool transposed : {false, true})
          for (bool accumulate : {false, true}) {
            CAPTURE(rows);
            CAPTURE(cols);
            CAPTURE(depth);
            CAPTURE(transposed);
            CAPTURE(accumulate);
            CHECK(product_error<T>(rows, cols, depth, transposed, accumulate, rng, product) <= tolerance);
          }
}

}  // namespace

TEST_CASE("tile_gemm matches the triple loop for every block shape, both A layouts, overwrite and accumulate") {
  const auto fast = [](auto... args) { condense::cpu::tile_gemm(args...); };
  const auto portable = [](auto... args) { condense::cpu::tile_gemm_portable(args...); };
  SUBCASE("float, tile_gemm") { check_all_shapes<float>(fast, 1e-5); }
  SUBCASE("float, Eigen") { check_all_shapes<float>(portable, 1e-5); }
  SUBCASE("double, tile_gemm") { check_all_shapes<double>(fast, 1e-13); }
}

TEST_CASE("tile_gemm with no rows or columns writes nothing") {
  std::vector<float> a(8, 1.f), b(8, 1.f), c(8, 3.f);
  condense::cpu::tile_gemm<float>(0, 4, 2, {a.data(), 2, 1}, b.data(), 4, c.data(), 4, false);
  condense::cpu::tile_gemm<float>(2, 0, 2, {a.data(), 2, 1}, b.data(), 4, c.data(), 4, false);
  for (float e : c) CHECK(e == 3.f);
}

}  // namespace test_tile_gemm
