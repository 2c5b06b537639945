// Autoregressive generation with a KV cache: greedy decoding and temperature / top-k /
// top-p sampling from a seeded Generator, max_new_tokens, per-row stop tokens, and
// batches of prompts of different lengths.
//
// Decoder-only models (generate): prompts are left-padded to a common length. Row b with
// p_b pad tokens gets positions max(0, t - p_b), so its tokens sit at positions 0, 1, ...
// exactly as when decoding it alone, and the mask is mask::Pruned (causal, plus a keep
// bitmap that drops the pad keys of each row) over the whole [prompt ; generated] buffer.
// The model wraps it in QueryOffset with the cache length, so the one policy serves the
// prefill and every step. Pad query rows see no key and produce zeros (ignored).
// Encoder-decoder models (generate_seq2seq): sources are right-padded and masked with
// mask::KeyPadding in encoder self-attention and in cross-attention; every row's decoder
// starts from the same start token, so the decoder needs no padding.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/core/error.hpp"
#include "condense/core/factories.hpp"
#include "condense/core/random.hpp"
#include "condense/mask/basic.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/kv_cache.hpp"

namespace condense::nn {

/// Options of generate() and generate_seq2seq().
struct GenerateOptions {
  std::int64_t max_new_tokens = 32;  ///< tokens generated per row at most
  bool do_sample = false;            ///< false: greedy (argmax, first index on ties)
  double temperature = 1.0;          ///< logits are divided by it when sampling (> 0)
  std::int64_t top_k = 0;            ///< keep the k most likely tokens (0: all)
  double top_p = 1.0;                ///< keep the smallest most-likely set of mass >= top_p (1: all)
  std::vector<std::int64_t> stop_tokens;  ///< a row stops after generating one of these
  bool include_stop_token = true;    ///< keep the stop token at the end of a row's output
  std::int64_t pad_token = 0;        ///< id fed for padding and for finished rows (any valid id)
};

namespace detail {

/// Checks sampling options; `vocab` for the token ids.
inline void check_generate_options(const char* op, const GenerateOptions& o, std::int64_t vocab) {
  CONDENSE_CHECK(o.max_new_tokens >= 0, op, "max_new_tokens must be >= 0, got ", o.max_new_tokens);
  CONDENSE_CHECK(!o.do_sample || (std::isfinite(o.temperature) && o.temperature > 0.0), op,
                 "temperature must be positive when sampling, got ", o.temperature);
  CONDENSE_CHECK(o.top_k >= 0, op, "top_k must be >= 0, got ", o.top_k);
  CONDENSE_CHECK(o.top_p > 0.0 && o.top_p <= 1.0, op, "top_p must be in (0, 1], got ", o.top_p);
  CONDENSE_CHECK(o.pad_token >= 0 && o.pad_token < vocab, op, "pad_token ", o.pad_token, " out of range [0, ", vocab, ")");
}

}  // namespace detail

/// The next token of every row from its logits: argmax without sampling, otherwise a draw
/// from softmax(logits / temperature) restricted to the top_k and then top_p most likely
/// tokens (ties broken by lower id). One uniform draw per row, in row order.
// logits: [B, V] -> B token ids
template <DifferentiableElement T>
std::vector<std::int64_t> sample_next(const Tensor<T>& logits, const GenerateOptions& options, Generator& gen) {
  constexpr const char* op = "generate";
  CONDENSE_CHECK(logits.defined() && logits.dim() == 2 && logits.size(1) > 0, op, "logits must be [B, V] with V > 0, got ",
                 logits.describe());
  const std::int64_t B = logits.size(0), V = logits.size(1);
  // The draws happen on the host, on 16-bit logits widened to float (exactly).
  using C = compute_type_t<T>;
  const Tensor<C> lc = logits.detach().template cast<C>().cpu().contiguous();
  std::vector<std::int64_t> out(static_cast<std::size_t>(B));
  std::vector<std::int64_t> order(static_cast<std::size_t>(V));
  std::vector<double> probs;
  for (std::int64_t b = 0; b < B; ++b) {
    const C* row = lc.data() + b * V;
    const auto better = [row](std::int64_t a, std::int64_t c) { return row[a] > row[c] || (row[a] == row[c] && a < c); };
    if (!options.do_sample) {
      std::int64_t best = 0;
      for (std::int64_t i = 1; i < V; ++i)
        if (row[i] > row[best]) best = i;
      out[static_cast<std::size_t>(b)] = best;
      continue;
    }
    std::iota(order.begin(), order.end(), std::int64_t{0});
    std::int64_t n = V;
    if (options.top_k > 0 && options.top_k < V) {
      n = options.top_k;
      std::partial_sort(order.begin(), order.begin() + n, order.end(), better);
    } else if (options.top_p < 1.0) {
      std::sort(order.begin(), order.end(), better);
    }
    // Softmax over the n candidates (order[0] is the maximum whenever the list is sorted).
    double max_logit = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < n; ++j) max_logit = std::max(max_logit, static_cast<double>(row[order[static_cast<std::size_t>(j)]]));
    probs.assign(static_cast<std::size_t>(n), 0.0);
    double total = 0.0;
    for (std::int64_t j = 0; j < n; ++j) {
      const double z = (static_cast<double>(row[order[static_cast<std::size_t>(j)]]) - max_logit) / options.temperature;
      probs[static_cast<std::size_t>(j)] = std::exp(z);
      total += probs[static_cast<std::size_t>(j)];
    }
    if (options.top_p < 1.0) {  // candidates are sorted: keep the shortest prefix of mass >= top_p
      double mass = 0.0;
      std::int64_t keep = 0;
      while (keep < n) {
        mass += probs[static_cast<std::size_t>(keep++)] / total;
        if (mass >= options.top_p) break;
      }
      n = keep;
      total = 0.0;
      for (std::int64_t j = 0; j < n; ++j) total += probs[static_cast<std::size_t>(j)];
    }
    const double u = gen.uniform01() * total;
    double acc = 0.0;
    std::int64_t pick = order[static_cast<std::size_t>(n - 1)];
    for (std::int64_t j = 0; j < n; ++j) {
      acc += probs[static_cast<std::size_t>(j)];
      if (u < acc) {
        pick = order[static_cast<std::size_t>(j)];
        break;
      }
    }
    out[static_cast<std::size_t>(b)] = pick;
  }
  return out;
}

