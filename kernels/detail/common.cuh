// Shared pieces of the CUDA kernels (internal to kernels/*.cu): error checks that throw
// condense::Error with the op name and the CUDA error string, the current stream, launch
// sizes, element loads and stores through a compute type (float for the 16-bit types), the
// math helpers that pick the float or double function, and the offsets of the elements of
// strided operands (64-bit Layout, and the 31-bit Index32 of the fast paths).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

#include "condense/backend/cuda/index_divider.hpp"
#include "condense/backend/cuda/kernels.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"

/// Declares a kernel's dynamic shared memory, `name`: bytes aligned to 16. (The CPU
/// emulation of tests/emulation defines this macro first, with an array of its own.)
#ifndef CONDENSE_DYNAMIC_SHARED_MEMORY
#define CONDENSE_DYNAMIC_SHARED_MEMORY(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace condense::cuda::detail {

/// Throws condense::Error naming `op` when `status` is an error.
inline void check(cudaError_t status, std::string_view op, const char* what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the error state where it is not sticky
    fail(op, what, " failed: ", cudaGetErrorString(status));
  }
}

/// Throws naming `op` when the last kernel launch failed.
inline void check_launch(std::string_view op) { check(cudaGetLastError(), op, "kernel launch"); }

/// Makes `device` current for the calling thread (throws naming `op`).
inline void use_device(int device, std::string_view op) { check(cudaSetDevice(device), op, "cudaSetDevice"); }

/// Device scratch memory from the caching allocator, returned on scope exit (stream order
/// keeps it alive for the kernels already queued on the current stream); null for 0 bytes.
class DeviceScratch {
 public:
  DeviceScratch(std::size_t bytes, int device, std::string_view op)
      : device_(device), ptr_(bytes > 0 ? ::condense::cuda::allocate(bytes, device, op) : nullptr) {}
  ~DeviceScratch() { ::condense::cuda::deallocate(ptr_, device_); }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  void* get() const { return ptr_; }

 private:
  int device_;
  void* ptr_;
};

/// The calling thread's current stream for `device`.
inline cudaStream_t stream_of(int device) { return static_cast<cudaStream_t>(current_stream(device)); }

/// Launches kernel(args...) over `grid` blocks of `block` threads with `shared_bytes` of
/// dynamic shared memory on `stream`. Every kernel launch of the library goes through here,
/// so that the CPU emulation of tests/emulation (CONDENSE_CUDA_EMULATION) can run the same
/// launches on the host: there the kernel runs at once, its threads as fibers.
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                   Args&&... args) {
#if defined(CONDENSE_CUDA_EMULATION)
  ::condense_cuda_emulation::launch_from_runtime(kernel, grid, block, shared_bytes, stream,
                                                 std::forward<Args>(args)...);
#else
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
#endif
}

/// Tells the CPU emulation (tests/emulation) that the caching allocator hands the block at p
/// to a tensor that uses its first `bytes`; there copies and launches are held to those
/// bytes and, under AddressSanitizer, the rest is poisoned. Nothing on a GPU.
inline void note_block_in_use([[maybe_unused]] void* p, [[maybe_unused]] std::size_t bytes) {
#if defined(CONDENSE_CUDA_EMULATION)
  ::condense_cuda_emulation::block_in_use(p, bytes);
#endif
}

/// Tells the CPU emulation that the caching allocator keeps the block at p for reuse; there
/// any later copy, launch or (under AddressSanitizer) kernel access to it fails. Nothing on
/// a GPU.
inline void note_block_cached([[maybe_unused]] void* p) {
#if defined(CONDENSE_CUDA_EMULATION)
  ::condense_cuda_emulation::block_cached(p);
#endif
}

/// The most blocks a grid-stride launch uses; its kernel loops over the rest. On a GPU the
/// cap keeps the grid resident a few times over; the CPU emulation caps at three blocks, so
/// that every grid-stride loop the tests reach takes several steps per block (a stride or a
/// barrier inside such a loop that is wrong shows there, not only past 524280 blocks).
#ifdef CONDENSE_CUDA_EMULATION
inline constexpr std::int64_t max_grid_stride_blocks = 3;
#else
inline constexpr std::int64_t max_grid_stride_blocks = 65535 * 8;
#endif

/// Blocks for a grid-stride loop over `units` units of work of one block each: at least
/// one, at most max_grid_stride_blocks.
inline unsigned capped_blocks(std::int64_t units) {
  return static_cast<unsigned>(units < 1 ? 1 : (units > max_grid_stride_blocks ? max_grid_stride_blocks : units));
}

/// Blocks for a grid-stride loop over n items with `threads` per block (capped_blocks).
inline unsigned grid_for(std::int64_t n, int threads) { return capped_blocks((n + threads - 1) / threads); }

/// The type arithmetic on T happens in: float for the 16-bit floats, T otherwise.
template <class T>
using compute_t = std::conditional_t<std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>, float, T>;

template <class T>
__device__ __forceinline__ compute_t<T> load(const T* p) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return __uint_as_float(static_cast<unsigned>(p->bits) << 16);
  } else if constexpr (std::is_same_v<T, float16>) {
    return __half2float(__ushort_as_half(p->bits));
  } else {
    return *p;
  }
}

template <class T, class C>
__device__ __forceinline__ T to_element(C v) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return bfloat16::from_bits(__bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(v))));
  } else if constexpr (std::is_same_v<T, float16>) {
    return float16::from_bits(__half_as_ushort(__float2half_rn(static_cast<float>(v))));
  } else if constexpr (std::is_same_v<T, bool>) {
    return v != C(0);
  } else {
    return static_cast<T>(v);
  }
}

