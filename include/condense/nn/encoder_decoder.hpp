// nn::EncoderDecoder<T, EncoderMask, CrossMask>: a T5-like sequence-to-sequence model. A
// bidirectional encoder (pre-norm blocks under EncoderMask, default unmasked) maps source
// tokens or embeddings to states; a causal decoder with cross-attention under CrossMask
// maps target tokens or embeddings to logits. The token embedding is shared by encoder,
// decoder and (when tied) the output layer. Decoding can continue a KV cache, which also
// keeps the cross-attention keys/values of the encoder states (computed once); the encoder
// stack can continue one too (used by gist caching, nn/gist_cache.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "condense/core/random.hpp"
#include "condense/mask/basic.hpp"
#include "condense/nn/blocks.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/embedding.hpp"
#include "condense/nn/kv_cache.hpp"
#include "condense/nn/linear.hpp"
#include "condense/nn/module.hpp"
#include "condense/nn/norms.hpp"
#include "condense/nn/positions.hpp"
#include "condense/nn/token_head.hpp"
#include "condense/ops/rope.hpp"

namespace condense::nn {

/// Options of EncoderDecoder. Zero n_kv_heads / head_dim / d_ff take defaults as in
/// DecoderLMOptions.
struct EncoderDecoderOptions {
  std::int64_t vocab_size = 0;
  std::int64_t d_model = 0;
  std::int64_t n_encoder_layers = 0;
  std::int64_t n_decoder_layers = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t d_ff = 0;
  std::int64_t max_len = 0;  ///< rows of each learned position table (unused by rope)
  NormKind norm = NormKind::RMSNorm;
  double norm_eps = 1e-6;
  PositionKind positions = PositionKind::Rope;  ///< in encoder and decoder self-attention
  double rope_theta = 10000.0;
  MlpKind mlp = MlpKind::Gelu;
  GeluApproximation gelu = GeluApproximation::Tanh;
  bool bias = false;
  bool tie_embeddings = true;
  double init_std = 0.02;
  bool scale_residual_init = false;

  /// T5-like: RMSNorm, no biases, GELU MLP of 4 d_model, tied embeddings, and rotary
  /// positions in self-attention (in place of T5's relative position buckets).
  static EncoderDecoderOptions t5_style(std::int64_t vocab, std::int64_t d_model, std::int64_t n_layers,
                                        std::int64_t n_heads, std::int64_t max_len) {
    EncoderDecoderOptions o;
    o.vocab_size = vocab;
    o.d_model = d_model;
    o.n_encoder_layers = n_layers;
    o.n_decoder_layers = n_layers;
    o.n_heads = n_heads;
    o.max_len = max_len;
    o.d_ff = 4 * d_model;
    return o;
  }
};

/// What the encoder and decoder stacks share: learned positions (when used), `Block` layers
/// and the final norm, registered as "embed_positions", "layers.<i>" and "norm".
template <DifferentiableElement T, class Block>
class TransformerStack : public Module<T> {
 public:
  std::unique_ptr<LearnedPositions<T>> embed_positions;  ///< null unless learned positions
  std::vector<std::unique_ptr<Block>> layers;
  Norm<T> norm;

 protected:
  /// Builds `n_layers` layers of `o`.
  TransformerStack(const EncoderDecoderOptions& o, std::int64_t n_layers, Generator& gen)
      : norm(o.norm, o.d_model, o.norm_eps, o.bias), o_(o) {
    if (o.positions == PositionKind::Learned) {
      embed_positions = std::make_unique<LearnedPositions<T>>(o.max_len, o.d_model, gen, o.init_std);
      this->register_module("embed_positions", *embed_positions);
    }
    const BlockOptions block = detail::block_options(o.d_model, o.n_heads, o.n_kv_heads, o.head_dim, o.d_ff, o.norm,
                                                     o.norm_eps, o.positions, o.rope_theta, o.mlp, o.gelu, o.bias);
    for (std::int64_t i = 0; i < n_layers; ++i) {
      layers.push_back(std::make_unique<Block>(block, gen));
      this->register_module("layers." + std::to_string(i), *layers.back());
    }
    this->register_module("norm", norm);
  }

