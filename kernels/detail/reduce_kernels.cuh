// The reduction kernels of reduce.cu (which launches them; tests/emulation runs them on the
// CPU) and the plan that picks among them: one block per output row for long rows, chunks
// of a row on several blocks combined by a second pass when there are too few rows to fill
// the device (a whole-tensor sum), one thread per row for short rows, column tiles with
// interleaved slices when the outputs are adjacent in memory and the reduced dims outer.
// Every path combines in an order fixed by the shape.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda::reduce_detail {

using namespace condense::cuda::detail;

constexpr int reduce_threads = 256;

template <class A>
struct Accumulate {
  ReduceOp op;
  __device__ __forceinline__ A init() const {
    if (op == ReduceOp::Max) return -INFINITY;
    if (op == ReduceOp::Min) return INFINITY;
    return A(0);
  }
  __device__ __forceinline__ A combine(A acc, A v) const {
    switch (op) {
      case ReduceOp::Max: return acc != acc ? acc : (v != v || v > acc ? v : acc);  // NaN wins
      case ReduceOp::Min: return acc != acc ? acc : (v != v || v < acc ? v : acc);
      default: return acc + v;
    }
  }
};

template <class A>
struct IntAccumulate {
  ReduceOp op;
  __device__ __forceinline__ A init() const {
    if (op == ReduceOp::Max) return std::numeric_limits<A>::lowest();
    if (op == ReduceOp::Min) return std::numeric_limits<A>::max();
    return A(0);
  }
  __device__ __forceinline__ A combine(A acc, A v) const {
    switch (op) {
      case ReduceOp::Max: return v > acc ? v : acc;
      case ReduceOp::Min: return v < acc ? v : acc;
      default: return static_cast<A>(static_cast<std::make_unsigned_t<A>>(acc) + static_cast<std::make_unsigned_t<A>>(v));
    }
  }
};

/// Row r's first element offset (over the kept dims) and the column layout (reduced dims).
struct RowsAndCols {
  Layout rows;  // kept dims
  Layout cols;  // reduced dims
};

template <class T, class A, class Acc>
__device__ __forceinline__ A finish(const Acc& acc, A total, std::int64_t count) {
  if constexpr (std::is_floating_point_v<A>) {
    if (acc.op == ReduceOp::Mean) return count > 0 ? total / static_cast<A>(count) : A(NAN);
  }
  return total;
}

/// Combines one value per thread of the block (blockDim.x == reduce_threads) in a fixed
/// tree order; every thread gets the result. `scratch` holds reduce_threads values.
template <class A, class Acc>
__device__ __forceinline__ A block_combine(A value, A* scratch, const Acc& acc) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) scratch[threadIdx.x] = acc.combine(scratch[threadIdx.x], scratch[threadIdx.x + width]);
    __syncthreads();
  }
  const A total = scratch[0];
  __syncthreads();  // scratch is reused by the next call
  return total;
}

/// One block per output row.
template <class T, class A, class Acc>
__global__ void reduce_block_per_row(T* out, const T* in, RowsAndCols layout, std::int64_t rows, std::int64_t cols, Acc acc) {
  __shared__ A scratch[reduce_threads];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* base = in + layout.rows.offset(r);
    A value = acc.init();
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) value = acc.combine(value, static_cast<A>(load(base + layout.cols.offset(c))));
    const A total = block_combine(value, scratch, acc);
    if (threadIdx.x == 0) out[r] = to_element<T>(finish<T>(acc, total, cols));
  }
}

/// Positions of a row per block of reduce_row_chunks: 16 per thread.
constexpr std::int64_t row_chunk = reduce_threads * 16;

