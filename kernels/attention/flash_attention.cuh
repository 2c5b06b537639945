// Flash attention on the GPU, templated on the mask policy (the same policy types as the
// CPU path, called in device code): the launchers of backend/cuda/attention.hpp, which run
// the tensor-core kernels (flash_attention_mma.cuh) for 16-bit types up to head dim 128 and
// the portable kernels (flash_attention_portable.cuh) otherwise. The kernels run every
// policy P as (QueryOffset<P> & KeyPadding) with the offset and the key lengths from
// AttentionArgs, so the models' cached decoding and padded batches reach P's kernels. q,
// k, v, the output and the gradients are read and written through the RowLayouts of
// AttentionArgs (unset ones are contiguous), so strided views need no copy. Forwards with
// at most 16 queries per sequence (decoding steps) take the split-key kernels of
// flash_attention_decode.cuh.
//
// Include this file in a .cu file and write CONDENSE_CUDA_INSTANTIATE_ATTENTION(Policy) to
// build the launchers of backend/cuda/attention.hpp for a policy of your own.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "condense/backend/cuda/attention.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/mask/combinators.hpp"
#include "condense/mask/policy.hpp"
#include "attention/flash_attention_decode.cuh"
#include "attention/flash_attention_mma.cuh"
#include "attention/flash_attention_portable.cuh"
#include "detail/common.cuh"

/// 1: build the launchers for float16 and double too, and for head dims up to 256 (CMake
/// option CONDENSE_CUDA_ATTENTION_ALL); 0: float (portable kernels) and bfloat16 (tensor
/// cores) with head dims up to 128, which bounds the build time.
#ifndef CONDENSE_CUDA_ATTENTION_ALL
#define CONDENSE_CUDA_ATTENTION_ALL 0
#endif

/// 1: also build the one-stage variants of the tensor-core kernels, which the launchers run
/// on devices whose shared memory per block cannot hold the two-stage head-dim-128 kernels
/// (sm_86 and sm_89: 99 KiB); CMake sets it when CONDENSE_CUDA_ARCHITECTURES names an
/// architecture other than sm_90 / sm_100 (whose 227 KiB hold every kernel).
#ifndef CONDENSE_CUDA_SMALL_SHARED_MEMORY
#define CONDENSE_CUDA_SMALL_SHARED_MEMORY 0
#endif