  /// `embeds` plus the learned position vectors of `pos`; fills `table` with the rotary
  /// angles of `pos` when the stack uses rope.
  // embeds: [B, L, d], pos: [L] or [B, L] -> [B, L, d]
  Tensor<T> add_positions(const Tensor<T>& embeds, const Tensor<std::int64_t>& pos, RopeTable<compute_type_t<T>>& table) const {
    Tensor<T> x = embeds;
    if (embed_positions) x = x + embed_positions->forward(pos);
    if (o_.positions == PositionKind::Rope && !layers.empty())
      table = condense::detail::rope_table_on(rope_table<compute_type_t<T>>(pos, layers[0]->attn.options().head_dim, o_.rope_theta),
                                              embeds.device());
    return x;
  }

  /// Self-attention arguments of layer `i`: its slice of `cache` (when given) and the rope table.
  static SelfAttentionArgs<T> layer_args(KVCache<T>* cache, std::size_t i, const RopeTable<compute_type_t<T>>& table) {
    SelfAttentionArgs<T> args;
    args.cache = cache ? &cache->layer(static_cast<std::int64_t>(i)) : nullptr;
    args.rope = table.defined() ? &table : nullptr;
    return args;
  }

  EncoderDecoderOptions o_;
};

/// The encoder stack: "embed_positions" (learned only), "layers.<i>" (EncoderBlock), "norm".
template <DifferentiableElement T>
class TransformerEncoder : public TransformerStack<T, EncoderBlock<T>> {
  using Base = TransformerStack<T, EncoderBlock<T>>;

 public:
  /// Builds the encoder layers of `o`.
  TransformerEncoder(const EncoderDecoderOptions& o, Generator& gen) : Base(o, o.n_encoder_layers, gen) {}

  /// Encoder states of token embeddings under `mask` (positions default cache length +
  /// arange(S)). With `cache`, every layer attends over [cached keys ; this call's keys]
  /// and appends this call's K/V (as the decoder does); the mask is then in whole-sequence
  /// coordinates (query i is key cache_length + i). Gist caching uses it to run an input
  /// against the cached gist K/V.
  // embeds: [B, S, d], positions: [S] or [B, S] -> [B, S, d]
  template <class P>
  Tensor<T> forward(const Tensor<T>& embeds, const P& mask, const Tensor<std::int64_t>& positions = {},
                    KVCache<T>* cache = nullptr) const {
    constexpr const char* op = "EncoderDecoder";
    CONDENSE_CHECK(embeds.defined() && embeds.dim() == 3 && embeds.size(2) == this->o_.d_model, op,
                   "encoder embeddings must be [B, S, ", this->o_.d_model, "], got ", embeds.describe());
    const std::int64_t past = detail::prepare_cache(op, cache, this->o_.n_encoder_layers);
    const Tensor<std::int64_t> pos = detail::resolve_positions(op, positions, embeds.size(0), embeds.size(1), past);
    RopeTable<compute_type_t<T>> table;
    Tensor<T> x = this->add_positions(embeds, pos, table);
    for (std::size_t i = 0; i < this->layers.size(); ++i)
      x = this->layers[i]->forward(x, mask, Base::layer_args(cache, i, table));
    return this->norm(x);
  }
};

/// The decoder stack: "embed_positions" (learned only), "layers.<i>" (CrossDecoderBlock), "norm".
template <DifferentiableElement T>
class TransformerDecoder : public TransformerStack<T, CrossDecoderBlock<T>> {
  using Base = TransformerStack<T, CrossDecoderBlock<T>>;

 public:
  /// Builds the decoder layers of `o`.
  TransformerDecoder(const EncoderDecoderOptions& o, Generator& gen) : Base(o, o.n_decoder_layers, gen) {}

