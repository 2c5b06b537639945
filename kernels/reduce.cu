// Reduction and row-wise CUDA kernels: sum, mean, max and min over the trailing dims of
// a strided view (kernels and the plan that picks them in detail/reduce_kernels.cuh); softmax /
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
#include "detail/reduce_kernels.cuh"

namespace condense::cuda {
namespace {

using namespace detail;
using namespace reduce_detail;

template <class T, class A, class Acc>
void launch_reduce(const StridedArg& out, const StridedArg& in, int reduced_dims, Acc acc, std::string_view op) {
  const ReducePlan plan = plan_reduce(in, reduced_dims);
  const std::int64_t rows = plan.rows, cols = plan.cols;
  CONDENSE_CHECK(out.numel() == rows, op, "CUDA reduction of ", rows, " rows into ", out.numel(), " elements");
  if (rows == 0) return;
  use_device(out.device, op);
  const cudaStream_t stream = stream_of(out.device);
  T* o = static_cast<T*>(out.data);
  const T* x = static_cast<const T*>(in.data);
  const int splits = plan.splits;
  switch (plan.path) {
    case ReducePath::Columns: {
      if (splits == 1) {
        detail::launch_kernel(reduce_columns<T, A, Acc>, column_grid(plan), column_block(), 0, stream, o,
                              static_cast<A*>(nullptr), x, plan.layout, rows, cols, 1, acc);
        break;
      }
      const DeviceScratch partial(static_cast<std::size_t>(splits) * static_cast<std::size_t>(rows) * sizeof(A), out.device, op);
      A* partials = static_cast<A*>(partial.get());
      detail::launch_kernel(reduce_columns<T, A, Acc>, column_grid(plan), column_block(), 0, stream, o, partials, x,
                            plan.layout, rows, cols, splits, acc);
      check_launch(op);
      detail::launch_kernel(combine_column_partials<T, A, Acc>, grid_for(rows, reduce_threads), reduce_threads, 0, stream, o,
                            partials, rows, cols, splits, acc);
      break;
    }
    case ReducePath::RowChunks: {
      const DeviceScratch partial(static_cast<std::size_t>(splits) * static_cast<std::size_t>(rows) * sizeof(A), out.device, op);
      A* partials = static_cast<A*>(partial.get());
      detail::launch_kernel(reduce_row_chunks<T, A, Acc>, dim3(static_cast<unsigned>(rows), static_cast<unsigned>(splits)),
                            reduce_threads, 0, stream, partials, x, plan.layout, cols, plan.chunk, acc);
      check_launch(op);
      detail::launch_kernel(combine_row_partials<T, A, Acc>, static_cast<unsigned>(rows), reduce_threads, 0, stream, o,
                            partials, rows, cols, splits, acc);
      break;
    }
    case ReducePath::BlockPerRow:
      detail::launch_kernel(reduce_block_per_row<T, A, Acc>, block_per_row_blocks(rows), reduce_threads, 0, stream, o, x,
                            plan.layout, rows, cols, acc);
      break;
    case ReducePath::ThreadPerRow:
      detail::launch_kernel(reduce_thread_per_row<T, A, Acc>, grid_for(rows, 128), 128, 0, stream, o, x, plan.layout, rows,
                            cols, acc);
      break;
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
  const unsigned blocks = capped_blocks(rows);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    T* o = static_cast<T*>(out.data);
    const T* x = static_cast<const T*>(in.data);
    if (log) {
      detail::launch_kernel(softmax_forward<T, A, true>, blocks, softmax_threads, 0, stream_of(out.device), o, x, rows,
                            cols);
    } else {
      detail::launch_kernel(softmax_forward<T, A, false>, blocks, softmax_threads, 0, stream_of(out.device), o, x, rows,
                            cols);
    }
  });
  check_launch(op);
}

void softmax_rows_backward(bool log, const StridedArg& grad_in, const StridedArg& y, const StridedArg& g, std::int64_t rows,
                           std::int64_t cols, std::string_view op) {
  check_rows(op, {&grad_in, &y, &g}, rows, cols);
  if (rows == 0 || cols == 0) return;
  use_device(grad_in.device, op);
  const unsigned blocks = capped_blocks(rows);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    T* o = static_cast<T*>(grad_in.data);
    const T* yp = static_cast<const T*>(y.data);
    const T* gp = static_cast<const T*>(g.data);
    if (log) {
      detail::launch_kernel(softmax_backward<T, A, true>, blocks, softmax_threads, 0, stream_of(grad_in.device), o, yp,
                            gp, rows, cols);
    } else {
      detail::launch_kernel(softmax_backward<T, A, false>, blocks, softmax_threads, 0, stream_of(grad_in.device), o, yp,
                            gp, rows, cols);
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
  const unsigned blocks = capped_blocks(rows);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    detail::launch_kernel(logsumexp_forward<T, compute_t<T>>, blocks, softmax_threads, 0, stream_of(out.device),
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
  const unsigned blocks = capped_blocks(rows);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    detail::launch_kernel(row_backward_kernel<T, compute_t<T>>, blocks, softmax_threads, 0, stream_of(grad_in.device),
                          rule, static_cast<T*>(grad_in.data), static_cast<const T*>(x.data),
                          static_cast<const T*>(y.data), static_cast<const T*>(g.data), rows, cols);
  });
  check_launch(op);
}

}  // namespace condense::cuda