namespace condense::cuda::attention_detail {

using namespace condense::cuda::detail;

// ---- host side --------------------------------------------------------------------------

/// Checks the arguments both passes share; returns false when there is nothing to compute.
inline bool check_args(const AttentionArgs& a, std::string_view op) {
  CONDENSE_CHECK(a.batch >= 0 && a.heads > 0 && a.kv_heads > 0 && a.heads % a.kv_heads == 0, op,
                 "CUDA attention: kv heads (", a.kv_heads, ") must divide query heads (", a.heads, ")");
  const std::int64_t max_dim = CONDENSE_CUDA_ATTENTION_ALL && a.dtype != DType::Float64 ? 256 : 128;
  CONDENSE_CHECK(a.dim > 0 && a.dim <= max_dim, op, "CUDA attention takes head dims 1..", max_dim, " for ",
                 dtype_name(a.dtype), " in this build (up to 256 with -DCONDENSE_CUDA_ATTENTION_ALL=ON), got ", a.dim);
  CONDENSE_CHECK(a.tq < (std::int64_t{1} << 31) && a.tk < (std::int64_t{1} << 31), op, "CUDA attention: sequence too long (Tq ",
                 a.tq, ", Tk ", a.tk, ")");
  CONDENSE_CHECK(a.bias_heads == 0 || a.bias_heads == 1 || a.bias_heads == a.heads, op, "CUDA attention: bias heads ",
                 a.bias_heads, " for ", a.heads, " heads");
  CONDENSE_CHECK(a.batch * a.heads < (std::int64_t{1} << 31), op, "CUDA attention: batch * heads too large");
  CONDENSE_CHECK((a.tq + block_q - 1) / block_q <= 65535 && (a.tk + dkdv_keys - 1) / dkdv_keys <= 65535, op,
                 "CUDA attention: at most ", 65535 * block_q, " positions per sequence, got Tq ", a.tq, ", Tk ", a.tk);
  return a.batch > 0 && a.tq > 0;
}

/// Calls f(T{}, DMax) for the element type and the smallest compiled head-dim bound >= dim
/// of the portable kernels: float (and, with CONDENSE_CUDA_ATTENTION_ALL, double, and the
/// 16-bit types above head dim 128, where the tensor-core kernels stop).
template <class F>
void dispatch(const AttentionArgs& a, std::string_view op, F&& f) {
#if CONDENSE_CUDA_ATTENTION_ALL
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(a.dtype, op, [&](auto tag) {
#else
  dispatch_dtype<float>(a.dtype, op, [&](auto tag) {
#endif
    using T = decltype(tag);
    if constexpr (attention_mma::is_16bit<T>) {
#if CONDENSE_CUDA_ATTENTION_ALL
      f(tag, std::integral_constant<int, 256>{});  // head dims up to 128 took the tensor cores
#endif
    } else if (a.dim <= 64) {
      f(tag, std::integral_constant<int, 64>{});
    } else if (a.dim <= 128) {
      f(tag, std::integral_constant<int, 128>{});
    } else {
#if CONDENSE_CUDA_ATTENTION_ALL
      if constexpr (!std::is_same_v<T, double>) f(tag, std::integral_constant<int, 256>{});
#endif
    }
  });
}

/// Calls f(T{}, D) for the tensor-core kernels when they take this call (a 16-bit element
/// type built in and head dim <= 128) and returns true; false otherwise.
template <class F>
bool dispatch_mma(const AttentionArgs& a, F&& f) {
  if (a.dim > 128) return false;
  const auto with_dims = [&](auto tag) {
    if (a.dim <= 64) {
      f(tag, std::integral_constant<int, 64>{});
    } else {
      f(tag, std::integral_constant<int, 128>{});
    }
  };
  if (a.dtype == DType::BFloat16) {
    with_dims(bfloat16{});
    return true;
  }
#if CONDENSE_CUDA_ATTENTION_ALL
  if (a.dtype == DType::Float16) {
    with_dims(float16{});
    return true;
  }
#endif
  return false;
}

/// The rows [batch, heads, length, width] of one operand and where they lie (the bias and
/// dbias are rows of width Tk).
struct OperandRows {
  RowLayout layout;
  std::int64_t batch = 0, heads = 0, length = 0, width = 0;
  std::int64_t count() const { return batch * heads * length * width; }
};

/// The number of rows of `rows` (batch * heads * length).
inline std::int64_t row_count(const OperandRows& rows) { return rows.batch * rows.heads * rows.length; }

/// The contiguous layout of `rows`' extents.
inline RowLayout contiguous_layout(const OperandRows& rows) {
  return RowLayout::contiguous(rows.heads, rows.length, rows.width);
}

/// Element (b, h, t, d) of `to` = that of `from` converted (float <-> bfloat16), over the
/// `rows` rows of [batch, heads, length, width] laid out as each layout says: one warp per
/// row, so a row's coordinates cost one split of its index, not one per element.
template <class From, class To>
__global__ void convert_rows(const From* from, RowLayout from_rows, To* to, RowLayout to_rows, std::int64_t heads,
                             std::int64_t length, std::int64_t width, std::int64_t rows) {
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * blockDim.x / 32;
  for (std::int64_t row = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += warps) {
    const std::int64_t t = row % length, h = row / length % heads, b = row / length / heads;
    const From* src = from + from_rows.at(b, h, t);
    To* dst = to + to_rows.at(b, h, t);
    for (std::int64_t d = threadIdx.x % 32; d < width; d += 32) dst[d] = to_element<To>(load(src + d));
  }
}

/// Zeroes the rows of one operand (stream-ordered): one memset when they are contiguous,
/// else a 2-D memset per (batch, head).
inline void zero_rows(void* data, const OperandRows& rows, std::size_t element_bytes, int device, std::string_view op) {
  if (!data || rows.count() == 0) return;
  const cudaStream_t stream = stream_of(device);
  const RowLayout& l = rows.layout;
  if (l == contiguous_layout(rows)) {
    check(cudaMemsetAsync(data, 0, static_cast<std::size_t>(rows.count()) * element_bytes, stream), op, "cudaMemsetAsync");
    return;
  }
  for (std::int64_t b = 0; b < rows.batch; ++b)
    for (std::int64_t h = 0; h < rows.heads; ++h)
      check(cudaMemset2DAsync(static_cast<char*>(data) + l.at(b, h, 0) * static_cast<std::int64_t>(element_bytes),
                              static_cast<std::size_t>(l.token) * element_bytes, 0,
                              static_cast<std::size_t>(rows.width) * element_bytes, static_cast<std::size_t>(rows.length),
                              stream),
            op, "cudaMemset2DAsync");
}

/// Device buffers of one bf16 tensor-core call on float tensors: contiguous bfloat16 copies
/// of the float operands and bfloat16 results converted back; freed (stream-ordered) at
/// the end.
class Bf16Staging {
 public:
  Bf16Staging(int device, std::string_view op) : device_(device), op_(op) {}
  Bf16Staging(const Bf16Staging&) = delete;
  Bf16Staging& operator=(const Bf16Staging&) = delete;
  ~Bf16Staging() {
    for (void* p : buffers_) deallocate(p, device_);
  }
  /// A bfloat16 buffer of n elements, uninitialised.
  bfloat16* empty(std::int64_t n) {
    buffers_.push_back(allocate(static_cast<std::size_t>(n > 0 ? n : 1) * sizeof(bfloat16), device_, op_));
    return static_cast<bfloat16*>(buffers_.back());
  }
  /// A contiguous bfloat16 copy of the float rows at src (nullptr stays nullptr).
  const bfloat16* rounded(const void* src, const OperandRows& rows) {
    if (!src) return nullptr;
    const std::int64_t n = rows.count();
    bfloat16* dst = empty(n);
    if (n > 0)
      detail::launch_kernel(convert_rows<float, bfloat16>, grid_for(row_count(rows) * 32, threads), threads, 0,
                            stream_of(device_), static_cast<const float*>(src), rows.layout, dst, contiguous_layout(rows),
                            rows.heads, rows.length, rows.width, row_count(rows));
    return dst;
  }
  /// Writes the contiguous bfloat16 rows at src to the float rows at dst.
  void widen(void* dst, const OperandRows& rows, const bfloat16* src) const {
    const std::int64_t n = rows.count();
    if (dst && n > 0)
      detail::launch_kernel(convert_rows<bfloat16, float>, grid_for(row_count(rows) * 32, threads), threads, 0,
                            stream_of(device_), src, contiguous_layout(rows), static_cast<float*>(dst), rows.layout,
                            rows.heads, rows.length, rows.width, row_count(rows));
  }

 private:
  int device_;
  std::string_view op_;
  std::vector<void*> buffers_;
};

/// The [B, H, Tq, D] and [B, Hkv, Tk, D] operands of `a` laid out as `layout`, and its
/// bias (or dbias) rows.
inline OperandRows query_rows(const AttentionArgs& a, RowLayout layout) { return {layout, a.batch, a.heads, a.tq, a.dim}; }
inline OperandRows key_rows(const AttentionArgs& a, RowLayout layout) { return {layout, a.batch, a.kv_heads, a.tk, a.dim}; }
inline OperandRows bias_rows(const AttentionArgs& a, std::int64_t heads) {
  return {RowLayout::contiguous(heads, a.tq, a.tk), a.batch, heads, a.tq, a.tk};
}

/// `a` with every layout contiguous (the staged bfloat16 copies).
inline AttentionArgs with_contiguous_layouts(AttentionArgs a) {
  for (RowLayout* l : {&a.q_rows, &a.out_rows, &a.dout_rows, &a.dq_rows, &a.k_rows, &a.v_rows, &a.dk_rows, &a.dv_rows})
    *l = RowLayout::unset();
  a.resolve_layouts();
  return a;
}

/// The two passes, whose tensor-core kernels need different amounts of shared memory.
enum class Pass { Forward, Backward };

/// The shared memory per block of the tensor-core kernels of `pass` for head dims up to D
/// with S copy stages (the backward: the larger of the dq and dk/dv kernels').
template <int D, int S>
constexpr std::size_t mma_pass_smem(Pass pass) {
  namespace tc = attention_mma;
  return pass == Pass::Forward ? tc::forward_smem<D, S> : std::max(tc::dq_smem<D, S>, tc::dkdv_smem<D, S>);
}

/// How many copy stages (attention_mma::TileStages) the tensor-core kernels of `pass` run
/// with for `a`'s head dim on its device: 2 when the two-stage kernels fit its shared memory
/// per block, 1 when only the one-stage ones do (head dim 128, and they are built:
/// CONDENSE_CUDA_SMALL_SHARED_MEMORY), 0 when neither can run there.
inline int mma_stages(const AttentionArgs& a, Pass pass, std::string_view op) {
  const std::size_t limit = max_shared_memory_per_block(a.device, op);
  if (a.dim <= 64) return mma_pass_smem<64, 2>(pass) <= limit ? 2 : 0;
  if (mma_pass_smem<128, 2>(pass) <= limit) return 2;
  return CONDENSE_CUDA_SMALL_SHARED_MEMORY && mma_pass_smem<128, 1>(pass) <= limit ? 1 : 0;
}

/// Calls f(std::integral_constant<int, S>{}) with the stage count of the tensor-core
/// kernels of `pass` for `a` (mma_stages), whose head-dim bound is D; throws naming the op,
/// the head dim and the device's limit when they cannot run there. Only the head-dim-128
/// kernels have one-stage variants (the others take two stages within 99 KiB).
template <int D, class F>
void with_stages(const AttentionArgs& a, Pass pass, std::string_view op, F&& f) {
  const int stages = mma_stages(a, pass, op);
  CONDENSE_CHECK(stages > 0, op, "CUDA attention: the tensor-core kernels for head dim ", a.dim,
                 " need more shared memory per block than device ", a.device, " has (",
                 max_shared_memory_per_block(a.device, op),
                 " bytes); build condense with CONDENSE_CUDA_ARCHITECTURES naming this device's architecture "
                 "(e.g. 86 or 89), which builds their one-stage variants");
#if CONDENSE_CUDA_SMALL_SHARED_MEMORY
  if constexpr (D > 64) {
    if (stages == 1) {
      f(std::integral_constant<int, 1>{});
      return;
    }
  }
#endif
  f(std::integral_constant<int, 2>{});
}

/// Whether a float call of `pass` runs on the bf16 tensor cores
/// (AttentionArgs::bf16_tensor_cores): only where those kernels can run on the device;
/// otherwise the float kernels take it.
inline bool staged_in_bf16(const AttentionArgs& a, Pass pass, std::string_view op) {
  return a.bf16_tensor_cores && a.dtype == DType::Float32 && a.dim <= 128 && mma_stages(a, pass, op) > 0;
}

/// Allows `bytes` of dynamic shared memory for `kernel` (needed above 48 KiB); throws naming
/// `op` when the device has less per block.
template <class Kernel>
void allow_shared_memory(Kernel kernel, std::size_t bytes, int device, std::string_view op) {
  if (bytes <= 48 * 1024) return;
  const std::size_t limit = max_shared_memory_per_block(device, op);
  CONDENSE_CHECK(bytes <= limit, op, "CUDA attention: a kernel needs ", bytes, " bytes of shared memory per block and device ",
                 device, " has ", limit);
  check(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes)),
        op, "cudaFuncSetAttribute (shared memory)");
}

/// The policy the kernels run for `Policy`: shifted by AttentionArgs::query_offset and
/// intersected with AttentionArgs::key_padding.
template <class Policy>
using KernelPolicy = mask::Intersect<mask::QueryOffset<Policy>, mask::KeyPadding>;

template <class Policy>
KernelPolicy<Policy> kernel_policy(const Policy& policy, const AttentionArgs& a) {
  return KernelPolicy<Policy>(mask::QueryOffset<Policy>(policy, a.query_offset), a.key_padding);
}

/// Queues the forward kernels for `a` (tensor cores for 16-bit types up to head dim 128,
/// the portable kernels otherwise).
template <class Kernel>
void launch_forward(const AttentionArgs& a, const Kernel& policy, unsigned long long* stats, std::string_view op) {
  const cudaStream_t stream = stream_of(a.device);
  const bool on_tensor_cores = dispatch_mma(a, [&](auto tag, auto dims) {
    using T = decltype(tag);
    constexpr int D = decltype(dims)::value;
    with_stages<D>(a, Pass::Forward, op, [&](auto stages) {
      constexpr int S = decltype(stages)::value;
      constexpr std::size_t bytes = attention_mma::forward_smem<D, S>;
      allow_shared_memory(attention_mma::flash_forward_mma<T, Kernel, D, S>, bytes, a.device, op);
      detail::launch_kernel(attention_mma::flash_forward_mma<T, Kernel, D, S>, attention_mma::forward_grid(a),
                            attention_mma::threads, bytes, stream, a, policy, stats);
    });
  });
  if (on_tensor_cores) return;
  dispatch(a, op, [&](auto tag, auto dmax) {
    using T = decltype(tag);
    using A = compute_t<T>;
    constexpr int DMax = decltype(dmax)::value;
    constexpr std::size_t bytes = forward_smem<A, DMax>;
    allow_shared_memory(flash_forward<T, Kernel, DMax>, bytes, a.device, op);
    detail::launch_kernel(flash_forward<T, Kernel, DMax>, forward_grid(a), threads, bytes, stream, a, policy, stats);
  });
}

/// Queues the split-key decode kernels (flash_attention_decode.cuh) for `a` when they take
/// this call (AttentionArgs::decode_kernels, at most attention_decode::max_queries queries,
/// no tile counters, an element type and head dim they are built for) and returns true;
/// false otherwise. Built for float and bfloat16 up to head dim 128 (and, with
/// CONDENSE_CUDA_ATTENTION_ALL, float16 and double, and head dims up to 256 but for double).
template <class Kernel>
bool launch_decode(const AttentionArgs& a, const Kernel& policy, std::string_view op) {
  namespace dec = attention_decode;
  if (!a.decode_kernels || a.tile_stats || a.tq > dec::max_queries) return false;
  const auto with_type = [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    const auto run = [&](auto dims) {
      constexpr int DMax = decltype(dims)::value;
      const cudaStream_t stream = stream_of(a.device);
      const dec::DecodePlan plan = dec::decode_plan(a, multiprocessor_count(a.device, op));
      constexpr std::size_t bytes = dec::smem_bytes<T, DMax>;
      if (bytes > max_shared_memory_per_block(a.device, op)) return false;  // the general kernels take it
      allow_shared_memory(dec::decode_forward<T, Kernel, DMax>, bytes, a.device, op);
      if (plan.splits == 1) {
        detail::launch_kernel(dec::decode_forward<T, Kernel, DMax>, dec::decode_grid(a, plan), dec::threads, bytes, stream,
                              a, policy, plan.tiles_per_split, static_cast<A*>(nullptr), static_cast<A*>(nullptr));
        return true;
      }
      // Partial outputs and log-sum-exps of every split, merged by decode_combine.
      const std::int64_t rows = a.batch * a.heads * a.tq;
      A* part_out = static_cast<A*>(allocate(static_cast<std::size_t>(plan.splits * rows * a.dim) * sizeof(A), a.device, op));
      A* part_lse = static_cast<A*>(allocate(static_cast<std::size_t>(plan.splits * rows) * sizeof(A), a.device, op));
      detail::launch_kernel(dec::decode_forward<T, Kernel, DMax>, dec::decode_grid(a, plan), dec::threads, bytes, stream, a,
                            policy, plan.tiles_per_split, part_out, part_lse);
      detail::launch_kernel(dec::decode_combine<T>, capped_blocks((rows + dec::warps - 1) / dec::warps), dec::threads, 0,
                            stream, a, plan.splits, static_cast<const A*>(part_out), static_cast<const A*>(part_lse));
      const cudaError_t launched = cudaGetLastError();
      deallocate(part_out, a.device);  // stream-ordered: the cache reuses them only on this stream
      deallocate(part_lse, a.device);
      check(launched, op, "kernel launch");
      return true;
    };
    if (a.dim <= 128) return run(std::integral_constant<int, 128>{});
#if CONDENSE_CUDA_ATTENTION_ALL
    if constexpr (!std::is_same_v<T, double>) return run(std::integral_constant<int, 256>{});
#endif
    return false;
  };
  switch (a.dtype) {
    case DType::Float32: return with_type(float{});
    case DType::BFloat16: return with_type(bfloat16{});
#if CONDENSE_CUDA_ATTENTION_ALL
    case DType::Float16: return with_type(float16{});
    case DType::Float64: return with_type(double{});
#endif
    default: return false;
  }
}

/// Queues the backward kernels for `a` (dbias already zeroed when wanted).
template <class Kernel>
void launch_backward(const AttentionArgs& a, const Kernel& policy, std::string_view op) {
  const cudaStream_t stream = stream_of(a.device);
  const std::int64_t rows = a.batch * a.heads * a.tq;
  const auto launch_delta = [&](auto tag, auto* delta) {
    using T = decltype(tag);
    detail::launch_kernel(attention_delta<T>, delta_blocks(rows), threads, 0, stream, static_cast<const T*>(a.out),
                          a.out_rows, static_cast<const T*>(a.dout), a.dout_rows, delta, a.heads, a.tq, rows,
                          static_cast<int>(a.dim));
  };
  const bool on_tensor_cores = dispatch_mma(a, [&](auto tag, auto dims) {
    constexpr int D = decltype(dims)::value;
    with_stages<D>(a, Pass::Backward, op, [&](auto stages) {
      using T = decltype(tag);
      constexpr int S = decltype(stages)::value;
      namespace tc = attention_mma;
      float* delta = static_cast<float*>(allocate(static_cast<std::size_t>(rows) * sizeof(float), a.device, op));
      launch_delta(tag, delta);
      // dq (and dbias) from the dk/dv kernel, dq by float atomics, unless the call asks for
      // reproducible bits.
      const bool dq_in_dkdv = !a.deterministic && a.tk > 0;
      float* dq_accum = nullptr;
      cudaError_t zeroed = cudaSuccess;
      if (dq_in_dkdv) {
        const std::size_t bytes = static_cast<std::size_t>(rows) * D * sizeof(float);
        dq_accum = static_cast<float*>(allocate(bytes, a.device, op));
        zeroed = cudaMemsetAsync(dq_accum, 0, bytes, stream);
      } else {
        allow_shared_memory(tc::flash_backward_dq_mma<T, Kernel, D, S>, tc::dq_smem<D, S>, a.device, op);
        detail::launch_kernel(tc::flash_backward_dq_mma<T, Kernel, D, S>, tc::dq_grid(a), tc::threads, tc::dq_smem<D, S>,
                              stream, a, policy, delta);
      }
      if (a.tk > 0) {
        allow_shared_memory(tc::flash_backward_dkdv_mma<T, Kernel, D, S>, tc::dkdv_smem<D, S>, a.device, op);
        detail::launch_kernel(tc::flash_backward_dkdv_mma<T, Kernel, D, S>, tc::dkdv_grid(a), tc::dkdv_threads,
                              tc::dkdv_smem<D, S>, stream, a, policy, delta, dq_accum);
      }
      if (dq_in_dkdv)
        detail::launch_kernel(tc::dq_from_accumulator<T, D>, capped_blocks(rows), tc::threads, 0, stream, dq_accum,
                              static_cast<T*>(a.dq), a.dq_rows, a.heads, a.tq, rows, static_cast<int>(a.dim),
                              static_cast<float>(a.scale));
      const cudaError_t launched = cudaGetLastError();
      deallocate(delta, a.device);  // stream-ordered: the cache reuses it only on this stream
      if (dq_accum) deallocate(dq_accum, a.device);
      check(zeroed, op, "cudaMemsetAsync");
      check(launched, op, "kernel launch");
    });
  });
  if (on_tensor_cores) return;
  dispatch(a, op, [&](auto tag, auto dmax) {
    using T = decltype(tag);
    using A = compute_t<T>;
    constexpr int DMax = decltype(dmax)::value;
    A* delta = static_cast<A*>(allocate(static_cast<std::size_t>(rows) * sizeof(A), a.device, op));
    launch_delta(tag, delta);
    allow_shared_memory(flash_backward_dq<T, Kernel, DMax>, dq_smem<A, DMax>, a.device, op);
    detail::launch_kernel(flash_backward_dq<T, Kernel, DMax>, dq_grid(a), threads, dq_smem<A, DMax>, stream, a, policy,
                          delta);
    if (a.tk > 0) {
      allow_shared_memory(flash_backward_dkdv<T, Kernel, DMax>, dkdv_smem<A, DMax>, a.device, op);
      detail::launch_kernel(flash_backward_dkdv<T, Kernel, DMax>, dkdv_grid(a), threads, dkdv_smem<A, DMax>, stream, a,
                            policy, delta);
    }
    const cudaError_t launched = cudaGetLastError();
    deallocate(delta, a.device);
    check(launched, op, "kernel launch");
  });
}

}  // namespace condense::cuda::attention_detail

