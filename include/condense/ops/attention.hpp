// Fused attention templated on a mask policy, on the CPU or (for CUDA tensors) through the
// flash kernels of condense::cuda: attention(q, k, v, policy, options, bias) with
// grouped-query heads, an optional differentiable additive score bias, and the
// log-sum-exp saved for a backward pass that recomputes scores tile by tile. Also
// attention_reference, the plain composition of primitive ops used as the test oracle.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

#include "condense/autograd/node.hpp"
#include "condense/backend/cuda/attention.hpp"
#include "condense/backend/cpu/attention.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/mask/combinators.hpp"
#include "condense/mask/materialize.hpp"
#include "condense/mask/policy.hpp"
#include "condense/ops/compare.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/matmul.hpp"
#include "condense/ops/softmax.hpp"
#include "condense/ops/views.hpp"

namespace condense {

/// Options of attention().
struct AttentionOptions {
  /// Multiplies q.k; default 1/sqrt(head dim).
  std::optional<double> scale;
  /// Query and key tile sizes of the flash loop.
  int tile_q = 64;
  int tile_k = 64;
  /// Debug switch: false treats every tile as Partial (evaluates the predicate everywhere).
  bool skip_tiles = true;
  /// CPU forward: with at most this many queries per (batch, head) (a decode step, a short
  /// chunk after a cache) the scores are matrix-vector products over the keys as they lie;
  /// with more, the keys are transposed once per call into tiles for the tile products
  /// (which a few queries cannot repay). 0: always transposed.
  int in_place_keys_max_queries = 16;
  /// CPU forward with those few queries and grouped heads (GQA): true runs the queries of
  /// every query head of a kv head in one pass over its keys (each key and value row read
  /// once for the group) when there are at least as many (batch, kv head) pairs as threads;
  /// false runs each query head on its own.
  bool group_query_heads = true;
  /// CUDA only: count the tiles by kind into AttentionResult::tiles. Off by default because
  /// reading the counters back waits for the kernel (the CPU path always counts).
  bool count_cuda_tiles = false;
};

/// What attention_forward returns besides the output.
template <DifferentiableElement T>
struct AttentionResult {
  Tensor<T> out;  ///< [B, H, Tq, D]
  /// [B, H, Tq]: log-sum-exp of each row's allowed scores (-inf if none), in the compute
  /// type (float for 16-bit q, k, v).
  Tensor<compute_type_t<T>> lse;
  cpu::AttentionTileStats tiles;  ///< tiles by kind over all (batch, head, query tile)
};

namespace detail {

template <DifferentiableElement T>
cpu::AttentionGeometry attention_geometry(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                                          const Tensor<T>& bias, const AttentionOptions& options) {
  constexpr const char* op = "attention";
  CONDENSE_CHECK(q.defined() && k.defined() && v.defined(), op, "q, k and v must be defined");
  CONDENSE_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, "q, k, v must be [B, H, T, D], got q ", q.shape(),
                 ", k ", k.shape(), ", v ", v.shape());
  CONDENSE_CHECK(k.shape() == v.shape(), op, "k and v shapes differ: ", k.shape(), " vs ", v.shape());
  CONDENSE_CHECK(q.size(0) == k.size(0), op, "batch sizes differ: q ", q.shape(), ", k ", k.shape());
  CONDENSE_CHECK(q.size(3) == k.size(3), op, "head dims differ: q ", q.shape(), ", k ", k.shape());
  CONDENSE_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, op, "kv heads (", k.size(1),
                 ") must divide query heads (", q.size(1), "): q ", q.shape(), ", k ", k.shape());
  CONDENSE_CHECK(options.tile_q > 0 && options.tile_k > 0, op, "tile sizes must be positive, got ", options.tile_q,
                 "x", options.tile_k);
  check_same_device(op, q, k);
  check_same_device(op, q, v);
  cpu::AttentionGeometry g;
  g.batch = q.size(0);
  g.heads = q.size(1);
  g.kv_heads = k.size(1);
  g.tq = q.size(2);
  g.tk = k.size(2);
  g.dim = q.size(3);
  CONDENSE_CHECK(g.tq < (std::int64_t{1} << 31) && g.tk < (std::int64_t{1} << 31), op, "sequence too long: q ", q.shape(),
                 ", k ", k.shape());
  if (bias.defined()) {
    check_same_device(op, q, bias);
    CONDENSE_CHECK(bias.dim() == 4 && bias.size(0) == g.batch && (bias.size(1) == 1 || bias.size(1) == g.heads) &&
                       bias.size(2) == g.tq && bias.size(3) == g.tk,
                   op, "bias must be [B, 1 or H, Tq, Tk] = [", g.batch, ", 1 or ", g.heads, ", ", g.tq, ", ", g.tk,
                   "], got ", bias.shape());
    g.bias_heads = bias.size(1);
  }
  g.scale = options.scale.value_or(g.dim > 0 ? 1.0 / std::sqrt(static_cast<double>(g.dim)) : 1.0);
  g.tile_q = options.tile_q;
  g.tile_k = options.tile_k;
  g.skip_tiles = options.skip_tiles;
  g.in_place_keys_max_queries = options.in_place_keys_max_queries;
  g.group_query_heads = options.group_query_heads;
  g.resolve_layouts();
  return g;
}

