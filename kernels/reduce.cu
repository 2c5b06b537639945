// Reduction and row-wise CUDA kernels: sum, mean, max and min over the trailing dims of
// a strided view (one block per output row for long rows, contiguous chunks of a row on
// several blocks combined by a second pass when there are too few rows to fill the device
// (a whole-tensor sum), one thread per row for short rows, column tiles with interleaved
// slices when the outputs are adjacent in memory and the reduced dims outer); softmax /
// log_softmax forward and backward, logsumexp, and the backward rules of amax/amin and
// logsumexp over contiguous rows (one block per row).
// Accumulation is in float for float and the 16-bit types, double for double.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

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
    if (threadIdx.x < width) scratch[threadIdx.x] = acc.combine(scratch[threadIdx.x], scratch[threadIdx.x + width]);
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

template <class T, class A, class Acc>
void launch_reduce(const StridedArg& out, const StridedArg& in, int reduced_dims, Acc acc, std::string_view op) {
  // The kept dims and the reduced dims, each group coalesced on its own (a contiguous
  // [B, T, C] -> [C] reduces one dim of B * T positions): fewer divisions per offset, the
  // same order of positions.
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
  RowsAndCols layout{Layout::of(kept_dims), Layout::of(reduced)};
  const std::int64_t rows = kept_dims.numel(), cols = reduced.numel();
  const int kept = kept_dims.ndim;
  CONDENSE_CHECK(out.numel() == rows, op, "CUDA reduction of ", rows, " rows into ", out.numel(), " elements");
  if (rows == 0) return;
  use_device(out.device, op);
  const cudaStream_t stream = stream_of(out.device);
  T* o = static_cast<T*>(out.data);
  const T* x = static_cast<const T*>(in.data);
  // Outputs adjacent in memory (innermost kept dim of stride 1 and at least 16 long) with
  // outer reduced dims: a block per output would read one element per 32-byte sector.
  const bool adjacent_outputs = kept > 0 && layout.rows.strides[kept - 1] == 1 && layout.rows.sizes[kept - 1] >= 16;
  if (cols >= 64 && adjacent_outputs) {
    const int splits = column_splits(rows, cols);
    const dim3 grid(static_cast<unsigned>((rows + column_tile - 1) / column_tile), static_cast<unsigned>(splits));
    const dim3 block(column_tile, column_groups);
    if (splits == 1) {
      reduce_columns<T, A><<<grid, block, 0, stream>>>(o, static_cast<A*>(nullptr), x, layout, rows, cols, 1, acc);
      check_launch(op);
      return;
    }
    const DeviceScratch partial(static_cast<std::size_t>(splits) * static_cast<std::size_t>(rows) * sizeof(A), out.device, op);
    A* partials = static_cast<A*>(partial.get());
    reduce_columns<T, A><<<grid, block, 0, stream>>>(o, partials, x, layout, rows, cols, splits, acc);
    check_launch(op);
    combine_column_partials<T, A><<<grid_for(rows, reduce_threads), reduce_threads, 0, stream>>>(o, partials, rows, cols,
                                                                                                   splits, acc);
    check_launch(op);
    return;
  }
  if (cols >= 64) {
    if (const int splits = row_splits(rows, cols); splits > 1) {
      const std::int64_t chunk = (cols + splits - 1) / splits;
      const DeviceScratch partial(static_cast<std::size_t>(splits) * static_cast<std::size_t>(rows) * sizeof(A), out.device, op);
      A* partials = static_cast<A*>(partial.get());
      reduce_row_chunks<T, A><<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(splits)), reduce_threads, 0, stream>>>(
          partials, x, layout, cols, chunk, acc);
      check_launch(op);
      combine_row_partials<T, A><<<static_cast<unsigned>(rows), reduce_threads, 0, stream>>>(o, partials, rows, cols, splits,
                                                                                              acc);
      check_launch(op);
      return;
    }
    const unsigned blocks = static_cast<unsigned>(rows < 65535 * 8 ? rows : 65535 * 8);
    reduce_block_per_row<T, A><<<blocks, reduce_threads, 0, stream>>>(o, x, layout, rows, cols, acc);
  } else {
    reduce_thread_per_row<T, A><<<grid_for(rows, 128), 128, 0, stream>>>(o, x, layout, rows, cols, acc);
  }
  check_launch(op);
}

// ---- softmax ---------------------------------------------------------------------------

constexpr int softmax_threads = 256;

/// Block-wide reduction of one value per thread (max or sum); every thread gets the result.
template <class A, bool IsMax>
__device__ __forceinline__ A block_reduce(A v, A* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const A other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = IsMax ? (other > v ? other : v) : v + other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  A total = lane < warps ? scratch[lane] : (IsMax ? A(-INFINITY) : A(0));
  for (int offset = 16; offset > 0; offset /= 2) {
    const A other = __shfl_xor_sync(0xffffffffu, total, offset);
    total = IsMax ? (other > total ? other : total) : total + other;
  }
  __syncthreads();  // scratch is reused by the next reduction
  return total;
}

