// The line-wise scan kernels of scan.cu (which launches them; tests/emulation runs them on
// the CPU): inclusive scans over a contiguous tensor seen as [outer, n, inner], one thread
// per line, and the chunked cumsum over contiguous lines (blocks of 256 threads scanning
// chunks of 4096 elements from the totals of the chunks before them); cumprod's backward;
// arg reductions, one thread per line or one block per long contiguous line; the backward
// of max(t, dim).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda::scan_detail {

using namespace condense::cuda::detail;

constexpr int line_threads = 128;
constexpr int arg_block_threads = 256;

/// Thread `t`'s line: the element offset of its first element (outer index o, inner index i).
__device__ __forceinline__ std::int64_t line_base(std::int64_t line, std::int64_t n, std::int64_t inner) {
  return (line / inner) * n * inner + line % inner;
}

template <class T, class C>
__global__ void scan_lines(T* out, const T* in, std::int64_t lines, std::int64_t n, std::int64_t inner, ScanOp code,
                           bool reverse) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t line = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; line < lines; line += stride) {
    const std::int64_t base = line_base(line, n, inner);
    C acc = code == ScanOp::Sum ? C(0) : C(1);
    for (std::int64_t c = 0; c < n; ++c) {
      const std::int64_t at = base + (reverse ? n - 1 - c : c) * inner;
      const C x = static_cast<C>(load(in + at));
      if constexpr (std::is_integral_v<C>) {  // wrap around, as the CPU scan does
        using U = std::make_unsigned_t<C>;
        acc = code == ScanOp::Sum ? static_cast<C>(static_cast<U>(acc) + static_cast<U>(x))
                                  : static_cast<C>(static_cast<U>(acc) * static_cast<U>(x));
      } else {
        acc = c == 0 ? x : (code == ScanOp::Sum ? acc + x : acc * x);
      }
      out[at] = to_element<T>(acc);
    }
  }
}

template <class T, class C>
__global__ void cumprod_backward_lines(T* grad, const T* x, const T* y, const T* g, std::int64_t lines, std::int64_t n,
                                       std::int64_t inner) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t line = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; line < lines; line += stride) {
    const std::int64_t base = line_base(line, n, inner);
    C s = static_cast<C>(load(g + base + (n - 1) * inner));
    for (std::int64_t k = n - 1; k > 0; --k) {
      const std::int64_t at = base + k * inner, before = at - inner;
      grad[at] = to_element<T>(static_cast<C>(load(y + before)) * s);
      s = static_cast<C>(load(g + before)) + static_cast<C>(load(x + at)) * s;
    }
    grad[base] = to_element<T>(s);
  }
}

constexpr int scan_threads = 256;
constexpr std::int64_t scan_chunk = scan_threads * 16;  ///< elements of a line per block of the chunked cumsum

