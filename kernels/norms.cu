// layer_norm and rms_norm CUDA kernels over contiguous [rows, cols] rows: the forward pass
// (two-pass mean and centred variance, saved per row), dx per row, and the weight/bias
// gradients as a deterministic two-step column reduction (row chunks into a [chunks, cols]
// partial buffer, then the chunks in order). A row belongs to one warp (cols <= 1024),
// four warps (cols <= 4096) or eight warps; accumulation is in float for float and the
// 16-bit types, double for double. No atomics: every result is the same from run to run.
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "condense/backend/cuda/norm_kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

constexpr int norm_threads = 256;
constexpr int norm_warps = norm_threads / 32;

/// Sums a and b over the WarpsPerRow warps that share a row; every thread of the group gets
/// the same totals (the xor butterfly and the fixed order of the warp partials make them
/// bitwise equal). Groups of several warps synchronise the block: every thread of the block
/// must call it the same number of times.
template <int WarpsPerRow, class A>
__device__ __forceinline__ void group_sum2(A& a, A& b, A* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    a += __shfl_xor_sync(0xffffffffu, a, offset);
    b += __shfl_xor_sync(0xffffffffu, b, offset);
  }
  if constexpr (WarpsPerRow > 1) {
    const int warp = static_cast<int>(threadIdx.x) / 32;
    if (threadIdx.x % 32 == 0) {
      scratch[warp] = a;
      scratch[norm_warps + warp] = b;
    }
    __syncthreads();
    const int first = warp - warp % WarpsPerRow;
    A total_a = 0, total_b = 0;
    for (int w = 0; w < WarpsPerRow; ++w) {
      total_a += scratch[first + w];
      total_b += scratch[norm_warps + first + w];
    }
    a = total_a;
    b = total_b;
    __syncthreads();  // scratch is reused by the next reduction
  }
}

/// The rows of a block: the block walks groups of RowsPerBlock consecutive rows with a
/// grid-stride loop that is uniform across the block (so group_sum2 may synchronise it);
/// threads whose row is past the end take part in the reductions with zeros.
template <int WarpsPerRow>
struct RowGroup {
  static constexpr int row_threads = 32 * WarpsPerRow;
  static constexpr int rows_per_block = norm_threads / row_threads;
  int lane = static_cast<int>(threadIdx.x) % row_threads;   // the thread's place in its row
  int group = static_cast<int>(threadIdx.x) / row_threads;  // the row of the block it works on
};

/// Forward: row statistics, then y. Centered: layer_norm (mean, centred variance), else
/// rms_norm (mean of squares).
template <class T, class A, bool Centered, int WarpsPerRow>
__global__ void __launch_bounds__(norm_threads)
    norm_forward_kernel(T* y, const T* x, const T* weight, const T* bias, A* mean_out, A* rstd_out, std::int64_t rows,
                        std::int64_t cols, A eps) {
  using Rows = RowGroup<WarpsPerRow>;
  __shared__ A scratch[2 * norm_warps];
  const Rows at;
  const A inv_cols = A(1) / static_cast<A>(cols);
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * Rows::rows_per_block;
  for (std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * Rows::rows_per_block; first < rows; first += step) {
    const std::int64_t r = first + at.group;
    const bool active = r < rows;
    const T* xr = x + (active ? r : 0) * cols;
    A mu = 0;
    if constexpr (Centered) {
      A s = 0, unused = 0;
      if (active)
        for (std::int64_t c = at.lane; c < cols; c += Rows::row_threads) s += load(xr + c);
      group_sum2<WarpsPerRow>(s, unused, scratch);
      mu = s * inv_cols;
    }
    A squares = 0, unused = 0;
    if (active)
      for (std::int64_t c = at.lane; c < cols; c += Rows::row_threads) {
        const A v = load(xr + c) - mu;
        squares += v * v;
      }
    group_sum2<WarpsPerRow>(squares, unused, scratch);
    if (!active) continue;  // no block-wide step follows in this iteration
    const A rs = A(1) / d_sqrt(squares * inv_cols + eps);
    if (at.lane == 0) {
      if constexpr (Centered) mean_out[r] = mu;
      rstd_out[r] = rs;
    }
    T* yr = y + r * cols;
    for (std::int64_t c = at.lane; c < cols; c += Rows::row_threads) {
      A v = (load(xr + c) - mu) * rs;
      if (weight) v *= load(weight + c);
      if (bias) v += load(bias + c);
      yr[c] = to_element<T>(v);
    }
  }
}