/// Long rows, too few to fill the device (a whole-tensor sum has one): block (r, s) combines
/// the s-th chunk of `chunk` consecutive positions of row r into partial[r * splits + s].
template <class T, class A, class Acc>
__global__ void reduce_row_chunks(A* partial, const T* in, RowsAndCols layout, std::int64_t cols, std::int64_t chunk,
                                  Acc acc) {
  __shared__ A scratch[reduce_threads];
  const std::int64_t r = blockIdx.x, begin = static_cast<std::int64_t>(blockIdx.y) * chunk;
  const std::int64_t end = begin + chunk < cols ? begin + chunk : cols;
  const T* base = in + layout.rows.offset(r);
  A value = acc.init();
  for (std::int64_t c = begin + threadIdx.x; c < end; c += blockDim.x)
    value = acc.combine(value, static_cast<A>(load(base + layout.cols.offset(c))));
  const A total = block_combine(value, scratch, acc);
  if (threadIdx.x == 0) partial[r * gridDim.y + blockIdx.y] = total;
}

/// out[r] = the `splits` chunk partials of row r combined (one block per row).
template <class T, class A, class Acc>
__global__ void combine_row_partials(T* out, const A* partial, std::int64_t rows, std::int64_t cols, int splits, Acc acc) {
  __shared__ A scratch[reduce_threads];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    A value = acc.init();
    for (int s = threadIdx.x; s < splits; s += blockDim.x) value = acc.combine(value, partial[r * splits + s]);
    const A total = block_combine(value, scratch, acc);
    if (threadIdx.x == 0) out[r] = to_element<T>(finish<T>(acc, total, cols));
  }
}

/// Chunks per row for reduce_row_chunks: about 1024 blocks in all, each reading at least
/// row_chunk positions; 1 (one block per row) when the rows alone are enough.
inline int row_splits(std::int64_t rows, std::int64_t cols) {
  if (rows >= 256) return 1;
  const std::int64_t splits = std::min<std::int64_t>(1024 / rows, cols / row_chunk);
  return static_cast<int>(std::clamp<std::int64_t>(splits, 1, 1024));
}

/// One thread per output row (short rows).
template <class T, class A, class Acc>
__global__ void reduce_thread_per_row(T* out, const T* in, RowsAndCols layout, std::int64_t rows, std::int64_t cols, Acc acc) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += stride) {
    const T* base = in + layout.rows.offset(r);
    A value = acc.init();
    for (std::int64_t c = 0; c < cols; ++c) value = acc.combine(value, static_cast<A>(load(base + layout.cols.offset(c))));
    out[r] = to_element<T>(finish<T>(acc, value, cols));
  }
}

/// Outputs per block of reduce_columns (one warp reads 32 adjacent elements) and the row
/// groups that share a block.
constexpr int column_tile = 32;
constexpr int column_groups = 8;

/// Reductions whose outputs are adjacent in memory while the reduced dims are outer (a bias
/// gradient, [N, out] -> [out]): block (32, 8) covers 32 outputs, so each warp reads 32
/// consecutive elements; blockIdx.y picks one of `splits` interleaved slices of the reduced
/// positions. Each thread combines its positions in order, the 8 groups combine in order in
/// shared memory, and the block writes the output (splits == 1) or its slice's partial
/// (partial[y * rows + r]), so the order depends on the shape alone.
template <class T, class A, class Acc>
__global__ void reduce_columns(T* out, A* partial, const T* in, RowsAndCols layout, std::int64_t rows, std::int64_t cols,
                               int splits, Acc acc) {
  __shared__ A tile[column_groups][column_tile];
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * column_tile + threadIdx.x;
  A value = acc.init();
  if (r < rows) {
    const T* base = in + layout.rows.offset(r);
    const std::int64_t step = static_cast<std::int64_t>(column_groups) * splits;
    for (std::int64_t c = static_cast<std::int64_t>(blockIdx.y) * column_groups + threadIdx.y; c < cols; c += step)
      value = acc.combine(value, static_cast<A>(load(base + layout.cols.offset(c))));
  }
  tile[threadIdx.y][threadIdx.x] = value;
  __syncthreads();
  if (threadIdx.y == 0 && r < rows) {
    A total = tile[0][threadIdx.x];
    for (int g = 1; g < column_groups; ++g) total = acc.combine(total, tile[g][threadIdx.x]);
    if (splits == 1) {
      out[r] = to_element<T>(finish<T>(acc, total, cols));
    } else {
      partial[static_cast<std::int64_t>(blockIdx.y) * rows + r] = total;
    }
  }
}

