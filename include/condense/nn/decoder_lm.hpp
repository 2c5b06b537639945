// nn::DecoderLM<T, Mask>: a decoder-only language model (token embedding, optional learned
// positions, pre-norm DecoderBlocks, final norm, lm_head or tied embeddings) configured by
// DecoderLMOptions, with GPT-2-style and LLaMA-style presets. forward() takes token ids or
// input embeddings, any mask policy (whole-sequence coordinates; `Mask` is the default,
// the training mask), an optional KV cache and optional explicit positions.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "condense/core/random.hpp"
#include "condense/mask/basic.hpp"
#include "condense/nn/blocks.hpp"
#include "condense/nn/embedding.hpp"
#include "condense/nn/init.hpp"
#include "condense/nn/kv_cache.hpp"
#include "condense/nn/linear.hpp"
#include "condense/nn/module.hpp"
#include "condense/nn/norms.hpp"
#include "condense/nn/positions.hpp"
#include "condense/nn/token_head.hpp"
#include "condense/ops/activations.hpp"
#include "condense/ops/rope.hpp"

namespace condense::nn {

/// Options of a model forward besides the input and the mask.
template <DifferentiableElement T>
struct ForwardOptions {
  /// KV cache to continue and extend (sized to the model on first use). Without one, the
  /// call sees only its own tokens.
  KVCache<T>* cache = nullptr;
  /// Position ids [T] or [B, T] (int64); default: cache length + arange(T). Pass them when
  /// the cache holds only part of a prefix, or per row for left-padded batches.
  Tensor<std::int64_t> positions;
};

/// Options of DecoderLM. Zero head_dim / n_kv_heads / d_ff take defaults (d_model /
/// n_heads, n_heads, 4 * d_model).
struct DecoderLMOptions {
  std::int64_t vocab_size = 0;
  std::int64_t d_model = 0;
  std::int64_t n_layers = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_kv_heads = 0;  ///< grouped-query heads; 0: n_heads
  std::int64_t head_dim = 0;    ///< 0: d_model / n_heads
  std::int64_t d_ff = 0;        ///< MLP hidden features; 0: 4 * d_model
  std::int64_t max_len = 0;     ///< rows of the learned position table (unused by rope)
  NormKind norm = NormKind::LayerNorm;
  double norm_eps = 1e-5;
  PositionKind positions = PositionKind::Learned;
  double rope_theta = 10000.0;
  MlpKind mlp = MlpKind::Gelu;
  GeluApproximation gelu = GeluApproximation::Tanh;
  bool bias = true;            ///< biases in every projection and in LayerNorm
  bool tie_embeddings = true;  ///< lm_head reuses embed_tokens.weight (no lm_head parameter)
  double init_std = 0.02;      ///< N(0, init_std^2) for projections and embeddings
  bool scale_residual_init = true;  ///< o_proj / down_proj weights get init_std / sqrt(2 n_layers)

  /// GPT-2 style: LayerNorm (eps 1e-5), learned positions, GELU (tanh) MLP of 4 d_model,
  /// biases, tied embeddings, residual projections scaled at init.
  static DecoderLMOptions gpt2_style(std::int64_t vocab, std::int64_t d_model, std::int64_t n_layers,
                                     std::int64_t n_heads, std::int64_t max_len) {
    DecoderLMOptions o;
    o.vocab_size = vocab;
    o.d_model = d_model;
    o.n_layers = n_layers;
    o.n_heads = n_heads;
    o.max_len = max_len;
    o.d_ff = 4 * d_model;
    return o;
  }