/// dx = rs * (gy - a - (x - mu) * bcoef) with gy = g * weight, a = mean(gy) (layer_norm
/// only) and bcoef = mean(gy * (x - mu)) * rs^2.
template <class T, class A, bool Centered, int WarpsPerRow>
__global__ void __launch_bounds__(norm_threads)
    norm_backward_input_kernel(T* dx, const T* g, const T* x, const T* weight, const A* mean, const A* rstd,
                               std::int64_t rows, std::int64_t cols) {
  using Rows = RowGroup<WarpsPerRow>;
  __shared__ A scratch[2 * norm_warps];
  const Rows at;
  const A inv_cols = A(1) / static_cast<A>(cols);
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * Rows::rows_per_block;
  for (std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * Rows::rows_per_block; first < rows; first += step) {
    const std::int64_t r = first + at.group;
    const bool active = r < rows;
    const std::int64_t base = (active ? r : 0) * cols;
    const A mu = Centered && active ? mean[r] : A(0);
    A sum_gy = 0, sum_gyx = 0;
    if (active)
      for (std::int64_t c = at.lane; c < cols; c += Rows::row_threads) {
        A gy = load(g + base + c);
        if (weight) gy *= load(weight + c);
        sum_gy += gy;
        sum_gyx += gy * (load(x + base + c) - mu);
      }
    group_sum2<WarpsPerRow>(sum_gy, sum_gyx, scratch);
    if (!active) continue;
    const A rs = rstd[r];
    const A a = Centered ? sum_gy * inv_cols : A(0);
    const A bcoef = sum_gyx * inv_cols * rs * rs;
    for (std::int64_t c = at.lane; c < cols; c += Rows::row_threads) {
      A gy = load(g + base + c);
      if (weight) gy *= load(weight + c);
      dx[base + c] = to_element<T>(rs * (gy - a - (load(x + base + c) - mu) * bcoef));
    }
  }
}

/// Row lanes of a weight/bias reduction block (blockDim = (norm_param_slab_cols, param_row_lanes)).
constexpr int param_row_lanes = 8;
constexpr int param_cols = static_cast<int>(norm_param_slab_cols);

/// Partial weight/bias gradients: block (slab, chunk) sums g * (x - mu) * rs and g over the
/// rows of its chunk for the columns of its slab; lanes along x are columns (coalesced
/// loads), lanes along y interleave rows and are added in order at the end.
template <class T, class A, bool Centered>
__global__ void __launch_bounds__(norm_threads)
    norm_param_partials_kernel(A* dweight_part, A* dbias_part, const T* g, const T* x, const A* mean, const A* rstd,
                               std::int64_t rows, std::int64_t cols, std::int64_t rows_per_chunk, std::int64_t slabs) {
  __shared__ A dw_tile[param_row_lanes][param_cols];
  __shared__ A db_tile[param_row_lanes][param_cols];
  const std::int64_t chunk = blockIdx.y;
  const std::int64_t r0 = chunk * rows_per_chunk;
  const std::int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  for (std::int64_t slab = blockIdx.x; slab < slabs; slab += gridDim.x) {
    const std::int64_t c = slab * param_cols + tx;
    A dw = 0, db = 0;
    if (c < cols) {
#pragma unroll 4
      for (std::int64_t r = r0 + ty; r < r1; r += param_row_lanes) {
        const A gv = load(g + r * cols + c);
        const A xc = Centered ? load(x + r * cols + c) - mean[r] : load(x + r * cols + c);
        dw += gv * xc * rstd[r];
        db += gv;
      }
    }
    dw_tile[ty][tx] = dw;
    db_tile[ty][tx] = db;
    __syncthreads();
    if (ty == 0 && c < cols) {
      A total_w = 0, total_b = 0;
      for (int lane = 0; lane < param_row_lanes; ++lane) {
        total_w += dw_tile[lane][tx];
        total_b += db_tile[lane][tx];
      }
      if (dweight_part) dweight_part[chunk * cols + c] = total_w;
      if (dbias_part) dbias_part[chunk * cols + c] = total_b;
    }
    __syncthreads();
  }
}

/// out[c] = sum over chunks k (in order) of part[k * cols + c]; zero when chunks == 0.
template <class T, class A>
__global__ void norm_param_finish_kernel(T* dweight, T* dbias, const A* dweight_part, const A* dbias_part,
                                         std::int64_t chunks, std::int64_t cols) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += stride) {
    if (dweight) {
      A s = 0;
      for (std::int64_t k = 0; k < chunks; ++k) s += dweight_part[k * cols + c];
      dweight[c] = to_element<T>(s);
    }
    if (dbias) {
      A s = 0;
      for (std::int64_t k = 0; k < chunks; ++k) s += dbias_part[k * cols + c];
      dbias[c] = to_element<T>(s);
    }
  }
}

/// Calls f(std::integral_constant<int, W>) with W the warps per row for rows of `cols`.
template <class F>
void with_warps_per_row(std::int64_t cols, F&& f) {
  if (cols <= 1024)
    f(std::integral_constant<int, 1>{});
  else if (cols <= 4096)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, 8>{});
}

/// Blocks of the row kernels: one per group of rows, capped (the kernels loop over the rest).
unsigned row_blocks(std::int64_t rows, int rows_per_block) {
  return capped_blocks((rows + rows_per_block - 1) / rows_per_block);
}

void check_sizes(std::string_view op, std::int64_t rows, std::int64_t cols) {
  CONDENSE_CHECK(rows >= 0 && cols > 0, op, "CUDA norm kernels need rows >= 0 and cols > 0, got [", rows, ", ", cols,
                 "]");
}

}  // namespace

