// The float GEMM of AVX2/FMA builds: C = A B or C += A B for operands of any strides, in
// the blocked shape of BLIS-like libraries. B is copied block by block (kc x nc) into panels
// of 16 columns and A (mc x kc) into panels of 6 rows, so the inner kernel reads both
// contiguously whatever the operands' layouts (a transposed weight costs one strided copy
// per block, not a slower kernel); a 6 x 16 block of C is held in twelve 8-float registers
// across the kc inner steps (tile_gemm.hpp's register kernel, reading the packed panels).
// The blocks of C are shared out across the OpenMP threads (none inside an enclosing
// parallel region, where batched products already split the work). Operands are
// MatrixRefs (matrix_ref.hpp), as for cpu::gemm.
// cpu::gemm calls it for float when the build has AVX2 and FMA; without them this header
// declares nothing and Eigen's GEMM serves.
#pragma once

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <new>

#include "condense/backend/cpu/matrix_ref.hpp"
#include "condense/backend/cpu/tile_gemm.hpp"

#define CONDENSE_CPU_PACKED_GEMM 1

namespace condense::cpu::packed {

constexpr std::int64_t mr = 6;    ///< rows of a register block of C (and of an A panel)
constexpr std::int64_t nr = 16;   ///< columns of a register block (two 8-float registers)
constexpr std::int64_t kc = 256;  ///< inner steps per packed block (a B panel 16 KB, an A panel 6 KB: both in L1)
constexpr std::int64_t mc = 96;   ///< rows per packed A block (16 panels, 96 KB: in L2)
constexpr std::int64_t nc = 3072;  ///< columns per packed B block (3 MB: in L3)

/// A 64-byte aligned float buffer (whole cache lines per packed B row of 16 floats).
class PackBuffer {
 public:
  explicit PackBuffer(std::int64_t elements)
      : data_(static_cast<float*>(::operator new[](static_cast<std::size_t>(elements) * sizeof(float), std::align_val_t{64}))) {}
  PackBuffer(const PackBuffer&) = delete;
  PackBuffer& operator=(const PackBuffer&) = delete;
  ~PackBuffer() { ::operator delete[](data_, std::align_val_t{64}); }
  float* data() const { return data_; }

 private:
  float* data_;
};

/// A read-only operand (A or B).
using Operand = MatrixRef<const float>;

/// Packs rows [i0, i0 + rows) x inner steps [p0, p0 + depth) of A into panels of mr rows:
/// panel q holds, for each step k, its mr elements (rows past `rows` are zero).
// a block: [rows, depth] -> out: [ceil(rows / mr), depth, mr]
inline void pack_a(Operand a, std::int64_t i0, std::int64_t rows, std::int64_t p0, std::int64_t depth, float* out) {
  for (std::int64_t q = 0; q < rows; q += mr) {
    const std::int64_t live = std::min(mr, rows - q);
    float* panel = out + q * depth;
    if (a.col_stride == 1) {
      for (std::int64_t r = 0; r < mr; ++r) {
        if (r >= live) {
          for (std::int64_t k = 0; k < depth; ++k) panel[k * mr + r] = 0.f;
          continue;
        }
        const float* row = a.data + (i0 + q + r) * a.row_stride + p0;
        for (std::int64_t k = 0; k < depth; ++k) panel[k * mr + r] = row[k];
      }
    } else {
      for (std::int64_t k = 0; k < depth; ++k)
        for (std::int64_t r = 0; r < mr; ++r) panel[k * mr + r] = r < live ? a(i0 + q + r, p0 + k) : 0.f;
    }
  }
}

/// Packs steps [p0, p0 + depth) x columns [j0, j0 + cols) of B into panels of nr columns:
/// panel q holds, for each step k, its nr elements (columns past `cols` are zero).
// b block: [depth, cols] -> out: [ceil(cols / nr), depth, nr]
inline void pack_b_panel(Operand b, std::int64_t p0, std::int64_t depth, std::int64_t j0, std::int64_t cols, float* out) {
  const std::int64_t live = std::min(nr, cols);
  if (b.col_stride == 1 && live == nr) {
    for (std::int64_t k = 0; k < depth; ++k) {
      const float* row = b.data + (p0 + k) * b.row_stride + j0;
      _mm256_storeu_ps(out + k * nr, _mm256_loadu_ps(row));
      _mm256_storeu_ps(out + k * nr + 8, _mm256_loadu_ps(row + 8));
    }
  } else if (b.row_stride == 1) {
    // Columns contiguous along k (a transposed row-major matrix): one column at a time.
    for (std::int64_t j = 0; j < nr; ++j) {
      if (j >= live) {
        for (std::int64_t k = 0; k < depth; ++k) out[k * nr + j] = 0.f;
        continue;
      }
      const float* column = b.data + (j0 + j) * b.col_stride + p0;
      for (std::int64_t k = 0; k < depth; ++k) out[k * nr + j] = column[k];
    }
  } else {
    for (std::int64_t k = 0; k < depth; ++k)
      for (std::int64_t j = 0; j < nr; ++j) out[k * nr + j] = j < live ? b(p0 + k, j0 + j) : 0.f;
  }
}

/// The rows x cols (at most 6 x 16) block of C at (i, j) = (or +=) the product of two packed
/// panels: in place when whole and C's columns are contiguous, through a buffer otherwise.
inline void block(std::int64_t depth, const float* a, const float* b, const MatrixRef<float>& c, std::int64_t i, std::int64_t j,
                  std::int64_t rows, std::int64_t cols, bool accumulate) {
  // The packed panels as operands of tile_gemm's register kernel: A's step k is mr floats
  // on (row stride 1, inner stride mr), B's step k one row of nr floats.
  const __m256i all = _mm256_set1_epi32(-1);
  float* at = c.data + i * c.row_stride + j * c.col_stride;
  if (rows == mr && cols == nr && c.col_stride == 1) {
    cpu::detail::tile_gemm_block<mr, nr / 8, false>(depth, a, 1, mr, b, nr, at, c.row_stride, accumulate, all);
    return;
  }
  alignas(32) float buffer[mr * nr];
  cpu::detail::tile_gemm_block<mr, nr / 8, false>(depth, a, 1, mr, b, nr, buffer, nr, false, all);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t s = 0; s < cols; ++s) {
      float& e = at[r * c.row_stride + s * c.col_stride];
      e = accumulate ? e + buffer[r * nr + s] : buffer[r * nr + s];
    }
}

