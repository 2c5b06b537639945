// CUDA kernels of dropout: the forward draws the keep mask from condense::detail::dropout_keep
// (the same splitmix64 bits the CPU loop uses, so a key gives the same mask on both devices),
// stores it as bytes and writes x * mask * scale; the backward applies the saved mask to the
// incoming gradient. Grid-stride loops over the row-major element index; the strided input
// takes a per-element offset from its layout, a contiguous one is read directly.
#include <cstdint>
#include <string_view>

#include "condense/backend/cuda/optim_kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

constexpr int dropout_threads = 256;

/// mask[i] = keep(i); out[i] = x[i] * mask[i] * scale (the CPU loop's order of products).
template <class T, bool Contiguous>
__global__ void dropout_forward_kernel(T* out, std::uint8_t* mask, const T* x, Layout x_layout, std::int64_t n,
                                       std::uint64_t key, std::uint64_t threshold, compute_t<T> scale) {
  using C = compute_t<T>;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const bool keep = ::condense::detail::dropout_keep(key, static_cast<std::uint64_t>(i), threshold);
    mask[i] = keep ? 1 : 0;
    const C v = load(x + (Contiguous ? i : x_layout.offset(i)));
    out[i] = to_element<T>(v * (keep ? C(1) : C(0)) * scale);
  }
}

/// grad_in[i] = grad_out[i] * mask[i] * scale.
template <class T, bool Contiguous>
__global__ void dropout_backward_kernel(T* grad_in, const std::uint8_t* mask, const T* grad_out, Layout g_layout,
                                        std::int64_t n, compute_t<T> scale) {
  using C = compute_t<T>;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const C g = load(grad_out + (Contiguous ? i : g_layout.offset(i)));
    grad_in[i] = to_element<T>(g * (mask[i] != 0 ? C(1) : C(0)) * scale);
  }
}

/// Checks a contiguous result and an input view of the same element count, type and device;
/// returns the input with its dims coalesced.
StridedArg checked_input(const StridedArg& out, const StridedArg& in, std::string_view op) {
  CONDENSE_CHECK(out.is_contiguous(), op, "CUDA dropout needs a contiguous result");
  CONDENSE_CHECK(out.numel() == in.numel(), op, "CUDA dropout of ", in.numel(), " elements into ", out.numel());
  CONDENSE_CHECK(out.dtype == in.dtype, op, "CUDA dropout operands of different element types: ", dtype_name(out.dtype),
                 " and ", dtype_name(in.dtype));
  CONDENSE_CHECK(out.device == in.device, op, "CUDA dropout operands on cuda:", out.device, " and cuda:", in.device);
  StridedArg coalesced = in;
  coalesce({&coalesced});
  return coalesced;
}

}  // namespace

void dropout_forward(const StridedArg& out, void* mask, const StridedArg& x, std::uint64_t key, std::uint64_t threshold,
                     double scale, std::string_view op) {
  const StridedArg in = checked_input(out, x, op);
  const std::int64_t n = out.numel();
  if (n == 0) return;
  CONDENSE_CHECK(mask != nullptr, op, "CUDA dropout needs a mask buffer");
  use_device(out.device, op);
  const Layout layout = Layout::of(in);
  const bool contiguous = in.is_contiguous();
  const cudaStream_t stream = stream_of(out.device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(out.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    T* o = static_cast<T*>(out.data);
    auto* m = static_cast<std::uint8_t*>(mask);
    const T* xp = static_cast<const T*>(in.data);
    if (contiguous) {
      detail::launch_kernel(dropout_forward_kernel<T, true>, grid_for(n, dropout_threads), dropout_threads, 0, stream,
                            o, m, xp, layout, n, key, threshold, static_cast<C>(scale));
    } else {
      detail::launch_kernel(dropout_forward_kernel<T, false>, grid_for(n, dropout_threads), dropout_threads, 0, stream,
                            o, m, xp, layout, n, key, threshold, static_cast<C>(scale));
    }
  });
  check_launch(op);
}

void dropout_backward(const StridedArg& grad_in, const void* mask, const StridedArg& grad_out, double scale,
                      std::string_view op) {
  const StridedArg in = checked_input(grad_in, grad_out, op);
  const std::int64_t n = grad_in.numel();
  if (n == 0) return;
  CONDENSE_CHECK(mask != nullptr, op, "CUDA dropout backward needs the forward's mask");
  use_device(grad_in.device, op);
  const Layout layout = Layout::of(in);
  const bool contiguous = in.is_contiguous();
  const cudaStream_t stream = stream_of(grad_in.device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(grad_in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    T* gi = static_cast<T*>(grad_in.data);
    const auto* m = static_cast<const std::uint8_t*>(mask);
    const T* go = static_cast<const T*>(in.data);
    if (contiguous) {
      detail::launch_kernel(dropout_backward_kernel<T, true>, grid_for(n, dropout_threads), dropout_threads, 0, stream,
                            gi, m, go, layout, n, static_cast<C>(scale));
    } else {
      detail::launch_kernel(dropout_backward_kernel<T, false>, grid_for(n, dropout_threads), dropout_threads, 0, stream,
                            gi, m, go, layout, n, static_cast<C>(scale));
    }
  });
  check_launch(op);
}

}  // namespace condense::cuda
