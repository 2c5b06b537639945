// Transformer blocks, pre-norm: DecoderBlock (x + attn(norm(x)); x + mlp(norm(x))), which
// also serves as the encoder block (EncoderBlock: same layer, a bidirectional mask, no
// cache), and CrossDecoderBlock (self-attention, cross-attention over encoder states, MLP).
#pragma once

#include <cstdint>

#include "condense/core/random.hpp"
#include "condense/nn/attention.hpp"
#include "condense/nn/kv_cache.hpp"
#include "condense/nn/mlp.hpp"
#include "condense/nn/module.hpp"
#include "condense/nn/norms.hpp"

namespace condense::nn {

/// Options of a transformer block.
struct BlockOptions {
  MultiHeadAttentionOptions attn;  ///< self-attention (and cross-attention, without rope)
  MlpOptions mlp;
  NormKind norm = NormKind::LayerNorm;
  double norm_eps = 1e-5;
  bool norm_bias = true;  ///< bias of LayerNorm (ignored for RMSNorm)
};

/// Pre-norm self-attention block. Parameters: "attn_norm", "attn" (q_proj, k_proj, v_proj,
/// o_proj), "mlp_norm", "mlp".
template <DifferentiableElement T>
class DecoderBlock : public Module<T> {
 public:
  /// Builds the norms, attention and MLP from `options` and `gen`.
  DecoderBlock(const BlockOptions& options, Generator& gen)
      : attn_norm(options.norm, options.attn.d_model, options.norm_eps, options.norm_bias),
        attn(options.attn, gen),
        mlp_norm(options.norm, options.attn.d_model, options.norm_eps, options.norm_bias),
        mlp(options.mlp, gen) {
    CONDENSE_CHECK(options.mlp.d_model == options.attn.d_model, "DecoderBlock", "mlp d_model ", options.mlp.d_model,
                   " differs from attention d_model ", options.attn.d_model);
    this->register_module("attn_norm", attn_norm);
    this->register_module("attn", attn);
    this->register_module("mlp_norm", mlp_norm);
    this->register_module("mlp", mlp);
  }

  /// h = x + attn(attn_norm(x)); out = h + mlp(mlp_norm(h)). `mask` in whole-sequence
  /// coordinates (see nn/attention.hpp); `args` carries the cache and rotary table.
  // x: [B, T, d] -> [B, T, d]
  template <class P>
  Tensor<T> forward(const Tensor<T>& x, const P& mask, const SelfAttentionArgs<T>& args = {}) const {
    const Tensor<T> h = x + attn.forward(attn_norm(x), mask, args);
    return h + mlp(mlp_norm(h));
  }

  Norm<T> attn_norm;
  MultiHeadAttention<T> attn;
  Norm<T> mlp_norm;
  Mlp<T> mlp;
};

/// The encoder block: the same pre-norm layer as DecoderBlock, run with a bidirectional
/// (or any encoder) mask and without a cache.
template <DifferentiableElement T>
using EncoderBlock = DecoderBlock<T>;

/// Pre-norm decoder block with cross-attention. Parameters: "attn_norm", "attn",
/// "cross_norm", "cross_attn", "mlp_norm", "mlp".
template <DifferentiableElement T>
class CrossDecoderBlock : public Module<T> {
 public:
  /// Builds the norms, self- and cross-attention (without rope) and MLP.
  CrossDecoderBlock(const BlockOptions& options, Generator& gen)
      : attn_norm(options.norm, options.attn.d_model, options.norm_eps, options.norm_bias),
        attn(options.attn, gen),
        cross_norm(options.norm, options.attn.d_model, options.norm_eps, options.norm_bias),
        cross_attn(cross_options(options.attn), gen),
        mlp_norm(options.norm, options.attn.d_model, options.norm_eps, options.norm_bias),
        mlp(options.mlp, gen) {
    CONDENSE_CHECK(options.mlp.d_model == options.attn.d_model, "CrossDecoderBlock", "mlp d_model ",
                   options.mlp.d_model, " differs from attention d_model ", options.attn.d_model);
    this->register_module("attn_norm", attn_norm);
    this->register_module("attn", attn);
    this->register_module("cross_norm", cross_norm);
    this->register_module("cross_attn", cross_attn);
    this->register_module("mlp_norm", mlp_norm);
    this->register_module("mlp", mlp);
  }

  /// h = x + attn(attn_norm(x)); h = h + cross_attn(cross_norm(h), memory);
  /// out = h + mlp(mlp_norm(h)). Both masks in whole-sequence coordinates (decoder queries
  /// at cache length + i). With a cache holding cross K/V, `memory` is not read.
  // x: [B, T, d], memory: [B, S, d_kv] -> [B, T, d]
  template <class SP, class CP>
  Tensor<T> forward(const Tensor<T>& x, const Tensor<T>& memory, const SP& self_mask, const CP& cross_mask,
                    const SelfAttentionArgs<T>& args = {}) const {
    const std::int64_t past = args.cache ? args.cache->length() : 0;
    Tensor<T> h = x + attn.forward(attn_norm(x), self_mask, args);
    h = h + cross_attn.forward_cross(cross_norm(h), memory, cross_mask, args.cache, past);
    return h + mlp(mlp_norm(h));
  }

  Norm<T> attn_norm;
  MultiHeadAttention<T> attn;
  Norm<T> cross_norm;
  MultiHeadAttention<T> cross_attn;
  Norm<T> mlp_norm;
  Mlp<T> mlp;

 private:
  static MultiHeadAttentionOptions cross_options(MultiHeadAttentionOptions o) {
    o.rope = false;
    return o;
  }
};

}  // namespace condense::nn