namespace condense::cuda {

template <class Policy>
void attention_forward(const AttentionArgs& args, const Policy& inner, std::string_view op) {
  static_assert(check_mask_policy<Policy>(), "see the message above");
  using namespace attention_detail;
  AttentionArgs a = args;
  a.resolve_layouts();
  if (!check_args(a, op)) return;
  // The kernels see the policy shifted by the query offset and intersected with the key
  // padding (no-ops unless attention() took a QueryOffset or a KeyPadding out of the policy).
  using Kernel = KernelPolicy<Policy>;
  const Kernel policy = kernel_policy(inner, a);
  use_device(a.device, op);
  const cudaStream_t stream = stream_of(a.device);
  unsigned long long* stats = nullptr;
  if (a.tile_stats) {
    stats = static_cast<unsigned long long*>(allocate(3 * sizeof(unsigned long long), a.device, op));
    check(cudaMemsetAsync(stats, 0, 3 * sizeof(unsigned long long), stream), op, "cudaMemsetAsync");
  }
  if (launch_decode(a, policy, op)) {
    // a few queries per sequence: the split-key kernels (on float tensors directly)
  } else if (staged_in_bf16(a, Pass::Forward, op)) {
    // float tensors on the bf16 tensor cores: bf16 copies in, the output widened back.
    Bf16Staging staging(a.device, op);
    AttentionArgs c = with_contiguous_layouts(a);
    c.dtype = DType::BFloat16;
    c.q = staging.rounded(a.q, query_rows(a, a.q_rows));
    c.k = staging.rounded(a.k, key_rows(a, a.k_rows));
    c.v = staging.rounded(a.v, key_rows(a, a.v_rows));
    c.bias = staging.rounded(a.bias, bias_rows(a, a.bias_heads));
    bfloat16* out = staging.empty(query_rows(a, a.out_rows).count());
    c.out = out;
    launch_forward(c, policy, stats, op);
    staging.widen(a.out, query_rows(a, a.out_rows), out);
  } else {
    launch_forward(a, policy, stats, op);
  }
  check_launch(op);
  if (stats) {
    unsigned long long counts[3] = {0, 0, 0};
    const cudaError_t status = cudaMemcpyAsync(counts, stats, sizeof counts, cudaMemcpyDeviceToHost, stream);
    const cudaError_t synced = status == cudaSuccess ? cudaStreamSynchronize(stream) : status;
    deallocate(stats, a.device);
    check(synced, op, "copying the tile counters");
    for (int i = 0; i < 3; ++i) a.tile_stats[i] = static_cast<std::int64_t>(counts[i]);
  }
}

template <class Policy>
void attention_backward(const AttentionArgs& args, const Policy& inner, std::string_view op) {
  static_assert(check_mask_policy<Policy>(), "see the message above");
  using namespace attention_detail;
  using Kernel = KernelPolicy<Policy>;
  AttentionArgs a = args;
  a.resolve_layouts();
  const Kernel policy = kernel_policy(inner, a);
  if (!check_args(a, op)) {
    // No queries: the key and value gradients are zero.
    if (a.batch > 0) {
      use_device(a.device, op);
      zero_rows(a.dk, key_rows(a, a.dk_rows), dtype_size(a.dtype), a.device, op);
      zero_rows(a.dv, key_rows(a, a.dv_rows), dtype_size(a.dtype), a.device, op);
    }
    return;
  }
  use_device(a.device, op);
  const cudaStream_t stream = stream_of(a.device);
  const std::int64_t rows = a.batch * a.heads * a.tq;
  if (a.dbias)
    check(cudaMemsetAsync(a.dbias, 0, static_cast<std::size_t>(rows * a.tk) * dtype_size(a.dtype), stream), op,
          "cudaMemsetAsync");
  if (!staged_in_bf16(a, Pass::Backward, op)) {
    launch_backward(a, policy, op);
    return;
  }
  // float tensors on the bf16 tensor cores: bf16 copies in, the gradients widened back.
  Bf16Staging staging(a.device, op);
  const std::int64_t q_elems = rows * a.dim, kv_elems = a.batch * a.kv_heads * a.tk * a.dim;
  AttentionArgs c = with_contiguous_layouts(a);
  c.dtype = DType::BFloat16;
  c.q = staging.rounded(a.q, query_rows(a, a.q_rows));
  c.k = staging.rounded(a.k, key_rows(a, a.k_rows));
  c.v = staging.rounded(a.v, key_rows(a, a.v_rows));
  c.bias = staging.rounded(a.bias, bias_rows(a, a.bias_heads));
  c.out = const_cast<bfloat16*>(staging.rounded(a.out, query_rows(a, a.out_rows)));
  c.dout = staging.rounded(a.dout, query_rows(a, a.dout_rows));
  bfloat16* dq = staging.empty(q_elems);
  bfloat16* dk = staging.empty(kv_elems);
  bfloat16* dv = staging.empty(kv_elems);
  bfloat16* dbias = a.dbias ? staging.empty(rows * a.tk) : nullptr;
  if (dbias) check(cudaMemsetAsync(dbias, 0, static_cast<std::size_t>(rows * a.tk) * sizeof(bfloat16), stream), op, "cudaMemsetAsync");
  c.dq = dq;
  c.dk = dk;
  c.dv = dv;
  c.dbias = dbias;
  launch_backward(c, policy, op);
  staging.widen(a.dq, query_rows(a, a.dq_rows), dq);
  staging.widen(a.dk, key_rows(a, a.dk_rows), dk);
  staging.widen(a.dv, key_rows(a, a.dv_rows), dv);
  if (dbias) staging.widen(a.dbias, bias_rows(a, a.heads), dbias);
  check_launch(op);
}

}  // namespace condense::cuda

/// Builds condense::cuda::attention_forward/backward for a mask policy type (commas allowed,
/// e.g. condense::mask::Intersect<A, B>). Use once per policy, in one .cu file that includes
/// this header.
#define CONDENSE_CUDA_INSTANTIATE_ATTENTION(...)                                                              \
  template void condense::cuda::attention_forward<__VA_ARGS__>(const condense::cuda::AttentionArgs&,         \
                                                               const __VA_ARGS__&, std::string_view);         \
  template void condense::cuda::attention_backward<__VA_ARGS__>(const condense::cuda::AttentionArgs&,        \
                                                                const __VA_ARGS__&, std::string_view)