/// q, k, v or an output gradient as the attention kernels (CPU and CUDA) read it: the
/// tensor itself (detached) when its head dim is contiguous, whatever its other strides
/// (head-split views of a projection, a KV cache's prefix), else a contiguous copy.
// t: [B, heads, T, D]
template <DifferentiableElement T>
Tensor<T> attention_rows(const Tensor<T>& t) {
  const Tensor<T> d = t.detach();
  return d.size(3) <= 1 || d.strides()[3] == 1 ? d : d.contiguous();
}

/// The RowLayout of a [B, heads, T, D] tensor whose head dim is contiguous.
template <DifferentiableElement T>
RowLayout row_layout(const Tensor<T>& t) {
  return {t.strides()[0], t.strides()[1], t.strides()[2]};
}

/// A new dense [B, heads, T, D] tensor (uninitialised, head dim contiguous) whose first
/// three dims lie in memory in the order of `like`'s strides, largest first: contiguous
/// for a contiguous `like`, [B, T, heads, D] in memory for heads split off a projection's
/// output, so that merging the heads back is a view.
// like: [B, heads, T, D] -> [B, heads, T, D]
template <DifferentiableElement T>
Tensor<T> empty_in_stride_order(const Tensor<T>& like) {
  std::int64_t order[3] = {0, 1, 2};
  std::stable_sort(order, order + 3, [&](std::int64_t a, std::int64_t b) { return like.strides()[a] > like.strides()[b]; });
  Strides strides{std::vector<std::int64_t>(4)};
  std::int64_t step = like.size(3);
  strides[3] = 1;
  for (int i = 2; i >= 0; --i) {
    strides[order[i]] = step;
    step *= like.size(order[i]);
  }
  const Tensor<T> flat = Tensor<T>::empty(Shape{std::vector<std::int64_t>{step}}, like.device());
  return restride(flat, like.shape(), std::move(strides), flat.offset());
}

/// True on a thread while attention_forward runs float16 inputs on the float kernels: their
/// widened values must not be staged through bfloat16 (cuda::allow_bf16_attention() is a
/// float model's opt-in, and bfloat16 would drop 3 of float16's significant bits).
inline thread_local bool float16_on_float_attention = false;

/// Sets float16_on_float_attention for its lifetime (restoring the previous value).
class Float16OnFloatAttentionScope {
 public:
  Float16OnFloatAttentionScope() : previous_(float16_on_float_attention) { float16_on_float_attention = true; }
  ~Float16OnFloatAttentionScope() { float16_on_float_attention = previous_; }
  Float16OnFloatAttentionScope(const Float16OnFloatAttentionScope&) = delete;
  Float16OnFloatAttentionScope& operator=(const Float16OnFloatAttentionScope&) = delete;

