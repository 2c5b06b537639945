// CPU matrix product on raw pointers with strides: float on the packed AVX2 GEMM of
// packed_gemm.hpp where the build has AVX2 and FMA, otherwise on Eigen's GEMM. An operand is a
// row-major (unit column stride) or column-major (unit row stride) matrix with any leading
// dimension, so a transposed view multiplies without a copy: it is mapped with
// Eigen::Map + Eigen::OuterStride in the other storage order (the packed GEMM reads any
// strides). Both split one product across the OpenMP threads (omp_get_max_threads()) unless
// the call is already inside a parallel region with more than one thread, where it runs
// single-threaded (batched products rely on it).
// Integer elements take a plain loop (cheap to compile; integer products are not a hot path).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#include "condense/backend/cpu/matrix_ref.hpp"
#include "condense/backend/cpu/packed_gemm.hpp"
#include "condense/backend/cpu/parallel.hpp"

namespace condense::cpu {

/// How a matrix can be handed to Eigen.
enum class GemmLayout { RowMajor, ColMajor, Unsupported };

/// The storage order Eigen can read a rows x cols matrix with these strides in, and its leading
/// dimension (outer stride, >= 1). Extents of 0 or 1 accept any stride along them. A stride of
/// 0 (broadcast) or a leading dimension shorter than the row/column is Unsupported.
inline GemmLayout gemm_layout(std::int64_t rows, std::int64_t cols, std::int64_t row_stride, std::int64_t col_stride,
                              std::int64_t* leading_dim) {
  if ((cols <= 1 || col_stride == 1) && (rows <= 1 || row_stride >= std::max<std::int64_t>(cols, 1))) {
    *leading_dim = rows <= 1 ? std::max<std::int64_t>(cols, 1) : row_stride;
    return GemmLayout::RowMajor;
  }
  if ((rows <= 1 || row_stride == 1) && (cols <= 1 || col_stride >= std::max<std::int64_t>(rows, 1))) {
    *leading_dim = cols <= 1 ? std::max<std::int64_t>(rows, 1) : col_stride;
    return GemmLayout::ColMajor;
  }
  return GemmLayout::Unsupported;
}

/// True when `m` can be passed to gemm() as it is.
template <class T>
bool gemm_compatible(const MatrixRef<T>& m) {
  std::int64_t ld = 0;
  return gemm_layout(m.rows, m.cols, m.row_stride, m.col_stride, &ld) != GemmLayout::Unsupported;
}

namespace detail {

template <class T, int Order>
using ConstMatrixMap =
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using RowMajorMatrixMap =
    Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <class T, int OrderA, int OrderB>
void gemm_mapped(const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T* c, std::int64_t ldc, std::int64_t m,
                 std::int64_t k, std::int64_t n, bool accumulate) {
  using Index = Eigen::Index;
  const ConstMatrixMap<T, OrderA> A(a, static_cast<Index>(m), static_cast<Index>(k), Eigen::OuterStride<>(static_cast<Index>(lda)));
  const ConstMatrixMap<T, OrderB> B(b, static_cast<Index>(k), static_cast<Index>(n), Eigen::OuterStride<>(static_cast<Index>(ldb)));
  RowMajorMatrixMap<T> C(c, static_cast<Index>(m), static_cast<Index>(n), Eigen::OuterStride<>(static_cast<Index>(ldc)));
  if (accumulate) {
    C.noalias() += A * B;
  } else {
    C.noalias() = A * B;
  }
}

}  // namespace detail

/// Plain loop product for integer elements and for layouts Eigen cannot map: rows of c split
/// across threads, the inner loop streams along a row of b and of c (vectorisable when both
/// have unit column stride).
template <class T>
void gemm_loop(const MatrixRef<const T>& a, const MatrixRef<const T>& b, const MatrixRef<T>& c, bool accumulate) {
  const std::int64_t n = c.cols, k = a.cols;
  const std::int64_t grain = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(n * std::max<std::int64_t>(k, 1), 1));
  parallel_for(0, c.rows, grain, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      T* crow = c.data + i * c.row_stride;
      if (!accumulate)
        for (std::int64_t j = 0; j < n; ++j) crow[j * c.col_stride] = T(0);
      for (std::int64_t p = 0; p < k; ++p) {
        const T aip = a.data[i * a.row_stride + p * a.col_stride];
        const T* brow = b.data + p * b.row_stride;
        if (b.col_stride == 1 && c.col_stride == 1) {
          for (std::int64_t j = 0; j < n; ++j) crow[j] += aip * brow[j];
        } else {
          for (std::int64_t j = 0; j < n; ++j) crow[j * c.col_stride] += aip * brow[j * b.col_stride];
        }
      }
    }
  });
}

