// The RoPE rotation CUDA kernel: each thread rotates one pair (i, i + D/2) of one
// [b, h, t] row of a [B, H, T, D] view into a contiguous output, reading cos and sin from
// a contiguous [1 or B, T, D/2] table (broadcast over heads, and over the batch when it has
// one row). Forward and backward are the same kernel (the backward negates the sine).
// Positions come from multiply-shift division (IndexDivider) below 2^31 pairs. Arithmetic
// and the tables in float for float and the 16-bit types, double for double.
#include <cstdint>
#include <string_view>

#include "condense/backend/cuda/norm_kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

/// Extents and strides of the rotated view, and the table's batch rows; the extents also as
/// IndexDividers for the 31-bit path.
struct RopeLayout {
  std::int64_t batch = 0, heads = 0, length = 0, half = 0;
  std::int64_t stride_b = 0, stride_h = 0, stride_t = 0, stride_d = 0;
  bool per_row_table = false;
  IndexDivider heads_divider, length_divider, half_divider;
};

/// Pair p's position (b, h, t, i) in the [B, H, T, D/2] pairs: by multiply-shift division
/// when Index32 (fewer than 2^31 pairs), by 64-bit division otherwise.
template <bool Index32>
__device__ __forceinline__ void pair_position(const RopeLayout& l, std::int64_t p, std::int64_t& b, std::int64_t& h,
                                              std::int64_t& t, std::int64_t& i) {
  if constexpr (Index32) {
    const auto p32 = static_cast<std::uint32_t>(p);
    const std::uint32_t row = l.half_divider.divide(p32), rest = l.length_divider.divide(row);
    i = p32 - row * l.half_divider.divisor();
    t = row - rest * l.length_divider.divisor();
    b = l.heads_divider.divide(rest);
    h = rest - static_cast<std::uint32_t>(b) * l.heads_divider.divisor();
  } else {
    i = p % l.half;
    const std::int64_t row = p / l.half;  // (b, h, t) in row-major order
    t = row % l.length;
    h = (row / l.length) % l.heads;
    b = row / (l.length * l.heads);
  }
}

template <class T, class A, bool Index32>
__global__ void rope_kernel(T* out, const T* x, const A* cos, const A* sin, RopeLayout l, A sign) {
  const std::int64_t pairs = l.batch * l.heads * l.length * l.half;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t p = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs; p += stride) {
    std::int64_t b, h, t, i;
    pair_position<Index32>(l, p, b, h, t, i);
    const std::int64_t row = (b * l.heads + h) * l.length + t;
    const T* xr = x + b * l.stride_b + h * l.stride_h + t * l.stride_t;
    const std::int64_t at = ((l.per_row_table ? b : 0) * l.length + t) * l.half + i;
    const A c = cos[at];
    const A s = sign * sin[at];
    const A x1 = load(xr + i * l.stride_d);
    const A x2 = load(xr + (i + l.half) * l.stride_d);
    T* o = out + row * 2 * l.half;
    o[i] = to_element<T>(x1 * c - x2 * s);
    o[i + l.half] = to_element<T>(x2 * c + x1 * s);
  }
}

}  // namespace

void rope_rotate(bool inverse, const StridedArg& out, const StridedArg& x, const void* cos, const void* sin,
                 std::int64_t table_rows, std::string_view op) {
  CONDENSE_CHECK(x.ndim == 4 && out.ndim == 4, op, "CUDA rope needs [B, H, T, D] operands with all four dims, got ",
                 x.ndim, " and ", out.ndim, " dims");
  for (int d = 0; d < 4; ++d)
    CONDENSE_CHECK(x.sizes[d] == out.sizes[d], op, "CUDA rope: output and input extents differ in dim ", d);
  CONDENSE_CHECK(out.is_contiguous(), op, "CUDA rope needs a contiguous output");
  CONDENSE_CHECK(out.dtype == x.dtype && out.device == x.device, op,
                 "CUDA rope operands of different types or devices");
  CONDENSE_CHECK(x.sizes[3] % 2 == 0, op, "CUDA rope needs an even head dim, got ", x.sizes[3]);
  CONDENSE_CHECK(table_rows == 1 || table_rows == x.sizes[0], op, "CUDA rope: a table of ", table_rows,
                 " rows for a batch of ", x.sizes[0]);
  RopeLayout layout;
  layout.batch = x.sizes[0];
  layout.heads = x.sizes[1];
  layout.length = x.sizes[2];
  layout.half = x.sizes[3] / 2;
  layout.stride_b = x.strides[0];
  layout.stride_h = x.strides[1];
  layout.stride_t = x.strides[2];
  layout.stride_d = x.strides[3];
  layout.per_row_table = table_rows > 1;
  const std::int64_t pairs = layout.batch * layout.heads * layout.length * layout.half;
  if (pairs == 0) return;
  const bool index32 = pairs <= 0x7fffffff;
  if (index32) {
    layout.heads_divider = IndexDivider(static_cast<std::uint32_t>(layout.heads));
    layout.length_divider = IndexDivider(static_cast<std::uint32_t>(layout.length));
    layout.half_divider = IndexDivider(static_cast<std::uint32_t>(layout.half));
  }
  CONDENSE_CHECK(cos && sin, op, "CUDA rope needs the cos and sin tables");
  use_device(x.device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    constexpr int threads = 256;
    const auto launch = [&](auto kernel) {
      detail::launch_kernel(kernel, grid_for(pairs, threads), threads, 0, stream_of(x.device),
                            static_cast<T*>(out.data), static_cast<const T*>(x.data), static_cast<const A*>(cos),
                            static_cast<const A*>(sin), layout, inverse ? A(-1) : A(1));
    };
    if (index32) {
      launch(rope_kernel<T, A, true>);
    } else {
      launch(rope_kernel<T, A, false>);
    }
  });
  check_launch(op);
}

}  // namespace condense::cuda
