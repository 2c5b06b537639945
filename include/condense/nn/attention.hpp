// nn::MultiHeadAttention: q/k/v/o projections around one call of the fused attention op,
// with grouped-query heads (n_kv_heads divides n_heads), optional rotary positions, a KV
// cache, and cross-attention over encoder states. forward() is a member template over the
// mask policy; the policy instance is passed per call (its per-row data changes per batch).
//
// Mask coordinates: a policy is always written for the whole sequence, i.e. the keys are
// [cached keys ; this call's keys] and query i of this call is the token at key index
// cache_length + i. The module wraps the policy in mask::QueryOffset{policy, cache_length},
// so the mask used in training (e.g. Causal{} or a Gist span) also decodes from a cache
// without changes; pass policies with their own `offset` member left at 0.
#pragma once

#include <climits>
#include <cstdint>
#include <memory>
#include <tuple>

#include "condense/core/factories.hpp"
#include "condense/core/random.hpp"
#include "condense/mask/combinators.hpp"
#include "condense/mask/policy.hpp"
#include "condense/nn/kv_cache.hpp"
#include "condense/nn/linear.hpp"
#include "condense/nn/module.hpp"
#include "condense/ops/attention.hpp"
#include "condense/ops/rope.hpp"

namespace condense::nn {

/// Options of MultiHeadAttention.
struct MultiHeadAttentionOptions {
  std::int64_t d_model = 0;       ///< input (query) and output features
  std::int64_t n_heads = 1;       ///< query heads H
  std::int64_t n_kv_heads = 0;    ///< key/value heads Hkv (divides H); 0: H
  std::int64_t head_dim = 0;      ///< Dh; 0: d_model / n_heads (must divide)
  std::int64_t kv_input_dim = 0;  ///< features of the states k_proj/v_proj read in cross-attention; 0: d_model
  bool bias = false;              ///< biases in q_proj, k_proj, v_proj
  bool out_bias = false;          ///< bias in o_proj
  bool rope = false;              ///< rotary positions on q and k (self-attention only)
  double rope_theta = 10000.0;    ///< rotary base
};

/// Per-call state of self-attention besides the input and the mask.
template <DifferentiableElement T>
struct SelfAttentionArgs {
  /// Appends this call's keys/values here and attends over cache + new keys.
  LayerKV<T>* cache = nullptr;
  /// Rotary table of this call's positions (a model builds it once for all layers).
  const RopeTable<compute_type_t<T>>* rope = nullptr;
  /// Rotary positions [T] or [B, T] when no table is given; default cache length + arange(T).
  Tensor<std::int64_t> positions;
};

namespace detail {

/// Positions cache_length + arange(T).
inline Tensor<std::int64_t> default_positions(std::int64_t cache_length, std::int64_t t) {
  return arange<std::int64_t>(static_cast<double>(cache_length), static_cast<double>(cache_length + t));
}

/// Query offset as the int the mask policies take.
inline int mask_offset(const char* op, std::int64_t offset) {
  CONDENSE_CHECK(offset >= 0 && offset <= INT_MAX, op, "query offset ", offset, " does not fit the mask policies");
  return static_cast<int>(offset);
}

}  // namespace detail

/// Multi-head attention with grouped-query heads. Parameters: "q_proj" [H*Dh, d],
/// "k_proj" [Hkv*Dh, d_kv], "v_proj" [Hkv*Dh, d_kv], "o_proj" [d, H*Dh] (Linear layers).
template <DifferentiableElement T>
class MultiHeadAttention : public Module<T> {
 public:
  /// Builds the four projections (PyTorch Linear init) from `gen`; checks the head counts.
  MultiHeadAttention(const MultiHeadAttentionOptions& options, Generator& gen) : o_(resolve(options)) {
    const std::int64_t qdim = o_.n_heads * o_.head_dim, kvdim = o_.n_kv_heads * o_.head_dim;
    q_proj = std::make_unique<Linear<T>>(o_.d_model, qdim, o_.bias, gen);
    k_proj = std::make_unique<Linear<T>>(o_.kv_input_dim, kvdim, o_.bias, gen);
    v_proj = std::make_unique<Linear<T>>(o_.kv_input_dim, kvdim, o_.bias, gen);
    o_proj = std::make_unique<Linear<T>>(qdim, o_.d_model, o_.out_bias, gen);
    this->register_module("q_proj", *q_proj);
    this->register_module("k_proj", *k_proj);
    this->register_module("v_proj", *v_proj);
    this->register_module("o_proj", *o_proj);
  }

  /// Self-attention of x under `mask` (whole-sequence coordinates, see the file comment),
  /// with rotary positions when enabled and the K/V cache of `args` when given.
  // x: [B, T, d_model] -> [B, T, d_model]
  template <class P>
  Tensor<T> forward(const Tensor<T>& x, const P& mask, const SelfAttentionArgs<T>& args = {}) const {
    if constexpr (!check_mask_policy<P>()) {
      return {};
    } else {
      constexpr const char* op = "MultiHeadAttention";
      check_input(op, x, o_.d_model, "x");
      CONDENSE_CHECK(o_.kv_input_dim == o_.d_model, op, "self-attention needs kv_input_dim == d_model, got ",
                     o_.kv_input_dim, " and ", o_.d_model);
      const std::int64_t B = x.size(0), L = x.size(1);
      const std::int64_t past = args.cache ? args.cache->length() : 0;
      Tensor<T> q = heads(q_proj->forward(x), B, L, o_.n_heads);
      Tensor<T> k = heads(k_proj->forward(x), B, L, o_.n_kv_heads);
      Tensor<T> v = heads(v_proj->forward(x), B, L, o_.n_kv_heads);
      if (o_.rope) {
        if (args.rope) {
          q = condense::rope(q, *args.rope);
          k = condense::rope(k, *args.rope);
        } else {
          const Tensor<std::int64_t> pos =
              args.positions.defined() ? args.positions : detail::default_positions(past, L);
          const RopeTable<compute_type_t<T>> table =
              condense::detail::rope_table_on(rope_table<compute_type_t<T>>(pos, o_.head_dim, o_.rope_theta), x.device());
          q = condense::rope(q, table);
          k = condense::rope(k, table);
        }
      }
      if (args.cache) std::tie(k, v) = args.cache->append(k, v);
      const Tensor<T> out = attention(q, k, v, mask::QueryOffset<P>(mask, detail::mask_offset(op, past)));
      return o_proj->forward(merge(out, B, L));
    }
  }

