// Line-wise CUDA ops over a contiguous tensor seen as [outer, n, inner] (kernels in
// detail/scan_kernels.cuh): inclusive scans (cumsum, cumprod) and cumprod's backward, one thread per line walking its n
// elements (neighbouring threads take neighbouring inner positions, so loads coalesce when
// inner > 1), except cumsum over contiguous lines (inner == 1) of at least 256 elements:
// blocks of 256 threads scan chunks of 4096 elements, 256 adjacent ones at a time, each
// chunk starting from the sum of the chunk totals before it (a first pass); arg reductions
// (argmax/argmin with the value), one thread per line, or one block per line when the line
// is long and inner == 1 (a reduction over the vocabulary); and the backward of max(t, dim),
// which places each line's gradient at its index.
// Scans accumulate in the element type (float for the 16-bit types), as on the CPU; the
// chunked cumsum adds in another order than the CPU's sequential one (same up to rounding;
// integers wrap around identically).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"
#include "detail/scan_kernels.cuh"

namespace condense::cuda {
namespace {

using namespace detail;
using namespace scan_detail;

#define CONDENSE_CUDA_SCAN_TYPES CONDENSE_CUDA_FLOAT_TYPES, std::int32_t, std::int64_t

void check_geometry(const LineGeometry& g, std::string_view op) {
  CONDENSE_CHECK(g.outer >= 0 && g.n >= 0 && g.inner >= 0, op, "CUDA line geometry [", g.outer, ", ", g.n, ", ", g.inner,
                 "] has a negative extent");
}

}  // namespace

void scan(ScanOp code, bool reverse, void* out, const void* in, const LineGeometry& g, std::string_view op) {
  check_geometry(g, op);
  const std::int64_t lines = g.outer * g.inner;
  if (lines == 0 || g.n == 0) return;
  use_device(g.device, op);
  const cudaStream_t stream = stream_of(g.device);
  if (code == ScanOp::Sum && g.inner == 1 && g.n >= scan_threads) {
    const auto [chunks, blocks] = chunked_cumsum_plan(lines, g.n);
    dispatch_dtype<CONDENSE_CUDA_SCAN_TYPES>(g.dtype, op, [&](auto tag) {
      using T = decltype(tag);
      using C = compute_t<T>;
      const T* x = static_cast<const T*>(in);
      const DeviceScratch scratch(chunks > 1 ? static_cast<std::size_t>(lines * chunks) * sizeof(C) : 0, g.device, op);
      C* totals = static_cast<C*>(scratch.get());
      if (chunks > 1) {
        detail::launch_kernel(cumsum_chunk_totals<T, C>, blocks, scan_threads, 0, stream, totals, x, lines, g.n, chunks,
                              reverse);
        check_launch(op);
      }
      detail::launch_kernel(cumsum_chunks<T, C>, blocks, scan_threads, 0, stream, static_cast<T*>(out), x, totals,
                            lines, g.n, chunks, reverse);
    });
    check_launch(op);
    return;
  }
  dispatch_dtype<CONDENSE_CUDA_SCAN_TYPES>(g.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    detail::launch_kernel(scan_lines<T, compute_t<T>>, grid_for(lines, line_threads), line_threads, 0, stream,
                          static_cast<T*>(out), static_cast<const T*>(in), lines, g.n, g.inner, code, reverse);
  });
  check_launch(op);
}

void cumprod_backward(void* grad, const void* x, const void* y, const void* g, const LineGeometry& geo, std::string_view op) {
  check_geometry(geo, op);
  const std::int64_t lines = geo.outer * geo.inner;
  if (lines == 0 || geo.n == 0) return;
  use_device(geo.device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(geo.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    detail::launch_kernel(cumprod_backward_lines<T, compute_t<T>>, grid_for(lines, line_threads), line_threads, 0,
                          stream_of(geo.device), static_cast<T*>(grad), static_cast<const T*>(x),
                          static_cast<const T*>(y), static_cast<const T*>(g), lines, geo.n, geo.inner);
  });
  check_launch(op);
}

void place_at_indices(void* grad, const void* g, const std::int64_t* indices, const LineGeometry& geo, std::string_view op) {
  check_geometry(geo, op);
  const std::int64_t total = geo.outer * geo.n * geo.inner;
  if (total == 0) return;
  use_device(geo.device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(geo.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    detail::launch_kernel(place_at_indices_kernel<T>, grid_for(total, 256), 256, 0, stream_of(geo.device),
                          static_cast<T*>(grad), static_cast<const T*>(g), indices, total, geo.n, geo.inner);
  });
  check_launch(op);
}

void arg_reduce(bool is_max, void* values, std::int64_t* indices, const void* in, const LineGeometry& g, std::string_view op) {
  check_geometry(g, op);
  const std::int64_t lines = g.outer * g.inner;
  if (lines == 0) return;
  CONDENSE_CHECK(g.n > 0, op, "CUDA arg reduction over an empty dim");
  use_device(g.device, op);
  const cudaStream_t stream = stream_of(g.device);
  dispatch_dtype<CONDENSE_CUDA_SCAN_TYPES>(g.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    T* v = static_cast<T*>(values);
    const T* x = static_cast<const T*>(in);
    if (g.inner == 1 && g.n >= 1024) {
      const unsigned blocks = capped_blocks(lines);
      detail::launch_kernel(arg_reduce_rows<T, C>, blocks, arg_block_threads, 0, stream, v, indices, x, lines, g.n,
                            is_max);
    } else {
      detail::launch_kernel(arg_reduce_lines<T, C>, grid_for(lines, line_threads), line_threads, 0, stream, v, indices,
                            x, lines, g.n, g.inner, is_max);
    }
  });
  check_launch(op);
}

}  // namespace condense::cuda