 private:
  bool previous_;
};

/// The launcher arguments of one CUDA attention call: q, k, v as attention_rows hands them
/// over (their RowLayouts set), the bias contiguous.
template <DifferentiableElement T>
cuda::AttentionArgs cuda_attention_args(const cpu::AttentionGeometry& g, const Tensor<T>& q, const Tensor<T>& k,
                                        const Tensor<T>& v, const Tensor<T>& bias) {
  cuda::AttentionArgs a;
  a.dtype = dtype_of<T>;
  a.device = q.device().index;
  a.batch = g.batch;
  a.heads = g.heads;
  a.kv_heads = g.kv_heads;
  a.tq = g.tq;
  a.tk = g.tk;
  a.dim = g.dim;
  a.bias_heads = g.bias_heads;
  a.scale = g.scale;
  a.skip_tiles = g.skip_tiles;
  a.bf16_tensor_cores = std::is_same_v<T, float> && cuda::allow_bf16_attention() && !float16_on_float_attention;
  a.deterministic = cuda::deterministic_attention();
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.bias = bias.defined() ? bias.data() : nullptr;
  a.q_rows = row_layout(q);
  a.k_rows = row_layout(k);
  a.v_rows = row_layout(v);
  return a;
}

/// A policy attention() cannot run on CUDA (no kernels for it or for what it wraps).
struct NoCudaAttentionPlan {};

/// How attention() runs a policy on CUDA: the policy whose kernels are built, plus the query
/// offset and key padding the kernels apply themselves (AttentionArgs), taken out of the
/// combinators around it: QueryOffset<P>, P & KeyPadding, KeyPadding & P, and nestings.
template <class Base>
struct CudaAttentionPlan {
  Base base;
  int query_offset = 0;
  mask::KeyPadding padding = mask::KeyPadding(std::numeric_limits<int>::max());
  bool padded = false;
};

template <class P>
constexpr bool cuda_kernels_built = cuda::attention_kernels_built<P>::value;

// The overloads call each other for nested combinators: all are declared first.
template <class P>
auto cuda_attention_plan(const P& policy);
template <class P>
auto cuda_attention_plan(const mask::QueryOffset<P>& policy);
template <class A, class B>
auto cuda_attention_plan(const mask::Intersect<A, B>& policy);

template <class P>
auto cuda_attention_plan(const P& policy) {
  if constexpr (cuda_kernels_built<P>) return CudaAttentionPlan<P>{policy};
  else return NoCudaAttentionPlan{};
}

template <class P>
auto cuda_attention_plan(const mask::QueryOffset<P>& policy) {
  if constexpr (cuda_kernels_built<mask::QueryOffset<P>>) {
    return CudaAttentionPlan<mask::QueryOffset<P>>{policy};
  } else {
    auto plan = cuda_attention_plan(policy.inner);
    if constexpr (!std::is_same_v<decltype(plan), NoCudaAttentionPlan>) plan.query_offset += policy.offset;
    return plan;
  }
}

/// The plan of `other` intersected with the key padding `padding` (one padding at most).
template <class P>
auto cuda_attention_plan_padded(const P& other, const mask::KeyPadding& padding) {
  auto plan = cuda_attention_plan(other);
  if constexpr (std::is_same_v<decltype(plan), NoCudaAttentionPlan>) {
    return plan;
  } else {
    CONDENSE_CHECK(!plan.padded, "attention", "CUDA attention takes one KeyPadding in an intersection, got two");
    plan.padding = padding;
    plan.padded = true;
    return plan;
  }
}

template <class A, class B>
auto cuda_attention_plan(const mask::Intersect<A, B>& policy) {
  if constexpr (cuda_kernels_built<mask::Intersect<A, B>>) {
    return CudaAttentionPlan<mask::Intersect<A, B>>{policy};
  } else if constexpr (std::is_same_v<B, mask::KeyPadding>) {
    return cuda_attention_plan_padded(policy.first, policy.second);
  } else if constexpr (std::is_same_v<A, mask::KeyPadding>) {
    return cuda_attention_plan_padded(policy.second, policy.first);
  } else {
    return NoCudaAttentionPlan{};
  }
}