// Math on float or double (the float forms are the fast single-precision functions).
template <class C> __device__ __forceinline__ C d_exp(C x) { if constexpr (std::is_same_v<C, float>) return expf(x); else return exp(x); }
template <class C> __device__ __forceinline__ C d_log(C x) { if constexpr (std::is_same_v<C, float>) return logf(x); else return log(x); }
template <class C> __device__ __forceinline__ C d_sqrt(C x) { if constexpr (std::is_same_v<C, float>) return sqrtf(x); else return sqrt(x); }
template <class C> __device__ __forceinline__ C d_rsqrt(C x) { if constexpr (std::is_same_v<C, float>) return rsqrtf(x); else return rsqrt(x); }
template <class C> __device__ __forceinline__ C d_tanh(C x) { if constexpr (std::is_same_v<C, float>) return tanhf(x); else return tanh(x); }
template <class C> __device__ __forceinline__ C d_erf(C x) { if constexpr (std::is_same_v<C, float>) return erff(x); else return erf(x); }
template <class C> __device__ __forceinline__ C d_pow(C x, C e) { if constexpr (std::is_same_v<C, float>) return powf(x, e); else return pow(x, e); }
template <class C> __device__ __forceinline__ C d_abs(C x) { if constexpr (std::is_same_v<C, float>) return fabsf(x); else return fabs(x); }

/// Overflow-free logistic function: from e = exp(-|x|); NaN stays NaN.
template <class C>
__device__ __forceinline__ C d_sigmoid(C x) {
  const C e = d_exp(x < C(0) ? x : -x);
  return x >= C(0) ? C(1) / (C(1) + e) : (x < C(0) ? e / (C(1) + e) : x);
}

/// Extents and strides of up to max_dims dims, passed to kernels by value.
struct Layout {
  int ndim = 0;
  std::int64_t sizes[max_dims] = {};
  std::int64_t strides[max_dims] = {};

  static Layout of(const StridedArg& a) {
    Layout l;
    l.ndim = a.ndim;
    for (int d = 0; d < a.ndim; ++d) {
      l.sizes[d] = a.sizes[d];
      l.strides[d] = a.strides[d];
    }
    return l;
  }
  /// Offset (in elements) of the element with row-major linear index i (0 <= i < numel):
  /// the outermost coordinate is what is left of i, so it takes no division.
  __device__ __forceinline__ std::int64_t offset(std::int64_t i) const {
    std::int64_t off = 0;
    for (int d = ndim; d-- > 1;) {
      const std::int64_t s = sizes[d];
      off += (i % s) * strides[d];
      i /= s;
    }
    return ndim > 0 ? off + i * strides[0] : 0;
  }
};

/// N operands iterated over one shape with 31-bit indices: the extents as IndexDividers
/// (a multiply-high and a shift per dim instead of 64-bit division), each operand's strides
/// as 32-bit ints, and one split of the linear index into coordinates for all operands. The
/// strided kernels' fast path; index32_of says whether an iteration fits it.
template <int N>
struct Index32 {
  int ndim = 0;
  IndexDivider extents[max_dims];  ///< extents[0] is never divided by
  std::int32_t strides[N][max_dims] = {};

  /// off[k] = the offset (in elements) of operand k's element with linear index i < numel.
  __device__ __forceinline__ void offsets(std::uint32_t i, std::int32_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
#pragma unroll
    for (int d = max_dims - 1; d > 0; --d) {
      if (d < ndim) {
        const std::uint32_t q = extents[d].divide(i);
        const auto coordinate = static_cast<std::int32_t>(i - q * extents[d].divisor());
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += coordinate * strides[k][d];
        i = q;
      }
    }
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += static_cast<std::int32_t>(i) * strides[k][0];
  }
};

/// Fills `index` for the N operands args[0..N) of one iteration shape (coalesced, no
/// extent 0) and returns true when the element count and every operand's largest offset stay below 2^31 and no
/// stride is negative; false leaves the 64-bit Layout path to the caller.
template <int N>
bool index32_of(const StridedArg* const* args, Index32<N>& index) {
  constexpr std::int64_t limit = 0x7fffffff;
  const StridedArg& first = *args[0];
  if (first.numel() > limit) return false;
  index.ndim = first.ndim;
  for (int d = 0; d < first.ndim; ++d) index.extents[d] = IndexDivider(static_cast<std::uint32_t>(first.sizes[d]));
  for (int k = 0; k < N; ++k) {
    std::int64_t span = 0;
    for (int d = 0; d < first.ndim; ++d) {
      const std::int64_t stride = args[k]->strides[d];
      if (stride < 0 || stride > limit) return false;
      span += (first.sizes[d] - 1) * stride;  // each term < 2^62 and span <= limit before it
      if (span > limit) return false;
      index.strides[k][d] = static_cast<std::int32_t>(stride);
    }
  }
  return true;
}

/// Calls f(T{}) with T the element type of `dtype` among the listed ones; throws naming
/// `op` for the others.
template <class... Ts, class F>
void dispatch_dtype(DType dtype, std::string_view op, F&& f) {
  bool done = false;
  ((!done && dtype == dtype_of<Ts> ? (f(Ts{}), done = true) : false), ...);
  if (!done) fail(op, "no CUDA kernel for element type ", dtype_name(dtype));
}

/// The floating element types every float kernel is built for.
#define CONDENSE_CUDA_FLOAT_TYPES float, double, ::condense::bfloat16, ::condense::float16

}  // namespace condense::cuda::detail
