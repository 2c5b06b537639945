// Comparison and selection CUDA kernels: eq/ne/lt/le/gt/ge of two operands of one element
// type (the 16-bit floats compare as float, NaN compares unequal), and/or/xor of bool
// operands, each writing bool; and where(cond, a, b). One grid-stride loop over the output
// with a contiguous path (plain indexing) and a strided one over the coalesced dims.
#include <cstdint>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

constexpr int threads_per_block = 256;

/// a `code` b on loaded values (compute_t of the element type, or bool).
template <class C>
__device__ __forceinline__ bool compare_values(CompareOp code, C a, C b) {
  switch (code) {
    case CompareOp::Eq: return a == b;
    case CompareOp::Ne: return a != b;
    case CompareOp::Lt: return a < b;
    case CompareOp::Le: return a <= b;
    case CompareOp::Gt: return a > b;
    case CompareOp::Ge: return a >= b;
    case CompareOp::And: return a != C(0) && b != C(0);
    case CompareOp::Or: return a != C(0) || b != C(0);
    case CompareOp::Xor: return (a != C(0)) != (b != C(0));
  }
  return false;
}

template <class T>
__global__ void compare_contiguous(bool* out, const T* a, const T* b, std::int64_t n, CompareOp code) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = compare_values(code, load(a + i), load(b + i));
}

template <class T>
__global__ void compare_strided(bool* out, Layout lo, const T* a, Layout la, const T* b, Layout lb, std::int64_t n,
                                CompareOp code) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[lo.offset(i)] = compare_values(code, load(a + la.offset(i)), load(b + lb.offset(i)));
}

template <class T>
__global__ void where_contiguous(T* out, const bool* cond, const T* a, const T* b, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = cond[i] ? a[i] : b[i];
}

template <class T>
__global__ void where_strided(T* out, Layout lo, const bool* cond, Layout lc, const T* a, Layout la, const T* b, Layout lb,
                              std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[lo.offset(i)] = cond[lc.offset(i)] ? a[la.offset(i)] : b[lb.offset(i)];
}

/// Throws naming `op` unless every operand has out's sizes and device.
void check_same_iteration(std::string_view op, const StridedArg& out, std::initializer_list<const StridedArg*> ins) {
  for (const StridedArg* in : ins) {
    bool same = in->ndim == out.ndim && in->device == out.device;
    for (int d = 0; same && d < out.ndim; ++d) same = in->sizes[d] == out.sizes[d];
    CONDENSE_CHECK(same, op, "CUDA operands of different extents or devices");
  }
}

#define CONDENSE_CUDA_COMPARE_TYPES CONDENSE_CUDA_FLOAT_TYPES, std::int32_t, std::int64_t, bool

}  // namespace

void compare(CompareOp code, const StridedArg& out_arg, const StridedArg& a_arg, const StridedArg& b_arg, std::string_view op) {
  check_same_iteration(op, out_arg, {&a_arg, &b_arg});
  CONDENSE_CHECK(out_arg.dtype == DType::Bool && a_arg.dtype == b_arg.dtype, op, "CUDA comparison of ",
                 dtype_name(a_arg.dtype), " and ", dtype_name(b_arg.dtype), " into ", dtype_name(out_arg.dtype));
  const bool logical = code == CompareOp::And || code == CompareOp::Or || code == CompareOp::Xor;
  CONDENSE_CHECK(!logical || a_arg.dtype == DType::Bool, op, "CUDA logical op on ", dtype_name(a_arg.dtype));
  StridedArg out = out_arg, a = a_arg, b = b_arg;
  coalesce({&out, &a, &b});
  const std::int64_t n = out.numel();
  if (n == 0) return;
  use_device(out.device, op);
  const cudaStream_t stream = stream_of(out.device);
  bool* o = static_cast<bool*>(out.data);
  dispatch_dtype<CONDENSE_CUDA_COMPARE_TYPES>(a.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a.data);
    const T* pb = static_cast<const T*>(b.data);
    if (out.is_contiguous() && a.is_contiguous() && b.is_contiguous()) {
      detail::launch_kernel(compare_contiguous<T>, grid_for(n, threads_per_block), threads_per_block, 0, stream, o, pa,
                            pb, n, code);
    } else {
      detail::launch_kernel(compare_strided<T>, grid_for(n, threads_per_block), threads_per_block, 0, stream, o,
                            Layout::of(out), pa, Layout::of(a), pb, Layout::of(b), n, code);
    }
  });
  check_launch(op);
}

void where(const StridedArg& out_arg, const StridedArg& cond_arg, const StridedArg& a_arg, const StridedArg& b_arg,
           std::string_view op) {
  check_same_iteration(op, out_arg, {&cond_arg, &a_arg, &b_arg});
  CONDENSE_CHECK(cond_arg.dtype == DType::Bool && a_arg.dtype == out_arg.dtype && b_arg.dtype == out_arg.dtype, op,
                 "CUDA where of a ", dtype_name(cond_arg.dtype), " condition, ", dtype_name(a_arg.dtype), " and ",
                 dtype_name(b_arg.dtype), " into ", dtype_name(out_arg.dtype));
  StridedArg out = out_arg, cond = cond_arg, a = a_arg, b = b_arg;
  coalesce({&out, &cond, &a, &b});
  const std::int64_t n = out.numel();
  if (n == 0) return;
  use_device(out.device, op);
  const cudaStream_t stream = stream_of(out.device);
  const bool* c = static_cast<const bool*>(cond.data);
  dispatch_dtype<CONDENSE_CUDA_COMPARE_TYPES>(out.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    T* o = static_cast<T*>(out.data);
    const T* pa = static_cast<const T*>(a.data);
    const T* pb = static_cast<const T*>(b.data);
    if (out.is_contiguous() && cond.is_contiguous() && a.is_contiguous() && b.is_contiguous()) {
      detail::launch_kernel(where_contiguous<T>, grid_for(n, threads_per_block), threads_per_block, 0, stream, o, c, pa,
                            pb, n);
    } else {
      detail::launch_kernel(where_strided<T>, grid_for(n, threads_per_block), threads_per_block, 0, stream, o,
                            Layout::of(out), c, Layout::of(cond), pa, Layout::of(a), pb, Layout::of(b), n);
    }
  });
  check_launch(op);
}

}  // namespace condense::cuda