  /// LLaMA style: RMSNorm (eps 1e-6), rotary positions (theta 10000), SwiGLU MLP with
  /// d_ff = 8/3 d_model rounded up to a multiple of 32, grouped-query attention with
  /// `n_kv_heads`, no biases, untied lm_head, no residual init scaling.
  static DecoderLMOptions llama_style(std::int64_t vocab, std::int64_t d_model, std::int64_t n_layers,
                                      std::int64_t n_heads, std::int64_t n_kv_heads, std::int64_t max_len) {
    DecoderLMOptions o;
    o.vocab_size = vocab;
    o.d_model = d_model;
    o.n_layers = n_layers;
    o.n_heads = n_heads;
    o.n_kv_heads = n_kv_heads;
    o.max_len = max_len;
    o.d_ff = (8 * d_model / 3 + 31) / 32 * 32;
    o.norm = NormKind::RMSNorm;
    o.norm_eps = 1e-6;
    o.positions = PositionKind::Rope;
    o.mlp = MlpKind::SwiGLU;
    o.bias = false;
    o.tie_embeddings = false;
    o.scale_residual_init = false;
    return o;
  }
};

namespace detail {

/// The block options of a model's layers.
inline BlockOptions block_options(std::int64_t d_model, std::int64_t n_heads, std::int64_t n_kv_heads,
                                  std::int64_t head_dim, std::int64_t d_ff, NormKind norm, double norm_eps,
                                  PositionKind positions, double rope_theta, MlpKind mlp, GeluApproximation gelu,
                                  bool bias) {
  BlockOptions b;
  b.attn.d_model = d_model;
  b.attn.n_heads = n_heads;
  b.attn.n_kv_heads = n_kv_heads;
  b.attn.head_dim = head_dim;
  b.attn.bias = bias;
  b.attn.out_bias = bias;
  b.attn.rope = positions == PositionKind::Rope;
  b.attn.rope_theta = rope_theta;
  b.mlp.d_model = d_model;
  b.mlp.hidden = d_ff > 0 ? d_ff : 4 * d_model;
  b.mlp.kind = mlp;
  b.mlp.bias = bias;
  b.mlp.gelu = gelu;
  b.norm = norm;
  b.norm_eps = norm_eps;
  b.norm_bias = bias;
  return b;
}

/// Re-initialises a model's parameters GPT-2 / LLaMA style: 2-D weights N(0, std^2)
/// (those whose name contains one of `residual` get std / sqrt(2 n_layers) when
/// `scale_residual`), biases zero, 1-D norm weights untouched (ones).
template <DifferentiableElement T>
void init_transformer(const Module<T>& m, double std, bool scale_residual, std::int64_t n_layers, Generator& gen) {
  const double residual_std = scale_residual && n_layers > 0 ? std / std::sqrt(2.0 * static_cast<double>(n_layers)) : std;
  m.for_each_parameter([&](const std::string& name, Tensor<T>& t) {
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (is_bias) {
      init::zeros_(t);
    } else if (t.dim() == 2) {
      const bool residual = name.find("o_proj.") != std::string::npos || name.find("down_proj.") != std::string::npos;
      init::normal_(t, 0.0, residual ? residual_std : std, gen);
    }
  });
}

/// Position ids for a forward of `t` tokens over `batch` rows: `given` checked ([T] or
/// [B, T]), or cache length + arange(T).
inline Tensor<std::int64_t> resolve_positions(const char* op, const Tensor<std::int64_t>& given, std::int64_t batch,
                                              std::int64_t t, std::int64_t past) {
  if (!given.defined()) return default_positions(past, t);
  CONDENSE_CHECK((given.dim() == 1 && given.size(0) == t) || (given.dim() == 2 && given.size(0) == batch && given.size(1) == t),
                 op, "positions must be [T] = [", t, "] or [B, T] = [", batch, ", ", t, "], got ", given.shape());
  return given;
}

/// Sizes an empty cache to `n_layers` or checks that it matches; returns its length.
template <DifferentiableElement T>
std::int64_t prepare_cache(const char* op, KVCache<T>* cache, std::int64_t n_layers) {
  if (!cache) return 0;
  if (cache->num_layers() == 0) cache->resize(n_layers);
  CONDENSE_CHECK(cache->num_layers() == n_layers, op, "the cache has ", cache->num_layers(),
                 " layers but the model has ", n_layers);
  cache->check_consistent(op);
  return cache->length();
}

/// Checks a [B, T] id tensor.
inline void check_ids(const char* op, const Tensor<std::int64_t>& ids) {
  CONDENSE_CHECK(ids.defined() && ids.dim() == 2, op, "token ids must be [B, T] int64, got ", ids.describe());
}

}  // namespace detail

/// Decoder-only language model. Parameter names: "embed_tokens.weight" [V, d],
/// "embed_positions.weight" [max_len, d] (learned positions only),
/// "layers.<i>.{attn_norm,attn.{q,k,v,o}_proj,mlp_norm,mlp.{gate,up,down}_proj}.*",
/// "norm.weight" (+ ".bias"), "lm_head.weight" [V, d] (absent when tied).
/// `Mask` is the policy forward() uses when none is passed (the training mask).
template <DifferentiableElement T, class Mask = mask::Causal>
class DecoderLM : public Module<T> {
  DecoderLMOptions options_;  // first: validated before the modules below are built
  std::int64_t head_dim_ = 0;