namespace detail {

/// Runs the shared decode loop: `step(ids [B, 1], positions [B, 1]) -> logits [B, V]` is
/// called for each new token after the first, which comes from `first_logits`.
template <DifferentiableElement T, class Step>
std::vector<std::vector<std::int64_t>> decode_loop(const Tensor<T>& first_logits, std::vector<std::int64_t> next_pos,
                                                   const GenerateOptions& options, Generator& gen, Step&& step) {
  const std::int64_t B = first_logits.size(0);
  std::vector<std::vector<std::int64_t>> out(static_cast<std::size_t>(B));
  std::vector<bool> done(static_cast<std::size_t>(B), false);
  const auto is_stop = [&](std::int64_t t) {
    return std::find(options.stop_tokens.begin(), options.stop_tokens.end(), t) != options.stop_tokens.end();
  };
  Tensor<T> logits = first_logits;
  for (std::int64_t s = 0; s < options.max_new_tokens; ++s) {
    const std::vector<std::int64_t> next = sample_next(logits, options, gen);
    std::vector<std::int64_t> feed(static_cast<std::size_t>(B), options.pad_token);
    bool all_done = true;
    for (std::int64_t b = 0; b < B; ++b) {
      const auto i = static_cast<std::size_t>(b);
      if (done[i]) continue;
      const std::int64_t t = next[i];
      if (is_stop(t)) {
        done[i] = true;
        if (options.include_stop_token) out[i].push_back(t);
      } else {
        out[i].push_back(t);
        feed[i] = t;
      }
      all_done = all_done && done[i];
    }
    if (all_done || s + 1 == options.max_new_tokens) break;
    const Tensor<std::int64_t> ids = from_vector<std::int64_t>(feed, {B, 1});
    const Tensor<std::int64_t> pos = from_vector<std::int64_t>(next_pos, {B, 1});
    for (auto& p : next_pos) ++p;
    logits = step(ids, pos);
  }
  return out;
}

}  // namespace detail

