// The launchers of the normalisation and rotary-embedding CUDA kernels (kernels/norms.cu,
// kernels/rope.cu): layer_norm / rms_norm over contiguous [rows, cols] rows (forward with
// the saved row statistics, dx, and the deterministic weight/bias gradients), and the RoPE
// rotation of a [B, H, T, D] view by a cos/sin table. Plain C++ declarations on raw device
// pointers: no CUDA header reaches a CPU translation unit. In a build without CUDA each
// launcher throws condense::Error naming the op. The host-side plan of the weight/bias
// reduction (how rows are split into chunks) is defined here and is tested on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>

#include "condense/backend/cuda/kernels.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"

namespace condense::cuda {

/// Element type of the saved row statistics (mean, 1/std) of rows of `x`: the type the
/// kernels accumulate in (float64 for float64 rows, float32 for float32 and the 16-bit types).
constexpr DType norm_stat_dtype(DType x) { return x == DType::Float64 ? DType::Float64 : DType::Float32; }

/// How the weight/bias gradient reduction splits its rows: `count` chunks of
/// `rows_per_chunk` consecutive rows (the last one may be shorter; no chunk is empty; a
/// chunk has at least min(rows, norm_param_min_chunk_rows) rows). Each
/// (chunk, slab of norm_param_slab_cols columns) is one block that sums its rows into a
/// [count, cols] partial buffer; a second kernel adds the chunks in order. The plan depends
/// only on the sizes, never on the device, so the result is the same on every GPU.
struct NormParamChunks {
  std::int64_t count = 0;
  std::int64_t rows_per_chunk = 0;
};

/// Columns one block of the weight/bias reduction covers (one per lane of a warp).
inline constexpr std::int64_t norm_param_slab_cols = 32;
/// Blocks the weight/bias reduction aims for: enough to fill a large GPU a few times over.
inline constexpr std::int64_t norm_param_target_blocks = 2048;
/// Fewest rows a chunk gets, unless there are fewer rows in all (below that the partial
/// buffer costs more than it saves).
inline constexpr std::int64_t norm_param_min_chunk_rows = 64;

/// The chunk plan for `rows` rows of `cols` columns (count 0 when rows is 0).
inline NormParamChunks norm_param_chunks(std::int64_t rows, std::int64_t cols) {
  NormParamChunks plan;
  if (rows <= 0 || cols <= 0) return plan;
  const std::int64_t slabs = (cols + norm_param_slab_cols - 1) / norm_param_slab_cols;
  const std::int64_t by_blocks = (norm_param_target_blocks + slabs - 1) / slabs;
  const std::int64_t by_rows = rows / norm_param_min_chunk_rows;
  const std::int64_t wanted = std::max<std::int64_t>(1, std::min(by_blocks, by_rows));
  plan.rows_per_chunk = (rows + wanted - 1) / wanted;
  plan.count = (rows + plan.rows_per_chunk - 1) / plan.rows_per_chunk;
  return plan;
}

#if CONDENSE_WITH_CUDA
/// Forward of layer_norm (`centered`) or rms_norm over contiguous [rows, cols] rows of
/// `dtype` on `device`: y = (x - mean) * rstd * weight + bias with rstd = 1 / sqrt(biased
/// variance + eps), or for rms_norm y = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) +
/// eps). `weight` and `bias` (contiguous [cols] of x's type) may be null; rms_norm takes no
/// bias. `mean` (layer_norm only, else null) and `rstd` receive the row statistics,
/// contiguous [rows] of norm_stat_dtype(dtype).
void norm_forward(bool centered, DType dtype, int device, void* y, const void* x, const void* weight, const void* bias,
                  void* mean, void* rstd, std::int64_t rows, std::int64_t cols, double eps, std::string_view op);
/// dx of layer_norm / rms_norm from the output gradient `g` (contiguous [rows, cols]), the
/// saved x, the optional weight and the saved statistics (`mean` null for rms_norm):
/// dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat)), gy = g * weight (rms_norm: no
/// mean(gy) term).
void norm_backward_input(bool centered, DType dtype, int device, void* dx, const void* g, const void* x,
                         const void* weight, const void* mean, const void* rstd, std::int64_t rows, std::int64_t cols,
                         std::string_view op);
/// dweight = sum over rows of g * xhat and dbias = sum over rows of g (contiguous [cols] of
/// x's type; either may be null), summed in a fixed order (norm_param_chunks), no atomics.
/// With rows == 0 both are zero.
void norm_backward_params(bool centered, DType dtype, int device, void* dweight, void* dbias, const void* g,
                          const void* x, const void* mean, const void* rstd, std::int64_t rows, std::int64_t cols,
                          std::string_view op);
/// RoPE rotation: out (contiguous [B, H, T, D]) = x rotated pairwise, out[i] = x[i] c - x[i+h] s,
/// out[i+h] = x[i+h] c + x[i] s with h = D/2, c and s read from the contiguous
/// [table_rows, T, h] tables `cos` and `sin` of x's compute type (float for float and the
/// 16-bit types, double for double; table_rows 1: shared by the batch, else B); `inverse` rotates by the negative angle (s -> -s). `x` is any view
/// described with all four dims [B, H, T, D] (extent-1 dims kept).
void rope_rotate(bool inverse, const StridedArg& out, const StridedArg& x, const void* cos, const void* sin,
                 std::int64_t table_rows, std::string_view op);
#else
inline void norm_forward(bool, DType, int, void*, const void*, const void*, const void*, void*, void*, std::int64_t,
                         std::int64_t, double, std::string_view op) {
  throw_no_cuda(op);
}
inline void norm_backward_input(bool, DType, int, void*, const void*, const void*, const void*, const void*,
                                const void*, std::int64_t, std::int64_t, std::string_view op) {
  throw_no_cuda(op);
}
inline void norm_backward_params(bool, DType, int, void*, void*, const void*, const void*, const void*, const void*,
                                 std::int64_t, std::int64_t, std::string_view op) {
  throw_no_cuda(op);
}
inline void rope_rotate(bool, const StridedArg&, const StridedArg&, const void*, const void*, std::int64_t,
                        std::string_view op) {
  throw_no_cuda(op);
}
#endif

}  // namespace condense::cuda