/// c = a @ b, or c += a @ b through Eigen (float and double): operands gemm_compatible, or
/// gemm_loop() takes the product.
template <class T>
void gemm_eigen(const MatrixRef<const T>& a, const MatrixRef<const T>& b, const MatrixRef<T>& c, bool accumulate) {
  const std::int64_t m = c.rows, n = c.cols, k = a.cols;
  if (!gemm_compatible(a) || !gemm_compatible(b) || !gemm_compatible(c)) {
    gemm_loop(a, b, c, accumulate);
    return;
  }
  std::int64_t lda = 0, ldb = 0, ldc = 0;
  if (gemm_layout(c.rows, c.cols, c.row_stride, c.col_stride, &ldc) == GemmLayout::ColMajor) {
    // c^T = b^T @ a^T with c^T row-major: one set of kernels serves both output orders.
    gemm_eigen(b.transposed(), a.transposed(), c.transposed(), accumulate);
    return;
  }
  const GemmLayout la = gemm_layout(a.rows, a.cols, a.row_stride, a.col_stride, &lda);
  const GemmLayout lb = gemm_layout(b.rows, b.cols, b.row_stride, b.col_stride, &ldb);
  constexpr int R = Eigen::RowMajor, C = Eigen::ColMajor;
  if (la == GemmLayout::RowMajor && lb == GemmLayout::RowMajor) {
    detail::gemm_mapped<T, R, R>(a.data, lda, b.data, ldb, c.data, ldc, m, k, n, accumulate);
  } else if (la == GemmLayout::RowMajor) {
    detail::gemm_mapped<T, R, C>(a.data, lda, b.data, ldb, c.data, ldc, m, k, n, accumulate);
  } else if (lb == GemmLayout::RowMajor) {
    detail::gemm_mapped<T, C, R>(a.data, lda, b.data, ldb, c.data, ldc, m, k, n, accumulate);
  } else {
    detail::gemm_mapped<T, C, C>(a.data, lda, b.data, ldb, c.data, ldc, m, k, n, accumulate);
  }
}

/// c = a @ b, or c += a @ b when `accumulate`. a: [m, k], b: [k, n], c: [m, n]; c must not
/// overlap a or b. float takes the packed AVX2 GEMM where the build has AVX2 and FMA (any
/// strides); float otherwise and double go to Eigen; integer types, and operands that are
/// not gemm_compatible() on the Eigen path, take gemm_loop().
template <class T>
void gemm(const MatrixRef<const T>& a, const MatrixRef<const T>& b, const MatrixRef<T>& c, bool accumulate) {
  if (c.rows == 0 || c.cols == 0) return;
  if constexpr (!std::is_floating_point_v<T>) {
    gemm_loop(a, b, c, accumulate);
  } else {
#if defined(CONDENSE_CPU_PACKED_GEMM)
    if constexpr (std::is_same_v<T, float>) {
      packed::gemm(a, b, c, accumulate);
      return;
    }
#endif
    gemm_eigen(a, b, c, accumulate);
  }
}

}  // namespace condense::cpu