 public:
  using value_type = T;
  using mask_type = Mask;

  /// Builds the model and initialises it (see DecoderLMOptions::init_std) from `gen`.
  DecoderLM(const DecoderLMOptions& options, Generator& gen)
      : options_(checked(options)),
        embed_tokens(options_.vocab_size, options_.d_model, gen, options_.init_std),
        norm(options_.norm, options_.d_model, options_.norm_eps, options_.bias) {
    this->register_module("embed_tokens", embed_tokens);
    if (options_.positions == PositionKind::Learned) {
      embed_positions = std::make_unique<LearnedPositions<T>>(options_.max_len, options_.d_model, gen, options_.init_std);
      this->register_module("embed_positions", *embed_positions);
    }
    const BlockOptions block = detail::block_options(
        options_.d_model, options_.n_heads, options_.n_kv_heads, options_.head_dim, options_.d_ff, options_.norm,
        options_.norm_eps, options_.positions, options_.rope_theta, options_.mlp, options_.gelu, options_.bias);
    for (std::int64_t i = 0; i < options_.n_layers; ++i) {
      layers.push_back(std::make_unique<DecoderBlock<T>>(block, gen));
      this->register_module("layers." + std::to_string(i), *layers.back());
    }
    this->register_module("norm", norm);
    if (!options_.tie_embeddings) {
      lm_head = std::make_unique<Linear<T>>(options_.d_model, options_.vocab_size, false, gen);
      this->register_module("lm_head", *lm_head);
    }
    head_dim_ = layers.empty() ? 0 : layers[0]->attn.options().head_dim;
    detail::init_transformer(*this, options_.init_std, options_.scale_residual_init, options_.n_layers, gen);
  }

  /// Logits of token ids under `mask`. The mask is in whole-sequence coordinates: with a
  /// cache of n positions every layer runs it as mask::QueryOffset{mask, n} (so Causal{}
  /// continues a cache as Causal{n}; do not add the cache length to the policy yourself).
  // ids: [B, T] (int64) -> [B, T, V]
  template <class P = Mask>
  Tensor<T> forward(const Tensor<std::int64_t>& ids, const P& mask = P{}, const ForwardOptions<T>& opts = {}) const {
    return logits(hidden_states(ids, mask, opts));
  }
  /// Logits of input embeddings (in place of token ids) under `mask`.
  // embeds: [B, T, d] -> [B, T, V]
  template <class P = Mask>
  Tensor<T> forward(const Tensor<T>& embeds, const P& mask = P{}, const ForwardOptions<T>& opts = {}) const {
    return logits(hidden_states(embeds, mask, opts));
  }