  /// Final decoder hidden states (see EncoderDecoder::decode_hidden).
  // embeds: [B, T, d], states: [B, S, d] -> [B, T, d]
  template <class SP, class CP>
  Tensor<T> forward(const Tensor<T>& embeds, const Tensor<T>& states, const SP& self_mask, const CP& cross_mask,
                    const ForwardOptions<T>& opts) const {
    constexpr const char* op = "EncoderDecoder";
    CONDENSE_CHECK(embeds.defined() && embeds.dim() == 3 && embeds.size(2) == this->o_.d_model, op,
                   "decoder embeddings must be [B, T, ", this->o_.d_model, "], got ", embeds.describe());
    const std::int64_t B = embeds.size(0), L = embeds.size(1);
    const std::int64_t past = detail::prepare_cache(op, opts.cache, this->o_.n_decoder_layers);
    const bool cross_cached = opts.cache && opts.cache->has_cross();
    CONDENSE_CHECK(cross_cached || states.defined(), op,
                   "decoding needs encoder states (or a cache that already holds the cross-attention keys/values)");
    const Tensor<std::int64_t> pos = detail::resolve_positions(op, opts.positions, B, L, past);
    RopeTable<compute_type_t<T>> table;
    Tensor<T> x = this->add_positions(embeds, pos, table);
    for (std::size_t i = 0; i < this->layers.size(); ++i)
      x = this->layers[i]->forward(x, states, self_mask, cross_mask, Base::layer_args(opts.cache, i, table));
    return this->norm(x);
  }
};

/// Encoder-decoder model. Parameter names: "embed_tokens.weight" (shared),
/// "encoder.embed_positions.weight" / "decoder.embed_positions.weight" (learned only),
/// "encoder.layers.<i>.{attn_norm,attn.*,mlp_norm,mlp.*}", "encoder.norm.*",
/// "decoder.layers.<i>.{attn_norm,attn.*,cross_norm,cross_attn.*,mlp_norm,mlp.*}",
/// "decoder.norm.*", "lm_head.weight" (absent when tied).
/// EncoderMask / CrossMask are the default policies of encode() / decode().
template <DifferentiableElement T, class EncoderMask = mask::None, class CrossMask = mask::None>
class EncoderDecoder : public Module<T> {
  EncoderDecoderOptions options_;  // first: validated before the modules below are built

 public:
  using value_type = T;
  using encoder_mask_type = EncoderMask;
  using cross_mask_type = CrossMask;

  /// Builds the model and initialises it (N(0, init_std^2) projections) from `gen`.
  EncoderDecoder(const EncoderDecoderOptions& options, Generator& gen)
      : options_(checked(options)),
        embed_tokens(options_.vocab_size, options_.d_model, gen, options_.init_std),
        encoder(options_, gen),
        decoder(options_, gen) {
    this->register_module("embed_tokens", embed_tokens);
    this->register_module("encoder", encoder);
    this->register_module("decoder", decoder);
    if (!options_.tie_embeddings) {
      lm_head = std::make_unique<Linear<T>>(options_.d_model, options_.vocab_size, false, gen);
      this->register_module("lm_head", *lm_head);
    }
    detail::init_transformer(*this, options_.init_std, options_.scale_residual_init,
                             options_.n_encoder_layers + options_.n_decoder_layers, gen);
  }

  /// Encoder states of source token ids under `mask` (e.g. KeyPadding for padded sources).
  // ids: [B, S] (int64), positions: [S] or [B, S] -> [B, S, d]
  template <class P = EncoderMask>
  Tensor<T> encode(const Tensor<std::int64_t>& ids, const P& mask = P{}, const Tensor<std::int64_t>& positions = {}) const {
    detail::check_ids("EncoderDecoder", ids);
    return encoder.forward(embed(ids), mask, positions);
  }
  /// Encoder states of source embeddings (in place of ids).
  // embeds: [B, S, d] -> [B, S, d]
  template <class P = EncoderMask>
  Tensor<T> encode(const Tensor<T>& embeds, const P& mask = P{}, const Tensor<std::int64_t>& positions = {}) const {
    return encoder.forward(embeds, mask, positions);
  }