/// attention_forward on CUDA tensors: the flash kernels of kernels/attention/ for `Policy`
/// with queries shifted by `query_offset` (the policy's per-row arrays must be device
/// memory). Same contract as the CPU path.
template <DifferentiableElement T, class Policy>
AttentionResult<T> cuda_attention_forward(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Policy& policy,
                                          int query_offset, const mask::KeyPadding& padding, const Tensor<T>& bias,
                                          const cpu::AttentionGeometry& g, bool count_tiles) {
  // q, k, v read in place (attention_rows); out laid out like q (empty_in_stride_order).
  const Tensor<T> qc = attention_rows(q), kc = attention_rows(k), vc = attention_rows(v);
  const Tensor<T> bc = bias.defined() ? bias.detach().contiguous() : Tensor<T>();
  AttentionResult<T> r;
  r.out = empty_in_stride_order(qc);
  r.lse = Tensor<compute_type_t<T>>::empty({g.batch, g.heads, g.tq}, q.device());
  cuda::AttentionArgs a = cuda_attention_args(g, qc, kc, vc, bc);
  a.query_offset = query_offset;
  a.key_padding = padding;
  a.out = r.out.data();
  a.out_rows = row_layout(r.out);
  a.lse = r.lse.data();
  std::int64_t counts[3] = {0, 0, 0};
  if (count_tiles) a.tile_stats = counts;
  cuda::attention_forward(a, policy, "attention");
  r.tiles = {counts[0], counts[1], counts[2]};
  record<T>("attention", r.out, {q, k, v, bias},
            [qc, kc, vc, bc, out = r.out.detach(), lse = r.lse, g, policy, query_offset, padding,
             bf16 = a.bf16_tensor_cores](const Tensor<T>& grad, GradSink& s) {
              cuda::AttentionArgs b = cuda_attention_args(g, qc, kc, vc, bc);
              b.bf16_tensor_cores = bf16;
              b.query_offset = query_offset;
              b.key_padding = padding;
              // The gradients are contiguous: that is how autograd passes them on.
              const Tensor<T> dout = attention_rows(grad);
              const Tensor<T> dq = Tensor<T>::empty(qc.shape(), qc.device());
              const Tensor<T> dk = Tensor<T>::empty(kc.shape(), kc.device());
              const Tensor<T> dv = Tensor<T>::empty(vc.shape(), vc.device());
              Tensor<T> dbias;
              if (s.wants(3)) dbias = Tensor<T>::empty({g.batch, g.heads, g.tq, g.tk}, qc.device());
              b.out = out.data();
              b.out_rows = row_layout(out);
              b.lse = lse.data();
              b.dout = dout.data();
              b.dout_rows = row_layout(dout);
              b.dq = dq.data();
              b.dk = dk.data();
              b.dv = dv.data();
              b.dbias = dbias.defined() ? dbias.data() : nullptr;
              cuda::attention_backward(b, policy, "attention backward");
              s.add(0, dq);
              s.add(1, dk);
              s.add(2, dv);
              if (dbias.defined()) s.add(3, sum_to(dbias, bc.shape()));
            });
  return r;
}