/// a + b, wrapping around for integers (as the CPU scan does).
template <class C>
__device__ __forceinline__ C wrapping_add(C a, C b) {
  if constexpr (std::is_integral_v<C>) {
    using U = std::make_unsigned_t<C>;
    return static_cast<C>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}

/// The identity of addition: -0 for floats (-0 + x is x, also for x = -0), 0 for integers.
template <class C>
__device__ __forceinline__ C sum_identity() {
  if constexpr (std::is_floating_point_v<C>) {
    return C(-0.0);
  } else {
    return C(0);
  }
}

/// Inclusive prefix sum of one value per thread over the block (scan_threads threads) in a
/// fixed order; `total` gets the sum of all. `warp_sums` holds scan_threads / 32 values.
template <class C>
__device__ __forceinline__ C block_inclusive_sum(C v, C* warp_sums, C& total) {
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  for (int offset = 1; offset < 32; offset *= 2) {
    const C before = __shfl_up_sync(0xffffffffu, v, offset);
    if (lane >= offset) v = wrapping_add(before, v);
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  C earlier = sum_identity<C>();
  total = sum_identity<C>();
  for (int w = 0; w < scan_threads / 32; ++w) {
    if (w < warp) earlier = wrapping_add(earlier, warp_sums[w]);
    total = wrapping_add(total, warp_sums[w]);
  }
  __syncthreads();  // warp_sums is reused by the next call
  return wrapping_add(earlier, v);
}

/// Element p (in scan order) of a contiguous line of n elements.
__device__ __forceinline__ std::int64_t scan_position(std::int64_t p, std::int64_t n, bool reverse) {
  return reverse ? n - 1 - p : p;
}

/// First pass of the chunked cumsum: totals[b] = the sum of block b's chunk (line b / chunks,
/// chunk b % chunks), added as cumsum_chunks adds it.
template <class T, class C>
__global__ void cumsum_chunk_totals(C* totals, const T* in, std::int64_t lines, std::int64_t n, std::int64_t chunks,
                                    bool reverse) {
  __shared__ C warp_sums[scan_threads / 32];
  for (std::int64_t b = blockIdx.x; b < lines * chunks; b += gridDim.x) {
    const T* x = in + (b / chunks) * n;
    const std::int64_t begin = (b % chunks) * scan_chunk;
    const std::int64_t end = begin + scan_chunk < n ? begin + scan_chunk : n;
    C total = sum_identity<C>();
    for (std::int64_t p0 = begin; p0 < end; p0 += scan_threads) {
      const std::int64_t p = p0 + threadIdx.x;
      const C v = p < end ? static_cast<C>(load(x + scan_position(p, n, reverse))) : sum_identity<C>();
      C round_total;
      block_inclusive_sum(v, warp_sums, round_total);
      total = wrapping_add(total, round_total);
    }
    if (threadIdx.x == 0) totals[b] = total;
  }
}

/// Second pass: block b scans its chunk 256 elements at a time, starting from the sum of the
/// totals of the chunks before it on its line (none when chunks == 1).
template <class T, class C>
__global__ void cumsum_chunks(T* out, const T* in, const C* totals, std::int64_t lines, std::int64_t n, std::int64_t chunks,
                              bool reverse) {
  __shared__ C warp_sums[scan_threads / 32];
  for (std::int64_t b = blockIdx.x; b < lines * chunks; b += gridDim.x) {
    const std::int64_t line = b / chunks, chunk = b % chunks;
    const T* x = in + line * n;
    T* y = out + line * n;
    const std::int64_t begin = chunk * scan_chunk;
    const std::int64_t end = begin + scan_chunk < n ? begin + scan_chunk : n;
    C carry = sum_identity<C>();
    if (chunk > 0) {
      C mine = sum_identity<C>();
      for (std::int64_t c = threadIdx.x; c < chunk; c += scan_threads) mine = wrapping_add(mine, totals[line * chunks + c]);
      block_inclusive_sum(mine, warp_sums, carry);
    }
    for (std::int64_t p0 = begin; p0 < end; p0 += scan_threads) {
      const std::int64_t p = p0 + threadIdx.x;
      const std::int64_t at = scan_position(p, n, reverse);
      const C v = p < end ? static_cast<C>(load(x + at)) : sum_identity<C>();
      C round_total;
      const C inclusive = block_inclusive_sum(v, warp_sums, round_total);
      if (p < end) y[at] = to_element<T>(wrapping_add(carry, inclusive));
      carry = wrapping_add(carry, round_total);
    }
  }
}

/// A candidate of an arg reduction: the value and its position along the line.
template <class C>
struct Candidate {
  C value;
  std::int64_t index;
};

/// True when `x` (at a later position than `best`) replaces it: strictly better, or the
/// first NaN; a NaN best stays.
template <class C>
__device__ __forceinline__ bool replaces(bool is_max, C x, C best) {
  if (best != best) return false;
  return x != x || (is_max ? x > best : x < best);
}

/// The better of two candidates (the lower position on ties and between two NaNs).
template <class C>
__device__ __forceinline__ Candidate<C> better(bool is_max, Candidate<C> a, Candidate<C> b) {
  if (a.index < 0) return b;
  if (b.index < 0) return a;
  const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
  if (a_nan || b_nan) return a_nan && (!b_nan || a.index < b.index) ? a : b;
  if (a.value == b.value) return a.index < b.index ? a : b;
  return (is_max ? a.value > b.value : a.value < b.value) ? a : b;
}

template <class T, class C>
__global__ void arg_reduce_lines(T* values, std::int64_t* indices, const T* in, std::int64_t lines, std::int64_t n,
                                 std::int64_t inner, bool is_max) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t line = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; line < lines; line += stride) {
    const std::int64_t base = line_base(line, n, inner);
    C best = static_cast<C>(load(in + base));
    std::int64_t at = 0;
    for (std::int64_t k = 1; k < n; ++k) {
      const C x = static_cast<C>(load(in + base + k * inner));
      if (replaces(is_max, x, best)) {
        best = x;
        at = k;
      }
    }
    indices[line] = at;
    if (values) values[line] = in[base + at * inner];
  }
}

/// One block per line of contiguous elements (inner == 1).
template <class T, class C>
__global__ void arg_reduce_rows(T* values, std::int64_t* indices, const T* in, std::int64_t rows, std::int64_t n, bool is_max) {
  __shared__ C shared_value[arg_block_threads];
  __shared__ std::int64_t shared_index[arg_block_threads];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * n;
    Candidate<C> mine{C(0), -1};
    for (std::int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const C x = static_cast<C>(load(row + k));
      if (mine.index < 0 || replaces(is_max, x, mine.value)) mine = {x, k};
    }
    shared_value[threadIdx.x] = mine.value;
    shared_index[threadIdx.x] = mine.index;
    __syncthreads();
    for (int width = blockDim.x / 2; width > 0; width /= 2) {
      if (static_cast<int>(threadIdx.x) < width) {
        const Candidate<C> merged = better(is_max, Candidate<C>{shared_value[threadIdx.x], shared_index[threadIdx.x]},
                                           Candidate<C>{shared_value[threadIdx.x + width], shared_index[threadIdx.x + width]});
        shared_value[threadIdx.x] = merged.value;
        shared_index[threadIdx.x] = merged.index;
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      indices[r] = shared_index[0];
      if (values) values[r] = row[shared_index[0]];
    }
    __syncthreads();
  }
}

template <class T>
__global__ void place_at_indices_kernel(T* grad, const T* g, const std::int64_t* indices, std::int64_t total, std::int64_t n,
                                        std::int64_t inner) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const std::int64_t i = e % inner, k = (e / inner) % n, o = e / (inner * n);
    const std::int64_t line = o * inner + i;
    grad[e] = indices[line] == k ? g[line] : to_element<T>(0.0f);
  }
}

/// The launch of the chunked cumsum over `lines` contiguous lines of n elements: chunks of
/// scan_chunk elements per line, and the blocks of both passes (each walks blocks
/// lines * chunks apart).
struct ChunkedCumsumPlan {
  std::int64_t chunks = 0;
  unsigned blocks = 0;
};
inline ChunkedCumsumPlan chunked_cumsum_plan(std::int64_t lines, std::int64_t n) {
  ChunkedCumsumPlan plan;
  plan.chunks = (n + scan_chunk - 1) / scan_chunk;
  plan.blocks = detail::capped_blocks(lines * plan.chunks);
  return plan;
}

}  // namespace condense::cuda::scan_detail