/// C = A B (accumulate false) or C += A B, any strides, C not overlapping A or B. Runs on
/// the OpenMP threads unless called inside a parallel region or the product is small.
// a: [m, k], b: [k, n], c: [m, n]
inline void gemm(const Operand& a, const Operand& b, const MatrixRef<float>& c, bool accumulate) {
  const std::int64_t m = c.rows, n = c.cols, k = a.cols;
  if (m <= 0 || n <= 0) return;
  if (c.col_stride != 1 && c.row_stride == 1) {
    // A column-major C: C^T = B^T A^T is row-major, so its blocks are written in place.
    gemm(b.transposed(), a.transposed(), c.transposed(), accumulate);
    return;
  }
  if (k <= 0) {
    if (!accumulate)
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) c(i, j) = 0.f;
    return;
  }
  const std::int64_t m_blocks = (m + mc - 1) / mc;
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int threads = omp_in_parallel() || flops < 2e6 ? 1 : omp_get_max_threads();
  const std::int64_t nc_used = std::min(nc, (n + nr - 1) / nr * nr);
  const PackBuffer packed_b(std::min(kc, k) * nc_used);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const PackBuffer packed_a(mc * std::min(kc, k));
    for (std::int64_t j0 = 0; j0 < n; j0 += nc) {
      const std::int64_t cols = std::min(nc, n - j0);
      const std::int64_t panels = (cols + nr - 1) / nr;
      // Work items: (block of mc rows) x (group of B panels), at least four per thread where
      // the panels allow, so that a product of few rows still spreads over the threads.
      const std::int64_t groups =
          std::min<std::int64_t>(panels, std::max<std::int64_t>(1, (4 * omp_get_num_threads() + m_blocks - 1) / m_blocks));
      const std::int64_t per_group = (panels + groups - 1) / groups;
      for (std::int64_t p0 = 0; p0 < k; p0 += kc) {
        const std::int64_t depth = std::min(kc, k - p0);
        const bool add = accumulate || p0 > 0;
#pragma omp for schedule(static)
        for (std::int64_t q = 0; q < panels; ++q)
          pack_b_panel(b, p0, depth, j0 + q * nr, cols - q * nr, packed_b.data() + q * nr * depth);
#pragma omp for schedule(dynamic, 1)
        for (std::int64_t item = 0; item < m_blocks * groups; ++item) {
          const std::int64_t i0 = item / groups * mc, rows = std::min(mc, m - i0);
          const std::int64_t q0 = item % groups * per_group, q1 = std::min(panels, q0 + per_group);
          if (q0 >= q1) continue;
          pack_a(a, i0, rows, p0, depth, packed_a.data());
          for (std::int64_t q = q0; q < q1; ++q) {
            const float* bp = packed_b.data() + q * nr * depth;
            const std::int64_t j = j0 + q * nr, w = std::min(nr, n - j);
            for (std::int64_t r = 0; r < rows; r += mr)
              block(depth, packed_a.data() + r * depth, bp, c, i0 + r, j, std::min(mr, rows - r), w, add);
          }
        }
      }
    }
  }
}

}  // namespace condense::cpu::packed

#endif