/// Generates up to max_new_tokens after each prompt with a decoder-only model (DecoderLM or
/// any model with hidden_states(ids, mask, ForwardOptions), logits(hidden), vocab_size()
/// and num_layers()). Prompts may differ in length (non-empty); the result holds the new
/// tokens of each row (not the prompt). Runs without recording gradients.
template <class Model>
std::vector<std::vector<std::int64_t>> generate(const Model& model, const std::vector<std::vector<std::int64_t>>& prompts,
                                                const GenerateOptions& options, Generator& gen) {
  using T = typename Model::value_type;
  constexpr const char* op = "generate";
  detail::check_generate_options(op, options, model.vocab_size());
  const auto B = static_cast<std::int64_t>(prompts.size());
  if (B == 0 || options.max_new_tokens == 0) return std::vector<std::vector<std::int64_t>>(prompts.size());
  std::int64_t max_len = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<std::size_t>(b)];
    CONDENSE_CHECK(!p.empty(), op, "prompt ", b, " is empty");
    for (auto t : p)
      CONDENSE_CHECK(t >= 0 && t < model.vocab_size(), op, "token ", t, " of prompt ", b, " out of range [0, ",
                     model.vocab_size(), ")");
    max_len = std::max<std::int64_t>(max_len, static_cast<std::int64_t>(p.size()));
  }
  const std::int64_t total = max_len + options.max_new_tokens;
  // Left padding: row b starts with pad[b] pad tokens, masked out as keys by `keep`.
  std::vector<std::int64_t> ids(static_cast<std::size_t>(B * max_len), options.pad_token);
  std::vector<std::int64_t> pos(static_cast<std::size_t>(B * max_len), 0);
  std::vector<std::int64_t> next_pos(static_cast<std::size_t>(B));
  Tensor<bool> keep = Tensor<bool>::empty({B, total});
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<std::size_t>(b)];
    const std::int64_t n = static_cast<std::int64_t>(p.size()), pad = max_len - n;
    for (std::int64_t t = 0; t < n; ++t) {
      ids[static_cast<std::size_t>(b * max_len + pad + t)] = p[static_cast<std::size_t>(t)];
      pos[static_cast<std::size_t>(b * max_len + pad + t)] = t;
    }
    for (std::int64_t k = 0; k < total; ++k) keep.data()[b * total + k] = k >= pad;
    next_pos[static_cast<std::size_t>(b)] = n;
  }
  CONDENSE_CHECK(total <= std::numeric_limits<int>::max() && B <= std::numeric_limits<int>::max(), op,
                 "batch or length too large for the mask policies");
  const Tensor<bool> keep_on_device = keep.to(model.device());  // the policy reads it where attention runs
  const mask::Pruned policy(keep_on_device.data(), static_cast<int>(B), static_cast<int>(total));

  NoGradGuard no_grad;
  KVCache<T> cache(model.num_layers());
  cache.reserve(total);
  const auto last_logits = [&](const Tensor<T>& hidden) {
    return model.logits(hidden.narrow(1, hidden.size(1) - 1, 1)).squeeze(1);
  };
  ForwardOptions<T> prefill;
  prefill.cache = &cache;
  prefill.positions = from_vector<std::int64_t>(pos, {B, max_len});
  const Tensor<T> first = last_logits(model.hidden_states(from_vector<std::int64_t>(ids, {B, max_len}), policy, prefill));
  return detail::decode_loop<T>(first, next_pos, options, gen,
                                [&](const Tensor<std::int64_t>& step_ids, const Tensor<std::int64_t>& step_pos) {
                                  ForwardOptions<T> o;
                                  o.cache = &cache;
                                  o.positions = step_pos;
                                  return last_logits(model.hidden_states(step_ids, policy, o));
                                });
}