/// attention_forward on CPU tensors (float or double): the flash loop of backend/cpu/attention.hpp.
template <FloatingElement T, class Policy>
AttentionResult<T> cpu_attention_forward(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Policy& policy,
                                         const Tensor<T>& bias, const cpu::AttentionGeometry& g) {
  // q, k, v read in place (attention_rows); out laid out like q (empty_in_stride_order).
  const Tensor<T> qc = attention_rows(q), kc = attention_rows(k), vc = attention_rows(v);
  const Tensor<T> bc = bias.defined() ? bias.detach().contiguous() : Tensor<T>();
  AttentionResult<T> r;
  r.out = empty_in_stride_order(qc);
  r.lse = Tensor<T>::empty({g.batch, g.heads, g.tq}, q.device());
  cpu::AttentionGeometry strided = g;
  strided.q_rows = row_layout(qc);
  strided.k_rows = row_layout(kc);
  strided.v_rows = row_layout(vc);
  strided.out_rows = row_layout(r.out);
  r.tiles = cpu::attention_forward(qc.data(), kc.data(), vc.data(), bc.defined() ? bc.data() : nullptr, r.out.data(),
                                   r.lse.data(), strided, policy);
  record<T>("attention", r.out, {q, k, v, bias},
            [qc, kc, vc, bc, out = r.out.detach(), lse = r.lse, g = strided, policy](const Tensor<T>& grad,
                                                                                     GradSink& s) {
              // The gradients are contiguous: that is how autograd passes them on.
              const Tensor<T> dout = attention_rows(grad);
              Tensor<T> dq = Tensor<T>::empty(qc.shape(), qc.device());
              Tensor<T> dk = Tensor<T>::empty(kc.shape(), kc.device());
              Tensor<T> dv = Tensor<T>::empty(vc.shape(), vc.device());
              Tensor<T> dbias;
              if (s.wants(3)) dbias = Tensor<T>::empty({g.batch, g.heads, g.tq, g.tk}, qc.device());
              cpu::AttentionGeometry layouts = g;
              layouts.dout_rows = row_layout(dout);
              cpu::attention_backward(qc.data(), kc.data(), vc.data(), bc.defined() ? bc.data() : nullptr, out.data(),
                                      lse.data(), dout.data(), dq.data(), dk.data(), dv.data(),
                                      dbias.defined() ? dbias.data() : nullptr, layouts, policy);
              s.add(0, dq);
              s.add(1, dk);
              s.add(2, dv);
              if (dbias.defined()) s.add(3, sum_to(dbias, bc.shape()));
            });
  return r;
}

/// Whether the CUDA kernels of this build take 16-bit q, k, v of element type T and head
/// dim `dim` directly: bfloat16 up to head dim 128 (tensor cores) always; float16 and head
/// dims up to 256 with CONDENSE_CUDA_ATTENTION_ALL. Other 16-bit calls run on the float kernels.
template <HalfElement T>
constexpr bool cuda_attention_takes_half(std::int64_t dim) {
#if defined(CONDENSE_CUDA_ATTENTION_ALL) && CONDENSE_CUDA_ATTENTION_ALL
  return dim <= 256;
#else
  return std::is_same_v<T, bfloat16> && dim <= 128;
#endif
}

}  // namespace detail

/// Fused attention returning the output, the saved log-sum-exp and tile statistics.
/// The policy's per-row arrays (spans, lengths, keep bitmaps) must stay alive until the
/// backward pass has run. Rows with no allowed key give zeros (and zero gradients).
/// 16-bit q, k, v run on the CUDA tensor-core kernels directly (fp32 softmax statistics
/// and accumulation, one rounding of the output and of each gradient); on the CPU, and for
/// the 16-bit calls this CUDA build has no kernels for, they run the float attention on
/// widened copies and round its output once.
// q: [B, H, Tq, D], k/v: [B, Hkv, Tk, D] (Hkv divides H), bias: [B, 1|H, Tq, Tk] -> out [B, H, Tq, D], lse [B, H, Tq]
template <DifferentiableElement T, class Policy>
AttentionResult<T> attention_forward(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Policy& policy,
                                     const AttentionOptions& options = {}, const Tensor<T>& bias = Tensor<T>()) {
  if constexpr (!check_mask_policy<Policy>()) {
    return {};
  } else {
  const cpu::AttentionGeometry g = detail::attention_geometry(q, k, v, bias, options);
  validate_mask(policy, "attention", g.batch, g.tq, g.tk);
  if constexpr (HalfElement<T>) {
    if (!q.device().is_cuda() || !detail::cuda_attention_takes_half<T>(g.dim)) {
      using detail::widen_to_float;
      // bfloat16 values survive bfloat16 staging exactly; float16 ones would not.
      std::optional<detail::Float16OnFloatAttentionScope> keep_float;
      if constexpr (std::is_same_v<T, float16>) keep_float.emplace();
      AttentionResult<float> wide = attention_forward(widen_to_float(q), widen_to_float(k), widen_to_float(v), policy,
                                                      options, widen_to_float(bias));
      return {cast<T>(wide.out), wide.lse, wide.tiles};
    }
  }
  if (q.device().is_cuda()) {
    const auto plan = detail::cuda_attention_plan(policy);
    if constexpr (!std::is_same_v<std::decay_t<decltype(plan)>, detail::NoCudaAttentionPlan>) {
      return detail::cuda_attention_forward(q, k, v, plan.base, plan.query_offset, plan.padding, bias, g,
                                            options.count_cuda_tiles);
    } else {
      fail("attention", "no CUDA attention kernels are built for this mask policy: instantiate them with "
                        "CONDENSE_CUDA_INSTANTIATE_ATTENTION(Policy) in a .cu file and declare them with "
                        "CONDENSE_CUDA_DECLARE_ATTENTION(Policy) (docs/cuda.md); q ", q.describe());
    }
  }
  if constexpr (FloatingElement<T>) {
    return detail::cpu_attention_forward(q, k, v, policy, bias, g);
  } else {
    return {};  // 16-bit CPU calls returned above
  }
  }
}

