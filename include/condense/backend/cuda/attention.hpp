// The CUDA attention launchers, templated on the mask policy: plain C++ declarations (no
// CUDA header). Their definitions are templates in kernels/attention/flash_attention.cuh;
// condense::cuda instantiates them for the built-in policies (kernels/instantiate/), and a
// user policy gets its own by including that .cuh in a .cu file of the user's project and
// writing CONDENSE_CUDA_INSTANTIATE_ATTENTION(MyPolicy) there, plus
// CONDENSE_CUDA_DECLARE_ATTENTION(MyPolicy) next to the policy (see
// examples/custom_policy_cuda/). A policy's per-row arrays must live on the device.
#pragma once

#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/backend/row_layout.hpp"
#include "condense/core/dtype.hpp"
#include "condense/mask/policies.hpp"

namespace condense::cuda {

/// One attention call on device tensors. q, out, dout, dq: [B, H, Tq, D]; k, v, dk, dv:
/// [B, Hkv, Tk, D], each laid out as its RowLayout (AttentionLayouts) says (any strides but
/// a contiguous head dim; an unset layout means contiguous; the written ones must not
/// overlap themselves);
/// bias, dbias: contiguous [B, bias_heads, Tq, Tk] (bias_heads 0: none; dbias always
/// [B, H, Tq, Tk]); lse: contiguous [B, H, Tq] in the compute type (float, or double for
/// double tensors), natural log.
struct AttentionArgs : AttentionLayouts {
  DType dtype = DType::Float32;  ///< of q, k, v, bias, out and the gradients
  int device = 0;
  std::int64_t batch = 0, heads = 0, kv_heads = 0, tq = 0, tk = 0, dim = 0, bias_heads = 0;
  double scale = 1.0;
  bool skip_tiles = true;  ///< false: every tile is treated as Partial (debug / tests)
  /// Float calls with head dim <= 128: round q, k, v, the bias (and out, dout) to bfloat16
  /// and run the tensor-core kernels, widening the results back to float (what attention()
  /// sets from cuda::allow_bf16_attention()). Ignored for other element types.
  bool bf16_tensor_cores = false;
  /// Backward: compute dq in its own kernel, bitwise reproducible (what attention() sets
  /// from cuda::deterministic_attention()); false: the tensor-core kernels sum dq in float
  /// with atomics inside the dk/dv kernel. Ignored by the portable kernels (always
  /// deterministic).
  bool deterministic = false;
  /// Forward with at most 16 queries per sequence (decoding steps): the split-key kernels
  /// (keys divided across blocks, every query head of a kv head in one block, arithmetic in
  /// the compute type, so a float call reads float even with bf16_tensor_cores); false:
  /// the general kernels. Calls asking for tile_stats take the general kernels.
  bool decode_kernels = true;
  /// Query i is position query_offset + i of the policy (how attention() runs a
  /// mask::QueryOffset<P>: with P's kernels, shifted).
  int query_offset = 0;
  /// Keys the policy is intersected with (how attention() runs P & mask::KeyPadding with
  /// P's kernels); per-row lengths must be device memory. Default: every key.
  mask::KeyPadding key_padding = mask::KeyPadding(std::numeric_limits<int>::max());
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* bias = nullptr;
  void* out = nullptr;
  void* lse = nullptr;
  // backward only
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  void* dbias = nullptr;  ///< nullptr: not wanted
  /// Forward only, optional: host array of 3 counters (Empty, Partial, Full tiles over all
  /// (batch, head, query tile)); filling it waits for the kernel.
  std::int64_t* tile_stats = nullptr;

  /// Every unset layout made contiguous (what the launchers run on).
  void resolve_layouts() { AttentionLayouts::resolve_layouts(heads, kv_heads, tq, tk, dim); }
};

#if CONDENSE_WITH_CUDA
/// Forward: out and lse. Element types float (portable kernels) and bfloat16 (tensor cores)
/// with head dims up to 128; float16 (tensor cores), double and head dims up to 256 too
/// when condense::cuda is configured with CONDENSE_CUDA_ATTENTION_ALL=ON (other
/// combinations throw naming the op). Rows with no allowed key give zeros and lse = -inf.
template <class Policy>
void attention_forward(const AttentionArgs& args, const Policy& policy, std::string_view op);
/// Backward from out, lse and dout: dq, dk, dv (and dbias when non-null).
template <class Policy>
void attention_backward(const AttentionArgs& args, const Policy& policy, std::string_view op);
#else
template <class Policy>
void attention_forward(const AttentionArgs&, const Policy&, std::string_view op) {
  throw_no_cuda(op);
}
template <class Policy>
void attention_backward(const AttentionArgs&, const Policy&, std::string_view op) {
  throw_no_cuda(op);
}
#endif

/// True for the policies whose CUDA attention kernels are built: the built-in ones below,
/// and a user policy once CONDENSE_CUDA_DECLARE_ATTENTION(Policy) is seen. attention() on
/// CUDA tensors with any other policy throws at run time instead of failing to link.
template <class Policy>
struct attention_kernels_built : std::false_type {};

}  // namespace condense::cuda

/// Declares that the CUDA attention kernels of a policy type are built somewhere in the
/// program (by CONDENSE_CUDA_INSTANTIATE_ATTENTION in a .cu file). Write it at global scope,
/// after the policy's definition, in a header the code calling attention() includes.
#define CONDENSE_CUDA_DECLARE_ATTENTION(...) \
  template <>                                \
  struct condense::cuda::attention_kernels_built<__VA_ARGS__> : std::true_type {}

// The built-in policies (kernels/instantiate/).
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::None);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::Causal);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::SlidingWindow);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::KeyPadding);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::Pruned);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::ChunkedLocal);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::DigestCross);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::Gist);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::GistNegativeControl);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::GistBidirectional);
CONDENSE_CUDA_DECLARE_ATTENTION(condense::mask::GistCross);