void norm_forward(bool centered, DType dtype, int device, void* y, const void* x, const void* weight, const void* bias,
                  void* mean, void* rstd, std::int64_t rows, std::int64_t cols, double eps, std::string_view op) {
  check_sizes(op, rows, cols);
  CONDENSE_CHECK(rstd && (mean || !centered), op, "CUDA norm forward needs the statistics buffers");
  if (rows == 0) return;
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    static_assert(sizeof(A) == (std::is_same_v<T, double> ? 8 : 4), "statistics type must match norm_stat_dtype");
    with_warps_per_row(cols, [&](auto warps) {
      constexpr int W = decltype(warps)::value;
      const unsigned blocks = row_blocks(rows, RowGroup<W>::rows_per_block);
      T* out = static_cast<T*>(y);
      const T* xp = static_cast<const T*>(x);
      const T* wp = static_cast<const T*>(weight);
      const T* bp = static_cast<const T*>(bias);
      A* rp = static_cast<A*>(rstd);
      if (centered) {
        detail::launch_kernel(norm_forward_kernel<T, A, true, W>, blocks, norm_threads, 0, stream, out, xp, wp, bp,
                              static_cast<A*>(mean), rp, rows, cols, static_cast<A>(eps));
      } else {
        detail::launch_kernel(norm_forward_kernel<T, A, false, W>, blocks, norm_threads, 0, stream, out, xp, wp, bp,
                              nullptr, rp, rows, cols, static_cast<A>(eps));
      }
    });
  });
  check_launch(op);
}

void norm_backward_input(bool centered, DType dtype, int device, void* dx, const void* g, const void* x,
                         const void* weight, const void* mean, const void* rstd, std::int64_t rows, std::int64_t cols,
                         std::string_view op) {
  check_sizes(op, rows, cols);
  CONDENSE_CHECK(rstd && (mean || !centered), op, "CUDA norm backward needs the saved statistics");
  if (rows == 0) return;
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    with_warps_per_row(cols, [&](auto warps) {
      constexpr int W = decltype(warps)::value;
      const unsigned blocks = row_blocks(rows, RowGroup<W>::rows_per_block);
      T* out = static_cast<T*>(dx);
      const T* gp = static_cast<const T*>(g);
      const T* xp = static_cast<const T*>(x);
      const T* wp = static_cast<const T*>(weight);
      const A* mp = static_cast<const A*>(mean);
      const A* rp = static_cast<const A*>(rstd);
      if (centered) {
        detail::launch_kernel(norm_backward_input_kernel<T, A, true, W>, blocks, norm_threads, 0, stream, out, gp, xp,
                              wp, mp, rp, rows, cols);
      } else {
        detail::launch_kernel(norm_backward_input_kernel<T, A, false, W>, blocks, norm_threads, 0, stream, out, gp, xp,
                              wp, nullptr, rp, rows, cols);
      }
    });
  });
  check_launch(op);
}

void norm_backward_params(bool centered, DType dtype, int device, void* dweight, void* dbias, const void* g,
                          const void* x, const void* mean, const void* rstd, std::int64_t rows, std::int64_t cols,
                          std::string_view op) {
  check_sizes(op, rows, cols);
  if (!dweight && !dbias) return;
  CONDENSE_CHECK(rows == 0 || (rstd && (mean || !centered)), op, "CUDA norm backward needs the saved statistics");
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  const NormParamChunks plan = norm_param_chunks(rows, cols);
  const std::int64_t slabs = (cols + norm_param_slab_cols - 1) / norm_param_slab_cols;
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    const std::size_t part_elements = static_cast<std::size_t>(plan.count * cols);
    const std::size_t buffers = (dweight ? 1 : 0) + (dbias ? 1 : 0);
    const DeviceScratch scratch(buffers * part_elements * sizeof(A), device, op);
    A* dw_part = dweight ? static_cast<A*>(scratch.get()) : nullptr;
    A* db_part = dbias ? static_cast<A*>(scratch.get()) + (dweight ? part_elements : 0) : nullptr;
    if (plan.count > 0) {
      const dim3 grid(capped_blocks(slabs), static_cast<unsigned>(plan.count));
      const dim3 block(param_cols, param_row_lanes);
      const T* gp = static_cast<const T*>(g);
      const T* xp = static_cast<const T*>(x);
      const A* mp = static_cast<const A*>(mean);
      const A* rp = static_cast<const A*>(rstd);
      if (centered) {
        detail::launch_kernel(norm_param_partials_kernel<T, A, true>, grid, block, 0, stream, dw_part, db_part, gp, xp,
                              mp, rp, rows, cols, plan.rows_per_chunk, slabs);
      } else {
        detail::launch_kernel(norm_param_partials_kernel<T, A, false>, grid, block, 0, stream, dw_part, db_part, gp, xp,
                              nullptr, rp, rows, cols, plan.rows_per_chunk, slabs);
      }
      check_launch(op);
    }
    detail::launch_kernel(norm_param_finish_kernel<T, A>, grid_for(cols, 256), 256, 0, stream, static_cast<T*>(dweight),
                          static_cast<T*>(dbias), dw_part, db_part, plan.count, cols);
  });
  check_launch(op);
}

}  // namespace condense::cuda