/// softmax / log_softmax of each row, as on the CPU: a row of only -inf gives zeros
/// (softmax) or -inf (log_softmax); a NaN or +inf makes the row NaN (exp(NaN) and
/// inf - inf reach the sum).
template <class T, class A, bool Log>
__global__ void softmax_forward(T* out, const T* in, std::int64_t rows, std::int64_t cols) {
  __shared__ A scratch[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* x = in + r * cols;
    T* y = out + r * cols;
    A m = -INFINITY;
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = static_cast<A>(load(x + c));
      m = v > m ? v : m;
    }
    m = block_reduce<A, true>(m, scratch);
    if (m == A(-INFINITY)) {  // every entry is -inf (NaN never wins the max)
      bool any_nan = false;
      for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        const A v = static_cast<A>(load(x + c));
        any_nan = any_nan || v != v;
      }
      if (block_reduce<A, true>(any_nan ? A(1) : A(0), scratch) == A(0)) {
        for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) y[c] = to_element<T>(Log ? A(-INFINITY) : A(0));
        continue;
      }
    }
    A s = 0;
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += d_exp(static_cast<A>(load(x + c)) - m);
    s = block_reduce<A, false>(s, scratch);
    const A log_s = d_log(s);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = static_cast<A>(load(x + c));
      y[c] = to_element<T>(Log ? v - m - log_s : d_exp(v - m) / s);
    }
  }
}

/// softmax: gx = y (g - sum(g y)); log_softmax: gx = g - exp(y) sum(g).
template <class T, class A, bool Log>
__global__ void softmax_backward(T* grad_in, const T* y_all, const T* g_all, std::int64_t rows, std::int64_t cols) {
  __shared__ A scratch[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* y = y_all + r * cols;
    const T* g = g_all + r * cols;
    T* gx = grad_in + r * cols;
    A dot = 0;
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A gv = static_cast<A>(load(g + c));
      dot += Log ? gv : gv * static_cast<A>(load(y + c));
    }
    dot = block_reduce<A, false>(dot, scratch);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A gv = static_cast<A>(load(g + c)), yv = static_cast<A>(load(y + c));
      gx[c] = to_element<T>(Log ? gv - d_exp(yv) * dot : yv * (gv - dot));
    }
  }
}

/// logsumexp of each row with the CPU's edge cases (see kernels.hpp).
template <class T, class A>
__global__ void logsumexp_forward(T* out, const T* in, std::int64_t rows, std::int64_t cols) {
  __shared__ A scratch[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* x = in + r * cols;
    A m = -INFINITY, has_nan = 0;
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = static_cast<A>(load(x + c));
      m = v > m ? v : m;
      has_nan = v != v ? A(1) : has_nan;
    }
    m = block_reduce<A, true>(m, scratch);
    has_nan = block_reduce<A, true>(has_nan, scratch);
    A result;
    if (has_nan != A(0)) {
      result = A(NAN);
    } else if (m == A(INFINITY) || m == A(-INFINITY)) {  // also the empty row (-inf)
      result = m;
    } else {
      A s = 0;
      for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += d_exp(static_cast<A>(load(x + c)) - m);
      result = m + d_log(block_reduce<A, false>(s, scratch));
    }
    if (threadIdx.x == 0) out[r] = to_element<T>(result);
  }
}

/// The row-wise backward rules of row_backward().
template <class T, class A>
__global__ void row_backward_kernel(RowBackward rule, T* grad_in, const T* x_all, const T* y_all, const T* g_all,
                                    std::int64_t rows, std::int64_t cols) {
  __shared__ A scratch[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* x = x_all + r * cols;
    T* gx = grad_in + r * cols;
    const A y = static_cast<A>(load(y_all + r)), g = static_cast<A>(load(g_all + r));
    if (rule == RowBackward::LogSumExp) {
      const bool empty = y == A(-INFINITY);
      for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        gx[c] = to_element<T>(empty ? A(0) : d_exp(static_cast<A>(load(x + c)) - y) * g);
      continue;
    }
    const bool y_nan = y != y;
    A count = 0;
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = static_cast<A>(load(x + c));
      count += (v == y || (v != v && y_nan)) ? A(1) : A(0);
    }
    count = block_reduce<A, false>(count, scratch);
    const A share = count > A(0) ? g / count : A(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = static_cast<A>(load(x + c));
      gx[c] = to_element<T>((v == y || (v != v && y_nan)) ? share : A(0));
    }
  }
}

void check_rows(std::string_view op, std::initializer_list<const StridedArg*> args, std::int64_t rows, std::int64_t cols) {
  for (const StridedArg* a : args) {
    CONDENSE_CHECK(a->is_contiguous() && a->numel() == rows * cols, op, "CUDA softmax needs contiguous [", rows, ", ",
                   cols, "] operands");
    CONDENSE_CHECK(a->dtype == (*args.begin())->dtype, op, "CUDA softmax operands of different element types");
  }
}

}  // namespace