/// Fused attention: softmax(scale * q k^T + bias, masked by `policy`) v, tile by tile
/// (float, double and the 16-bit floats; see attention_forward).
// q: [B, H, Tq, D], k/v: [B, Hkv, Tk, D] (Hkv divides H), bias: [B, 1|H, Tq, Tk] -> [B, H, Tq, D]
template <DifferentiableElement T, class Policy>
Tensor<T> attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Policy& policy,
                    const AttentionOptions& options = {}, const Tensor<T>& bias = Tensor<T>()) {
  return attention_forward(q, k, v, policy, options, bias).out;
}

/// The oracle: the same attention as a composition of primitive ops (matmul, masked_fill
/// with the materialised mask, softmax, matmul). Memory O(B*H*Tq*Tk); for tests and checks.
/// 16-bit tensors get the float oracle on their widened values, rounded once.
// q: [B, H, Tq, D], k/v: [B, Hkv, Tk, D], bias: [B, 1|H, Tq, Tk] -> [B, H, Tq, D]
template <DifferentiableElement T, class Policy>
Tensor<T> attention_reference(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Policy& policy,
                              const AttentionOptions& options = {}, const Tensor<T>& bias = Tensor<T>()) {
  if constexpr (!check_mask_policy<Policy>()) {
    return {};
  } else if constexpr (HalfElement<T>) {
    return detail::through_float(
        [&](const Tensor<float>& qf, const Tensor<float>& kf, const Tensor<float>& vf, const Tensor<float>& bf) {
          return attention_reference(qf, kf, vf, policy, options, bf);
        },
        q, k, v, bias);
  } else {
  const cpu::AttentionGeometry g = detail::attention_geometry(q, k, v, bias, options);
  validate_mask(policy, "attention_reference", g.batch, g.tq, g.tk);
  const std::int64_t group = g.heads / g.kv_heads;
  // Repeat each kv head `group` times: [B, Hkv, T, D] -> [B, H, T, D].
  const auto repeat_heads = [&](const Tensor<T>& t) {
    if (group == 1) return t;
    return t.unsqueeze(2).expand({g.batch, g.kv_heads, group, g.tk, g.dim}).reshape({g.batch, g.heads, g.tk, g.dim});
  };
  Tensor<T> scores = mul(matmul(q, repeat_heads(k).transpose(2, 3)), static_cast<T>(g.scale));
  if (bias.defined()) scores = scores + bias;
  const Tensor<bool> allowed = materialize_batch(policy, g.batch, g.tq, g.tk).unsqueeze(1);  // [B, 1, Tq, Tk]
  scores = masked_fill(scores, logical_not(allowed), -std::numeric_limits<T>::infinity());
  return matmul(softmax(scores, -1), repeat_heads(v));
  }
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