  /// Final hidden states (after the last norm) of token ids.
  // ids: [B, T] (int64) -> [B, T, d]
  template <class P = Mask>
  Tensor<T> hidden_states(const Tensor<std::int64_t>& ids, const P& mask = P{}, const ForwardOptions<T>& opts = {}) const {
    detail::check_ids("DecoderLM", ids);
    return hidden_states(embed(ids), mask, opts);
  }
  /// Final hidden states of input embeddings. Learned positions are added here (the
  /// embeddings are token embeddings, as embed() returns them).
  // embeds: [B, T, d] -> [B, T, d]
  template <class P = Mask>
  Tensor<T> hidden_states(const Tensor<T>& embeds, const P& mask = P{}, const ForwardOptions<T>& opts = {}) const {
    constexpr const char* op = "DecoderLM";
    CONDENSE_CHECK(embeds.defined() && embeds.dim() == 3 && embeds.size(2) == options_.d_model, op,
                   "input embeddings must be [B, T, ", options_.d_model, "], got ", embeds.describe());
    const std::int64_t B = embeds.size(0), L = embeds.size(1);
    const std::int64_t past = detail::prepare_cache(op, opts.cache, options_.n_layers);
    const Tensor<std::int64_t> positions = detail::resolve_positions(op, opts.positions, B, L, past);
    Tensor<T> x = embeds;
    if (embed_positions) x = x + embed_positions->forward(positions);
    RopeTable<compute_type_t<T>> table;
    if (options_.positions == PositionKind::Rope && head_dim_ > 0)
      table = condense::detail::rope_table_on(rope_table<compute_type_t<T>>(positions, head_dim_, options_.rope_theta), x.device());
    for (std::size_t i = 0; i < layers.size(); ++i) {
      SelfAttentionArgs<T> args;
      args.cache = opts.cache ? &opts.cache->layer(static_cast<std::int64_t>(i)) : nullptr;
      args.rope = table.defined() ? &table : nullptr;
      args.positions = positions;
      x = layers[i]->forward(x, mask, args);
    }
    return norm(x);
  }

  /// Token embeddings (no positions).
  // ids: [B, T] -> [B, T, d]
  Tensor<T> embed(const Tensor<std::int64_t>& ids) const { return embed_tokens(ids); }

  /// Vocabulary logits of hidden states (lm_head, or the tied embedding table).
  // hidden: [..., d] -> [..., V]
  Tensor<T> logits(const Tensor<T>& hidden) const { return token_logits(embed_tokens, lm_head.get(), hidden); }

  /// Adds `n_new` tokens to the vocabulary: embedding rows (and untied lm_head rows)
  /// initialised to the mean of the existing rows. Parameter tensors are replaced, so an
  /// optimizer must be rebuilt afterwards.
  void grow_vocab(std::int64_t n_new) {
    grow_token_rows(embed_tokens, lm_head.get(), n_new);
    options_.vocab_size += n_new;
  }

  /// The options with defaults resolved.
  const DecoderLMOptions& options() const { return options_; }
  /// Vocabulary size.
  std::int64_t vocab_size() const { return options_.vocab_size; }
  /// Number of layers.
  std::int64_t num_layers() const { return options_.n_layers; }

  Embedding<T> embed_tokens;
  std::unique_ptr<LearnedPositions<T>> embed_positions;  ///< null unless learned positions
  std::vector<std::unique_ptr<DecoderBlock<T>>> layers;
  Norm<T> norm;
  std::unique_ptr<Linear<T>> lm_head;  ///< null when the embeddings are tied

 private:
  static DecoderLMOptions checked(DecoderLMOptions o) {
    constexpr const char* op = "DecoderLM";
    CONDENSE_CHECK(o.vocab_size > 0 && o.d_model > 0 && o.n_layers >= 0 && o.n_heads > 0, op,
                   "vocab_size, d_model and n_heads must be positive and n_layers >= 0, got vocab ", o.vocab_size,
                   ", d_model ", o.d_model, ", n_layers ", o.n_layers, ", n_heads ", o.n_heads);
    CONDENSE_CHECK(o.positions != PositionKind::Learned || o.max_len > 0, op,
                   "learned positions need max_len > 0, got ", o.max_len);
    if (o.d_ff == 0) o.d_ff = 4 * o.d_model;
    return o;
  }
};

}  // namespace condense::nn