void reduce(ReduceOp reduction, const StridedArg& out, const StridedArg& in, int reduced_dims, std::string_view op) {
  CONDENSE_CHECK(reduced_dims >= 0 && reduced_dims <= in.ndim, op, "CUDA reduction of ", reduced_dims, " trailing dims of a ",
                 in.ndim, "-dim view");
  CONDENSE_CHECK(out.dtype == in.dtype && out.is_contiguous(), op, "CUDA reduction needs a contiguous output of the input's type");
  if (in.dtype == DType::Int32 || in.dtype == DType::Int64) {
    CONDENSE_CHECK(reduction != ReduceOp::Mean, op, "no CUDA mean of integers");
    dispatch_dtype<std::int32_t, std::int64_t>(in.dtype, op, [&](auto tag) {
      using T = decltype(tag);
      launch_reduce<T, T>(out, in, reduced_dims, IntAccumulate<T>{reduction}, op);
    });
    return;
  }
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    launch_reduce<T, A>(out, in, reduced_dims, Accumulate<A>{reduction}, op);
  });
}

void softmax_rows(bool log, const StridedArg& out, const StridedArg& in, std::int64_t rows, std::int64_t cols,
                  std::string_view op) {
  check_rows(op, {&out, &in}, rows, cols);
  if (rows == 0 || cols == 0) return;
  use_device(out.device, op);
  const unsigned blocks = static_cast<unsigned>(rows < 65535 * 8 ? rows : 65535 * 8);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    T* o = static_cast<T*>(out.data);
    const T* x = static_cast<const T*>(in.data);
    if (log) {
      softmax_forward<T, A, true><<<blocks, softmax_threads, 0, stream_of(out.device)>>>(o, x, rows, cols);
    } else {
      softmax_forward<T, A, false><<<blocks, softmax_threads, 0, stream_of(out.device)>>>(o, x, rows, cols);
    }
  });
  check_launch(op);
}

void softmax_rows_backward(bool log, const StridedArg& grad_in, const StridedArg& y, const StridedArg& g, std::int64_t rows,
                           std::int64_t cols, std::string_view op) {
  check_rows(op, {&grad_in, &y, &g}, rows, cols);
  if (rows == 0 || cols == 0) return;
  use_device(grad_in.device, op);
  const unsigned blocks = static_cast<unsigned>(rows < 65535 * 8 ? rows : 65535 * 8);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    T* o = static_cast<T*>(grad_in.data);
    const T* yp = static_cast<const T*>(y.data);
    const T* gp = static_cast<const T*>(g.data);
    if (log) {
      softmax_backward<T, A, true><<<blocks, softmax_threads, 0, stream_of(grad_in.device)>>>(o, yp, gp, rows, cols);
    } else {
      softmax_backward<T, A, false><<<blocks, softmax_threads, 0, stream_of(grad_in.device)>>>(o, yp, gp, rows, cols);
    }
  });
  check_launch(op);
}

}  // namespace condense::cuda

namespace condense::cuda {

void logsumexp_rows(const StridedArg& out, const StridedArg& in, std::int64_t rows, std::int64_t cols, std::string_view op) {
  check_rows(op, {&in}, rows, cols);
  CONDENSE_CHECK(out.is_contiguous() && out.numel() == rows && out.dtype == in.dtype, op,
                 "CUDA logsumexp needs a contiguous output of ", rows, " elements of the input's type");
  if (rows == 0) return;
  use_device(out.device, op);
  const unsigned blocks = static_cast<unsigned>(rows < 65535 * 8 ? rows : 65535 * 8);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    logsumexp_forward<T, compute_t<T>><<<blocks, softmax_threads, 0, stream_of(out.device)>>>(
        static_cast<T*>(out.data), static_cast<const T*>(in.data), rows, cols);
  });
  check_launch(op);
}

void row_backward(RowBackward rule, const StridedArg& grad_in, const StridedArg& x, const StridedArg& y, const StridedArg& g,
                  std::int64_t rows, std::int64_t cols, std::string_view op) {
  check_rows(op, {&grad_in, &x}, rows, cols);
  for (const StridedArg* a : {&y, &g})
    CONDENSE_CHECK(a->is_contiguous() && a->numel() == rows && a->dtype == x.dtype, op,
                   "CUDA row backward needs contiguous per-row operands of ", rows, " elements of the input's type");
  if (rows == 0 || cols == 0) return;
  use_device(grad_in.device, op);
  const unsigned blocks = static_cast<unsigned>(rows < 65535 * 8 ? rows : 65535 * 8);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    row_backward_kernel<T, compute_t<T>><<<blocks, softmax_threads, 0, stream_of(grad_in.device)>>>(
        rule, static_cast<T*>(grad_in.data), static_cast<const T*>(x.data), static_cast<const T*>(y.data),
        static_cast<const T*>(g.data), rows, cols);
  });
  check_launch(op);
}

}  // namespace condense::cuda