  /// Logits of target ids with a causal decoder over `states` (cross-attention under
  /// `cross_mask`). With opts.cache, continues and extends it; states may then be
  /// undefined once the cache holds the cross keys/values.
  // ids: [B, T] (int64), states: [B, S, d] -> [B, T, V]
  template <class CP = CrossMask>
  Tensor<T> decode(const Tensor<std::int64_t>& ids, const Tensor<T>& states, const CP& cross_mask = CP{},
                   const ForwardOptions<T>& opts = {}) const {
    return logits(decode_hidden(ids, states, mask::Causal{}, cross_mask, opts));
  }
  /// Logits of target embeddings (in place of ids); see decode().
  // embeds: [B, T, d], states: [B, S, d] -> [B, T, V]
  template <class CP = CrossMask>
  Tensor<T> decode(const Tensor<T>& embeds, const Tensor<T>& states, const CP& cross_mask = CP{},
                   const ForwardOptions<T>& opts = {}) const {
    return logits(decode_hidden(embeds, states, mask::Causal{}, cross_mask, opts));
  }

  /// Final decoder hidden states with an explicit decoder self-attention mask (whole-
  /// sequence coordinates, like every mask of the nn modules).
  // ids: [B, T] (int64), states: [B, S, d] -> [B, T, d]
  template <class SP, class CP>
  Tensor<T> decode_hidden(const Tensor<std::int64_t>& ids, const Tensor<T>& states, const SP& self_mask,
                          const CP& cross_mask, const ForwardOptions<T>& opts = {}) const {
    detail::check_ids("EncoderDecoder", ids);
    return decoder.forward(embed(ids), states, self_mask, cross_mask, opts);
  }
  /// Final decoder hidden states of target embeddings with an explicit self-attention mask.
  // embeds: [B, T, d], states: [B, S, d] -> [B, T, d]
  template <class SP, class CP>
  Tensor<T> decode_hidden(const Tensor<T>& embeds, const Tensor<T>& states, const SP& self_mask, const CP& cross_mask,
                          const ForwardOptions<T>& opts = {}) const {
    return decoder.forward(embeds, states, self_mask, cross_mask, opts);
  }

  /// Token embeddings (no positions).
  // ids: [B, T] -> [B, T, d]
  Tensor<T> embed(const Tensor<std::int64_t>& ids) const { return embed_tokens(ids); }
  /// Vocabulary logits of decoder hidden states.
  // hidden: [..., d] -> [..., V]
  Tensor<T> logits(const Tensor<T>& hidden) const { return token_logits(embed_tokens, lm_head.get(), hidden); }
  /// Adds `n_new` tokens (rows initialised to the mean of the existing rows); rebuild the
  /// optimizer afterwards.
  void grow_vocab(std::int64_t n_new) {
    grow_token_rows(embed_tokens, lm_head.get(), n_new);
    options_.vocab_size += n_new;
  }

  /// The options with defaults resolved.
  const EncoderDecoderOptions& options() const { return options_; }
  /// Vocabulary size.
  std::int64_t vocab_size() const { return options_.vocab_size; }
  /// Decoder layers (the layers of a decoding KV cache).
  std::int64_t num_layers() const { return options_.n_decoder_layers; }

  Embedding<T> embed_tokens;
  TransformerEncoder<T> encoder;
  TransformerDecoder<T> decoder;
  std::unique_ptr<Linear<T>> lm_head;  ///< null when the embeddings are tied

 private:
  static EncoderDecoderOptions checked(EncoderDecoderOptions o) {
    constexpr const char* op = "EncoderDecoder";
    CONDENSE_CHECK(o.vocab_size > 0 && o.d_model > 0 && o.n_heads > 0 && o.n_encoder_layers >= 0 &&
                       o.n_decoder_layers >= 0,
                   op, "vocab_size, d_model and n_heads must be positive and layer counts >= 0, got vocab ",
                   o.vocab_size, ", d_model ", o.d_model, ", n_heads ", o.n_heads, ", layers ", o.n_encoder_layers,
                   " + ", o.n_decoder_layers);
    CONDENSE_CHECK(o.positions != PositionKind::Learned || o.max_len > 0, op,
                   "learned positions need max_len > 0, got ", o.max_len);
    if (o.d_ff == 0) o.d_ff = 4 * o.d_model;
    return o;
  }
};

}  // namespace condense::nn