/// out[r] = the `splits` partials of output r combined in slice order.
template <class T, class A, class Acc>
__global__ void combine_column_partials(T* out, const A* partial, std::int64_t rows, std::int64_t cols, int splits, Acc acc) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += stride) {
    A total = partial[r];
    for (int s = 1; s < splits; ++s) total = acc.combine(total, partial[static_cast<std::int64_t>(s) * rows + r]);
    out[r] = to_element<T>(finish<T>(acc, total, cols));
  }
}

/// Slices of the reduced positions for reduce_columns: enough blocks to fill the device
/// (about 1024), each thread still combining at least 16 positions, at most 1024 slices.
inline int column_splits(std::int64_t rows, std::int64_t cols) {
  const std::int64_t tiles = (rows + column_tile - 1) / column_tile;
  std::int64_t splits = 1024 / tiles;
  splits = std::min<std::int64_t>(splits, cols / (column_groups * 16));
  return static_cast<int>(std::clamp<std::int64_t>(splits, 1, 1024));
}

/// The kernels a reduction takes (see plan_reduce).
enum class ReducePath { Columns, RowChunks, BlockPerRow, ThreadPerRow };

/// How a reduction of the trailing `reduced_dims` dims of `in` runs: the kept and reduced
/// dims, each group coalesced on its own (a contiguous [B, T, C] -> [C] reduces one dim of
/// B * T positions: fewer divisions per offset, the same order of positions), and the path
/// with its splits (Columns, RowChunks) and chunk length (RowChunks).
struct ReducePlan {
  RowsAndCols layout;
  std::int64_t rows = 0, cols = 0;
  ReducePath path = ReducePath::ThreadPerRow;
  int splits = 1;
  std::int64_t chunk = 0;
};

inline ReducePlan plan_reduce(const StridedArg& in, int reduced_dims) {
  StridedArg kept_dims, reduced = in;
  kept_dims.ndim = in.ndim - reduced_dims;
  reduced.ndim = reduced_dims;
  for (int d = 0; d < kept_dims.ndim; ++d) {
    kept_dims.sizes[d] = in.sizes[d];
    kept_dims.strides[d] = in.strides[d];
  }
  for (int d = 0; d < reduced_dims; ++d) {
    reduced.sizes[d] = in.sizes[kept_dims.ndim + d];
    reduced.strides[d] = in.strides[kept_dims.ndim + d];
  }
  coalesce({&kept_dims});
  coalesce({&reduced});
  ReducePlan plan;
  plan.layout = RowsAndCols{Layout::of(kept_dims), Layout::of(reduced)};
  plan.rows = kept_dims.numel();
  plan.cols = reduced.numel();
  const int kept = kept_dims.ndim;
  // Outputs adjacent in memory (innermost kept dim of stride 1 and at least 16 long) with
  // outer reduced dims: a block per output would read one element per 32-byte sector.
  const bool adjacent_outputs = kept > 0 && plan.layout.rows.strides[kept - 1] == 1 && plan.layout.rows.sizes[kept - 1] >= 16;
  if (plan.cols >= 64 && adjacent_outputs) {
    plan.path = ReducePath::Columns;
    plan.splits = column_splits(plan.rows, plan.cols);
  } else if (plan.cols >= 64) {
    plan.splits = row_splits(plan.rows, plan.cols);
    plan.path = plan.splits > 1 ? ReducePath::RowChunks : ReducePath::BlockPerRow;
    plan.chunk = (plan.cols + plan.splits - 1) / plan.splits;
  } else {
    plan.path = ReducePath::ThreadPerRow;
  }
  return plan;
}

/// The grid and block of reduce_columns for `plan`.
inline dim3 column_grid(const ReducePlan& plan) {
  return dim3(static_cast<unsigned>((plan.rows + column_tile - 1) / column_tile), static_cast<unsigned>(plan.splits));
}
inline dim3 column_block() { return dim3(column_tile, column_groups); }
/// Blocks of reduce_block_per_row (each walks rows that far apart).
inline unsigned block_per_row_blocks(std::int64_t rows) { return detail::capped_blocks(rows); }

}  // namespace condense::cuda::reduce_detail