  /// Cross-attention of x over `memory` (e.g. encoder states) under `mask`, whose queries
  /// sit at `query_offset` + i (the decoder's cache length before this call). With a cache
  /// that already holds cross K/V they are reused and `memory` is not read (it may be
  /// undefined); with a cache that holds none, they are computed from `memory` and stored.
  // x: [B, T, d_model], memory: [B, S, kv_input_dim] -> [B, T, d_model]
  template <class P>
  Tensor<T> forward_cross(const Tensor<T>& x, const Tensor<T>& memory, const P& mask, LayerKV<T>* cache = nullptr,
                          std::int64_t query_offset = 0) const {
    if constexpr (!check_mask_policy<P>()) {
      return {};
    } else {
      constexpr const char* op = "MultiHeadAttention";
      check_input(op, x, o_.d_model, "x");
      const std::int64_t B = x.size(0), L = x.size(1);
      Tensor<T> k, v;
      if (cache && cache->has_cross()) {
        k = cache->cross_keys();
        v = cache->cross_values();
      } else {
        check_input(op, memory, o_.kv_input_dim, "memory");
        CONDENSE_CHECK(memory.size(0) == B, op, "memory ", memory.shape(), " and x ", x.shape(), " differ in batch size");
        const std::int64_t S = memory.size(1);
        k = heads(k_proj->forward(memory), B, S, o_.n_kv_heads).contiguous();
        v = heads(v_proj->forward(memory), B, S, o_.n_kv_heads).contiguous();
        if (cache) cache->set_cross(k, v);
      }
      const Tensor<T> q = heads(q_proj->forward(x), B, L, o_.n_heads);
      const Tensor<T> out = attention(q, k, v, mask::QueryOffset<P>(mask, detail::mask_offset(op, query_offset)));
      return o_proj->forward(merge(out, B, L));
    }
  }

  /// The options with defaults resolved (n_kv_heads, head_dim, kv_input_dim set).
  const MultiHeadAttentionOptions& options() const { return o_; }

  std::unique_ptr<Linear<T>> q_proj;
  std::unique_ptr<Linear<T>> k_proj;
  std::unique_ptr<Linear<T>> v_proj;
  std::unique_ptr<Linear<T>> o_proj;

 private:
  static MultiHeadAttentionOptions resolve(MultiHeadAttentionOptions o) {
    constexpr const char* op = "MultiHeadAttention";
    CONDENSE_CHECK(o.d_model > 0, op, "d_model must be positive, got ", o.d_model);
    CONDENSE_CHECK(o.n_heads > 0, op, "n_heads must be positive, got ", o.n_heads);
    if (o.n_kv_heads == 0) o.n_kv_heads = o.n_heads;
    CONDENSE_CHECK(o.n_kv_heads > 0 && o.n_heads % o.n_kv_heads == 0, op, "n_kv_heads (", o.n_kv_heads,
                   ") must divide n_heads (", o.n_heads, ")");
    if (o.head_dim == 0) {
      CONDENSE_CHECK(o.d_model % o.n_heads == 0, op, "n_heads (", o.n_heads, ") must divide d_model (", o.d_model,
                     ") unless head_dim is given");
      o.head_dim = o.d_model / o.n_heads;
    }
    CONDENSE_CHECK(o.head_dim > 0, op, "head_dim must be positive, got ", o.head_dim);
    CONDENSE_CHECK(!o.rope || o.head_dim % 2 == 0, op, "rotary positions need an even head_dim, got ", o.head_dim);
    if (o.kv_input_dim == 0) o.kv_input_dim = o.d_model;
    CONDENSE_CHECK(o.kv_input_dim > 0, op, "kv_input_dim must be positive, got ", o.kv_input_dim);
    return o;
  }

  static void check_input(const char* op, const Tensor<T>& t, std::int64_t features, const char* what) {
    CONDENSE_CHECK(t.defined(), op, what, " is undefined");
    CONDENSE_CHECK(t.dim() == 3 && t.size(2) == features, op, what, " must be [B, T, ", features, "], got ", t.shape());
  }

  /// [B, T, n*Dh] (contiguous projection output) -> [B, n, T, Dh], a view.
  Tensor<T> heads(const Tensor<T>& t, std::int64_t B, std::int64_t L, std::int64_t n) const {
    return t.view({B, L, n, o_.head_dim}).transpose(1, 2);
  }

  /// [B, H, T, Dh] -> [B, T, H*Dh] (one copy).
  Tensor<T> merge(const Tensor<T>& t, std::int64_t B, std::int64_t L) const {
    return t.transpose(1, 2).reshape({B, L, o_.n_heads * o_.head_dim});
  }

  MultiHeadAttentionOptions o_;
};

}  // namespace condense::nn
