// The small dense products of the CPU attention kernels (a query tile against a key tile,
// both at most a few hundred rows, inner dimension the head dim or the tile length):
// C = A B, or C += A B. A is read element by element through a row stride
// and an inner stride, so it may be stored either way round (P or P^T, dS or dS^T) without
// a copy; B is row-major with contiguous columns. There is no packing: the kernels call
// this once per tile pair, where the packing of a general GEMM (Eigen's) costs as much as a
// good part of the product itself.
//
// With AVX2 and FMA (float), a register-blocked kernel keeps a 6 x 16 block of C in twelve
// 8-float registers and walks the inner dimension with two loads of B and six broadcasts of
// A per step; narrower column blocks use one register or masked loads, fewer rows a shorter
// block. Otherwise (double, or a build without AVX2) the product goes to Eigen over maps of
// the same strides (tile_gemm_portable, which the tests also check on AVX2 machines).
#pragma once

#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CONDENSE_CPU_TILE_GEMM_AVX2 1
#endif

namespace condense::cpu {

/// A read-only operand of tile_gemm: element (i, k) is data[i * row_stride + k * inner_stride].
template <class T>
struct TileOperand {
  const T* data = nullptr;
  std::int64_t row_stride = 0;
  std::int64_t inner_stride = 1;
};

/// C = A B (accumulate false) or C += A B (accumulate true) through Eigen.
// a: [rows, depth] (any strides), b: [depth, cols] (row stride ldb, contiguous columns),
// c: [rows, cols] (row stride ldc, contiguous columns)
template <class T>
void tile_gemm_portable(std::int64_t rows, std::int64_t cols, std::int64_t depth, TileOperand<T> a, const T* b,
                        std::int64_t ldb, T* c, std::int64_t ldc, bool accumulate) {
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Strided = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::Map<const RowMajor, 0, Strided> am(a.data, rows, depth, Strided(a.row_stride, a.inner_stride));
  const Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>> bm(b, depth, cols, Eigen::OuterStride<>(ldb));
  Eigen::Map<RowMajor, 0, Eigen::OuterStride<>> cm(c, rows, cols, Eigen::OuterStride<>(ldc));
  if (accumulate) {
    cm.noalias() += am * bm;
  } else {
    cm.noalias() = am * bm;
  }
}

#if defined(CONDENSE_CPU_TILE_GEMM_AVX2)
namespace detail {

/// The C block of Rows rows and Vectors registers of 8 columns at c: C (+)= A B over
/// `depth` inner steps; `tail` masks the last register's columns when Masked. Also the
/// kernel of packed_gemm.hpp, on its packed panels.
template <int Rows, int Vectors, bool Masked>
inline void tile_gemm_block(std::int64_t depth, const float* a, std::int64_t a_row_stride, std::int64_t a_inner_stride,
                            const float* b, std::int64_t ldb, float* c, std::int64_t ldc, bool accumulate, __m256i tail) {
  // C's rows are read (or written) only after the inner loop: fetch their lines now.
  _Pragma("GCC unroll 8") for (int r = 0; r < Rows; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 8 * Vectors - 1), _MM_HINT_T0);
  }
  __m256 acc[Rows][Vectors];
  _Pragma("GCC unroll 8") for (int r = 0; r < Rows; ++r)
    _Pragma("GCC unroll 8") for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm256_setzero_ps();
  for (std::int64_t k = 0; k < depth; ++k) {
    const float* brow = b + k * ldb;
    __m256 bv[Vectors];
    _Pragma("GCC unroll 8") for (int v = 0; v < Vectors; ++v)
      bv[v] = Masked && v == Vectors - 1 ? _mm256_maskload_ps(brow + 8 * v, tail) : _mm256_loadu_ps(brow + 8 * v);
    const float* acol = a + k * a_inner_stride;
    _Pragma("GCC unroll 8") for (int r = 0; r < Rows; ++r) {
      const __m256 ar = _mm256_broadcast_ss(acol + r * a_row_stride);
      _Pragma("GCC unroll 8") for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < Rows; ++r) {
    float* crow = c + r * ldc;
    _Pragma("GCC unroll 8") for (int v = 0; v < Vectors; ++v) {
      const bool masked = Masked && v == Vectors - 1;
      __m256 result = acc[r][v];
      if (accumulate)
        result = _mm256_add_ps(result, masked ? _mm256_maskload_ps(crow + 8 * v, tail) : _mm256_loadu_ps(crow + 8 * v));
      if (masked) {
        _mm256_maskstore_ps(crow + 8 * v, tail, result);
      } else {
        _mm256_storeu_ps(crow + 8 * v, result);
      }
    }
  }
}

/// Rows rows of C (from a, c) over all `cols` columns: blocks of 16 columns, then one of 8
/// and one masked block for the rest. The rows' A elements stay in L1 across the blocks.
template <int Rows>
inline void tile_gemm_rows(std::int64_t cols, std::int64_t depth, const float* a, std::int64_t a_row_stride,
                           std::int64_t a_inner_stride, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
                           bool accumulate) {
  const __m256i all = _mm256_set1_epi32(-1);
  std::int64_t j = 0;
  for (; cols - j >= 16; j += 16)
    tile_gemm_block<Rows, 2, false>(depth, a, a_row_stride, a_inner_stride, b + j, ldb, c + j, ldc, accumulate, all);
  if (cols - j >= 8) {
    tile_gemm_block<Rows, 1, false>(depth, a, a_row_stride, a_inner_stride, b + j, ldb, c + j, ldc, accumulate, all);
    j += 8;
  }
  if (cols > j) {
    // Lane l of the masked register is live when l < cols - j (1..7).
    const __m256i tail =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols - j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    tile_gemm_block<Rows, 1, true>(depth, a, a_row_stride, a_inner_stride, b + j, ldb, c + j, ldc, accumulate, tail);
  }
}

}  // namespace detail
#endif

/// C = A B (accumulate false) or C += A B (accumulate true) for the small products of a
/// tile loop; C must not overlap A or B. Float with AVX2 and FMA takes the register-blocked
/// kernel (blocks of 6 rows, then one shorter block); everything else tile_gemm_portable.
// a: [rows, depth] (any strides), b: [depth, cols] (row stride ldb, contiguous columns),
// c: [rows, cols] (row stride ldc, contiguous columns)
template <class T>
void tile_gemm(std::int64_t rows, std::int64_t cols, std::int64_t depth, TileOperand<T> a, const T* b, std::int64_t ldb,
               T* c, std::int64_t ldc, bool accumulate) {
  if (rows <= 0 || cols <= 0) return;
#if defined(CONDENSE_CPU_TILE_GEMM_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    std::int64_t r = 0;
    const auto block = [&](auto rows_tag) {
      constexpr int R = decltype(rows_tag)::value;
      detail::tile_gemm_rows<R>(cols, depth, a.data + r * a.row_stride, a.row_stride, a.inner_stride, b, ldb,
                                c + r * ldc, ldc, accumulate);
      r += R;
    };
    for (; rows - r >= 6;) block(std::integral_constant<int, 6>{});
    switch (rows - r) {
      case 5: block(std::integral_constant<int, 5>{}); break;
      case 4: block(std::integral_constant<int, 4>{}); break;
      case 3: block(std::integral_constant<int, 3>{}); break;
      case 2: block(std::integral_constant<int, 2>{}); break;
      case 1: block(std::integral_constant<int, 1>{}); break;
      default: break;
    }
    return;
  }
#endif
  tile_gemm_portable(rows, cols, depth, a, b, ldb, c, ldc, accumulate);
}

}  // namespace condense::cpu