/// Generates up to max_new_tokens target tokens for each source with an encoder-decoder
/// model, starting every row from `start_token`. Sources may differ in length (non-empty;
/// right-padded with pad_token and masked by KeyPadding in the encoder and in
/// cross-attention; the models' own EncoderMask / CrossMask are not used). Returns the
/// generated tokens of each row (without the start token). Runs without recording gradients.
template <class Model>
std::vector<std::vector<std::int64_t>> generate_seq2seq(const Model& model,
                                                        const std::vector<std::vector<std::int64_t>>& sources,
                                                        std::int64_t start_token, const GenerateOptions& options,
                                                        Generator& gen) {
  using T = typename Model::value_type;
  constexpr const char* op = "generate";
  detail::check_generate_options(op, options, model.vocab_size());
  CONDENSE_CHECK(start_token >= 0 && start_token < model.vocab_size(), op, "start_token ", start_token,
                 " out of range [0, ", model.vocab_size(), ")");
  const auto B = static_cast<std::int64_t>(sources.size());
  if (B == 0 || options.max_new_tokens == 0) return std::vector<std::vector<std::int64_t>>(sources.size());
  std::int64_t max_len = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& s = sources[static_cast<std::size_t>(b)];
    CONDENSE_CHECK(!s.empty(), op, "source ", b, " is empty");
    for (auto t : s)
      CONDENSE_CHECK(t >= 0 && t < model.vocab_size(), op, "token ", t, " of source ", b, " out of range [0, ",
                     model.vocab_size(), ")");
    max_len = std::max<std::int64_t>(max_len, static_cast<std::int64_t>(s.size()));
  }
  CONDENSE_CHECK(max_len <= std::numeric_limits<int>::max() && B <= std::numeric_limits<int>::max(), op,
                 "batch or length too large for the mask policies");
  std::vector<std::int64_t> ids(static_cast<std::size_t>(B * max_len), options.pad_token);
  std::vector<std::int32_t> lengths(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& s = sources[static_cast<std::size_t>(b)];
    std::copy(s.begin(), s.end(), ids.begin() + b * max_len);
    lengths[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(s.size());
  }
  const Tensor<std::int32_t> lengths_on_device =
      from_vector<std::int32_t>(lengths, {B}, model.device());  // the policy reads it where attention runs
  const mask::KeyPadding padding(lengths_on_device.data(), static_cast<int>(B));

  NoGradGuard no_grad;
  const Tensor<T> states = model.encode(from_vector<std::int64_t>(ids, {B, max_len}), padding);
  KVCache<T> cache(model.num_layers());
  cache.reserve(options.max_new_tokens);
  const auto step = [&](const Tensor<std::int64_t>& step_ids, const Tensor<std::int64_t>& step_pos) {
    ForwardOptions<T> o;
    o.cache = &cache;
    o.positions = step_pos;
    return model.logits(model.decode_hidden(step_ids, states, mask::Causal{}, padding, o)).squeeze(1);
  };
  const Tensor<std::int64_t> start = full<std::int64_t>({B, 1}, start_token);
  const Tensor<std::int64_t> start_pos = zeros<std::int64_t>({B, 1});
  const Tensor<T> first = step(start, start_pos);
  return detail::decode_loop<T>(first, std::vector<std::int64_t>(static_cast<std::size_t>(B), 1), options, gen, step);
}

}  // namespace condense::nn
