// Gist caching: compressing instructions into the K/V of their gist tokens and answering
// inputs from that cache. A gisting prompt is [bos] instruction, k gist tokens, input,
// output; under the gist masks every token after the gist span reaches the instruction only
// through the gist tokens, so once the prefix ([bos] instruction + gist tokens) has been run,
// the gist tokens' per-layer keys/values are the whole compressed instruction.
//
// Decoder family (DecoderLM under mask::Gist): GistCache holds, per decoder layer, the K/V
// [B, Hkv, k, Dh] of each row's gist tokens (after rope) and each row's position g1_b after
// its span. compress_instructions() builds it; forward_from_gist() gives the logits of
// continuation tokens at positions g1_b + j, causal over [gist ; new tokens], equal to the
// full forward under the Gist mask; generate_from_gist() decodes greedily or by sampling.
//
// Encoder-decoder family (encoder under mask::GistBidirectional, cross-attention under
// mask::GistCross): prefix tokens never see the input, so GistEncoderCache holds, per encoder
// layer, the K/V of the gist tokens plus their final encoder states. encode_from_gist() runs
// the input against the cached gist K/V (positions g1_b + j) and returns the encoder states
// of [gist ; input] with the key lengths for cross-attention; decode_from_gist() decodes
// from them, equal to the full model under the gist masks.
//
// Both caches save to and load from safetensors files ("layers.<i>.k", "layers.<i>.v",
// "next_position" [B] int64, and "states" [B, k, d] for the encoder cache; metadata
// "format", "num_layers", "num_gist"), validated on load.
#pragma once

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/core/error.hpp"
#include "condense/core/factories.hpp"
#include "condense/core/random.hpp"
#include "condense/core/tensor.hpp"
#include "condense/io/any_tensor.hpp"
#include "condense/io/safetensors.hpp"
#include "condense/mask/basic.hpp"
#include "condense/mask/gist.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/encoder_decoder.hpp"
#include "condense/nn/generate.hpp"
#include "condense/nn/kv_cache.hpp"
#include "condense/ops/indexing.hpp"

namespace condense::nn {

/// Compressed instructions of a batch for a decoder-only model: per decoder layer the K/V
/// of each row's k gist tokens ([B, Hkv, k, Dh], after rope, so they keep the positions
/// g0_b .. g1_b - 1 they were computed at), and each row's absolute position after its gist
/// span. Move-only (like KVCache); clone() makes a deep copy.
template <DifferentiableElement T>
struct GistCache {
  KVCache<T> kv;                            ///< per decoder layer k/v [B, Hkv, k, Dh]
  std::vector<std::int64_t> next_position;  ///< [B]: g1_b, the position of the first token after the span
  std::int64_t num_gist = 0;                ///< k, gist tokens per row

  /// Rows B.
  std::int64_t batch() const { return static_cast<std::int64_t>(next_position.size()); }
  /// Cached layers.
  std::int64_t num_layers() const { return kv.num_layers(); }
  /// Bytes of the stored K/V tensors: layers * 2 * B * Hkv * k * Dh * sizeof(T). The B
  /// int64 positions (bookkeeping) are not counted.
  std::size_t bytes() const {
    std::size_t total = 0;
    for (std::int64_t i = 0; i < kv.num_layers(); ++i) {
      const LayerKV<T>& l = kv.layer(i);
      if (l.defined()) total += 2 * static_cast<std::size_t>(l.keys().numel()) * sizeof(T);
    }
    return total;
  }
  /// A deep copy.
  GistCache clone() const {
    GistCache out;
    out.kv = kv.clone();
    out.next_position = next_position;
    out.num_gist = num_gist;
    return out;
  }
  /// A copy on `device` (e.g. a cache loaded from a file, for a model on the GPU).
  GistCache to(Device device) const {
    GistCache out;
    out.kv = kv.to(device);
    out.next_position = next_position;
    out.num_gist = num_gist;
    return out;
  }
  /// The rows `rows` (in that order; repeats allowed, e.g. {0, 0, 0} to answer three
  /// inputs from the instruction of row 0).
  GistCache select_rows(const std::vector<std::int64_t>& rows) const {
    for (auto r : rows) CONDENSE_CHECK(r >= 0 && r < batch(), "gist_cache", "row ", r, " out of range for a cache of ", batch(), " rows");
    GistCache out;
    out.kv = kv.select_rows(rows);
    for (auto r : rows) out.next_position.push_back(next_position[static_cast<std::size_t>(r)]);
    out.num_gist = num_gist;
    return out;
  }
};

/// Compressed instructions of a batch for an encoder-decoder model: per encoder layer the
/// K/V of each row's k gist tokens ([B, Hkv, k, Dh], after rope), the final encoder states
/// of the gist tokens ([B, k, d], read by cross-attention), and each row's position after
/// its gist span. Move-only; clone() makes a deep copy.
template <DifferentiableElement T>
struct GistEncoderCache {
  KVCache<T> kv;                            ///< per encoder layer k/v [B, Hkv, k, Dh]
  Tensor<T> states;                         ///< [B, k, d]: final encoder states of the gist tokens
  std::vector<std::int64_t> next_position;  ///< [B]: g1_b
  std::int64_t num_gist = 0;                ///< k

  /// Rows B.
  std::int64_t batch() const { return static_cast<std::int64_t>(next_position.size()); }
  /// Cached encoder layers.
  std::int64_t num_layers() const { return kv.num_layers(); }
  /// Bytes of the stored tensors: layers * 2 * B * Hkv * k * Dh * sizeof(T) for the K/V
  /// plus B * k * d * sizeof(T) for the gist states (positions not counted).
  std::size_t bytes() const {
    std::size_t total = states.defined() ? static_cast<std::size_t>(states.numel()) * sizeof(T) : 0;
    for (std::int64_t i = 0; i < kv.num_layers(); ++i) {
      const LayerKV<T>& l = kv.layer(i);
      if (l.defined()) total += 2 * static_cast<std::size_t>(l.keys().numel()) * sizeof(T);
    }
    return total;
  }
  /// A deep copy.
  GistEncoderCache clone() const {
    GistEncoderCache out;
    out.kv = kv.clone();
    out.states = states.defined() ? states.detach().clone() : Tensor<T>();
    out.next_position = next_position;
    out.num_gist = num_gist;
    return out;
  }
  /// A copy on `device` (e.g. a cache loaded from a file, for a model on the GPU).
  GistEncoderCache to(Device device) const {
    GistEncoderCache out;
    out.kv = kv.to(device);
    out.states = states.defined() ? states.detach().contiguous().to(device) : Tensor<T>();
    out.next_position = next_position;
    out.num_gist = num_gist;
    return out;
  }
  /// The rows `rows` (in that order; repeats allowed).
  GistEncoderCache select_rows(const std::vector<std::int64_t>& rows) const {
    for (auto r : rows) CONDENSE_CHECK(r >= 0 && r < batch(), "gist_cache", "row ", r, " out of range for a cache of ", batch(), " rows");
    GistEncoderCache out;
    out.kv = kv.select_rows(rows);
    out.states = index_select(states, 0, from_vector<std::int64_t>(rows, {static_cast<std::int64_t>(rows.size())}));
    for (auto r : rows) out.next_position.push_back(next_position[static_cast<std::size_t>(r)]);
    out.num_gist = num_gist;
    return out;
  }
};

/// Encoder states of [gist ; input] (encode_from_gist's result) and the number of valid
/// keys per row (k + input length) that cross-attention may read.
template <DifferentiableElement T>
struct GistEncoding {
  Tensor<T> states;                      ///< [B, k + S, d]
  std::vector<std::int32_t> key_lengths;  ///< [B]: k + n_b
  /// key_lengths on the states' device when that is a GPU (the mask must read device memory).
  Tensor<std::int32_t> device_key_lengths;
  /// The cross-attention mask of these states (points into key_lengths, or into
  /// device_key_lengths when set: keep this alive).
  mask::KeyPadding cross_mask() const {
    const std::int32_t* lengths = device_key_lengths.defined() ? device_key_lengths.data() : key_lengths.data();
    return mask::KeyPadding(lengths, static_cast<int>(key_lengths.size()));
  }
};

namespace detail {

inline constexpr const char* gist_op = "gist_cache";
inline constexpr const char* gist_format = "condense.gist_cache";
inline constexpr const char* gist_encoder_format = "condense.gist_encoder_cache";

/// Checks per-row gist spans of a [B, P] prefix batch: 2B entries, 0 <= g0 < g1 <= P and
/// the same k = g1 - g0 in every row. Returns k.
inline std::int64_t check_gist_spans(const std::vector<std::int32_t>& spans, std::int64_t B, std::int64_t P) {
  CONDENSE_CHECK(static_cast<std::int64_t>(spans.size()) == 2 * B, gist_op, "gist_spans must hold 2 * B = ", 2 * B,
                 " entries (g0, g1 per row), got ", spans.size());
  CONDENSE_CHECK(B > 0 && B <= INT_MAX && P <= INT_MAX, gist_op, "batch ", B, " or prefix length ", P,
                 " out of range for the mask policies");
  std::int64_t k = -1;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t g0 = spans[static_cast<std::size_t>(2 * b)], g1 = spans[static_cast<std::size_t>(2 * b + 1)];
    CONDENSE_CHECK(g0 >= 0 && g0 < g1 && g1 <= P, gist_op, "row ", b, " has gist span [", g0, ", ", g1,
                   ") outside a prefix of length ", P, " (need 0 <= g0 < g1 <= P)");
    if (k < 0) k = g1 - g0;
    CONDENSE_CHECK(g1 - g0 == k, gist_op, "every row needs the same number of gist tokens: row 0 has ", k, ", row ", b,
                   " has ", g1 - g0);
  }
  return k;
}

/// Row b of `t` narrowed to [g0_b, g0_b + k) along `dim`, stacked over rows (contiguous).
// t: [B, ..., P, ...] -> [B, ..., k, ...]
template <DifferentiableElement T>
Tensor<T> gather_spans(const Tensor<T>& t, std::int64_t dim, const std::vector<std::int32_t>& spans, std::int64_t k) {
  std::vector<Tensor<T>> rows;
  for (std::int64_t b = 0; b < t.size(0); ++b)
    rows.push_back(t.narrow(0, b, 1).narrow(dim, spans[static_cast<std::size_t>(2 * b)], k));
  return cat(rows, 0).detach().contiguous();
}

/// The per-layer gist K/V of a prefix cache, as a new cache of length k.
template <DifferentiableElement T>
KVCache<T> gist_kv(const KVCache<T>& full, const std::vector<std::int32_t>& spans, std::int64_t k) {
  typename KVCache<T>::NamedTensors named;
  for (std::int64_t i = 0; i < full.num_layers(); ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    named.emplace_back(p + "k", gather_spans(full.layer(i).keys(), 2, spans, k));
    named.emplace_back(p + "v", gather_spans(full.layer(i).values(), 2, spans, k));
  }
  return KVCache<T>::from_named_tensors(named);
}

/// The rows of a cache of `cache_rows` rows that serve a batch of `batch` rows: empty
/// (the cache as it is) when they are equal, all zeros when the cache has one row.
inline std::vector<std::int64_t> gist_rows(std::int64_t cache_rows, std::int64_t batch) {
  if (cache_rows == batch) return {};
  CONDENSE_CHECK(cache_rows == 1, gist_op, "the cache holds ", cache_rows, " rows but the batch has ", batch,
                 " (a one-row cache serves any batch)");
  return std::vector<std::int64_t>(static_cast<std::size_t>(batch), 0);
}

/// Checks that the per-layer K/V of a cache fit attention layers with `n_kv_heads` heads
/// of `head_dim` and that the cache is consistent: `n_layers` layers of [B, Hkv, k, Dh].
template <DifferentiableElement T>
void check_gist_kv(const KVCache<T>& kv, const std::vector<std::int64_t>& next_position, std::int64_t num_gist,
                   std::int64_t n_layers, std::int64_t n_kv_heads, std::int64_t head_dim, const char* what) {
  const auto B = static_cast<std::int64_t>(next_position.size());
  CONDENSE_CHECK(kv.num_layers() == n_layers, gist_op, "the cache holds ", kv.num_layers(), " layers but the ", what,
                 " has ", n_layers);
  CONDENSE_CHECK(B > 0 && num_gist > 0, gist_op, "the cache is empty (", B, " rows, ", num_gist, " gist tokens)");
  for (std::int64_t i = 0; i < n_layers; ++i) {
    const LayerKV<T>& l = kv.layer(i);
    CONDENSE_CHECK(l.defined(), gist_op, "cache layer ", i, " holds no keys");
    const Shape want{B, n_kv_heads, num_gist, head_dim};
    CONDENSE_CHECK(l.keys().shape() == want && l.values().shape() == want, gist_op, "cache layer ", i, " holds keys ",
                   l.keys().shape(), " and values ", l.values().shape(), " but the ", what, " needs [B, Hkv, k, Dh] = ",
                   want);
  }
  for (std::int64_t b = 0; b < B; ++b)
    CONDENSE_CHECK(next_position[static_cast<std::size_t>(b)] >= num_gist, gist_op, "row ", b, " has next_position ",
                   next_position[static_cast<std::size_t>(b)], " < num_gist ", num_gist);
}

/// Checks a GistCache against a decoder-only model.
template <DifferentiableElement T, class M>
void check_gist_cache(const DecoderLM<T, M>& model, const GistCache<T>& cache) {
  const auto& attn = model.layers.empty() ? MultiHeadAttentionOptions{} : model.layers[0]->attn.options();
  check_gist_kv(cache.kv, cache.next_position, cache.num_gist, model.num_layers(), attn.n_kv_heads, attn.head_dim,
                "model");
}

/// Checks a GistEncoderCache against an encoder-decoder model.
template <DifferentiableElement T, class EM, class CM>
void check_gist_cache(const EncoderDecoder<T, EM, CM>& model, const GistEncoderCache<T>& cache) {
  const auto& layers = model.encoder.layers;
  const auto& attn = layers.empty() ? MultiHeadAttentionOptions{} : layers[0]->attn.options();
  check_gist_kv(cache.kv, cache.next_position, cache.num_gist, static_cast<std::int64_t>(layers.size()),
                attn.n_kv_heads, attn.head_dim, "model's encoder");
  const Shape want{cache.batch(), cache.num_gist, model.options().d_model};
  CONDENSE_CHECK(cache.states.defined() && cache.states.shape() == want, gist_op, "the cache's gist states are ",
                 cache.states.describe(), " but the model needs [B, k, d] = ", want);
}

/// Positions [B, T]: start[b] + j.
inline Tensor<std::int64_t> gist_positions(const std::vector<std::int64_t>& start, std::int64_t T) {
  const auto B = static_cast<std::int64_t>(start.size());
  std::vector<std::int64_t> pos(static_cast<std::size_t>(B * T));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < T; ++j) pos[static_cast<std::size_t>(b * T + j)] = start[static_cast<std::size_t>(b)] + j;
  return from_vector<std::int64_t>(pos, {B, T});
}

/// The tensors and metadata of a cache file.
template <DifferentiableElement T>
io::TensorFile gist_file(const KVCache<T>& kv, const Tensor<T>* states, const std::vector<std::int64_t>& next_position,
                         std::int64_t num_gist, const char* format) {
  io::TensorFile file;
  for (auto& [name, t] : kv.named_tensors()) file.tensors.emplace_back(name, io::AnyTensor(t));
  if (states) file.tensors.emplace_back("states", io::AnyTensor(states->detach().contiguous()));
  file.tensors.emplace_back("next_position",
                            io::AnyTensor(from_vector<std::int64_t>(next_position, {static_cast<std::int64_t>(next_position.size())})));
  file.metadata["format"] = format;
  file.metadata["num_layers"] = std::to_string(kv.num_layers());
  file.metadata["num_gist"] = std::to_string(num_gist);
  return file;
}

/// An integer metadata entry of a cache file.
inline std::int64_t gist_meta_int(const io::TensorFile& file, const std::string& key, const std::string& path) {
  const auto it = file.metadata.find(key);
  CONDENSE_CHECK(it != file.metadata.end(), gist_op, path, ": metadata '", key, "' is missing");
  std::int64_t v = -1;
  const char* b = it->second.data();
  const char* e = b + it->second.size();
  const auto [ptr, ec] = std::from_chars(b, e, v);
  CONDENSE_CHECK(ec == std::errc() && ptr == e && v >= 0, gist_op, path, ": metadata '", key, "' = '", it->second,
                 "' is not a non-negative integer");
  return v;
}

/// The parts of a cache file, validated: layer K/V all of one shape [B, Hkv, k, Dh] with
/// k == num_gist, the number of layers as recorded, next_position [B] >= k, and (for an
/// encoder cache) states [B, k, d].
template <DifferentiableElement T>
void read_gist_file(const io::TensorFile& file, const std::string& path, const char* format, KVCache<T>& kv,
                    Tensor<T>* states, std::vector<std::int64_t>& next_position, std::int64_t& num_gist) {
  const auto fmt = file.metadata.find("format");
  CONDENSE_CHECK(fmt != file.metadata.end(), gist_op, path, ": not a gist cache file (no 'format' metadata)");
  CONDENSE_CHECK(fmt->second == format, gist_op, path, ": holds format '", fmt->second, "', expected '", format, "'");
  const std::int64_t n_layers = gist_meta_int(file, "num_layers", path);
  num_gist = gist_meta_int(file, "num_gist", path);
  typename KVCache<T>::NamedTensors named;
  const Tensor<std::int64_t>* pos = nullptr;
  for (const auto& [name, any] : file.tensors) {
    if (name == "next_position") {
      pos = std::get_if<Tensor<std::int64_t>>(&any);
      CONDENSE_CHECK(pos != nullptr, gist_op, path, ": 'next_position' is ", io::describe(any), ", expected int64");
    } else if (name == "states" && states) {
      const Tensor<T>* t = std::get_if<Tensor<T>>(&any);
      CONDENSE_CHECK(t != nullptr, gist_op, path, ": 'states' is ", io::describe(any), ", expected ",
                     dtype_name(dtype_of<T>));
      *states = *t;
    } else {
      const Tensor<T>* t = std::get_if<Tensor<T>>(&any);
      CONDENSE_CHECK(t != nullptr, gist_op, path, ": tensor '", name, "' is ", io::describe(any), ", expected ",
                     dtype_name(dtype_of<T>));
      named.emplace_back(name, *t);
    }
  }
  CONDENSE_CHECK(pos != nullptr, gist_op, path, ": tensor 'next_position' is missing");
  CONDENSE_CHECK(pos->dim() == 1, gist_op, path, ": 'next_position' must be [B], got ", pos->shape());
  try {
    kv = KVCache<T>::from_named_tensors(named);
  } catch (const Error& e) {
    fail(gist_op, path, ": ", e.what());
  }
  CONDENSE_CHECK(kv.num_layers() == n_layers, gist_op, path, ": holds ", kv.num_layers(), " layers, metadata says ",
                 n_layers);
  CONDENSE_CHECK(n_layers > 0, gist_op, path, ": holds no layers");
  const Shape first = kv.layer(0).keys().shape();
  for (std::int64_t i = 0; i < n_layers; ++i)
    CONDENSE_CHECK(kv.layer(i).defined() && kv.layer(i).keys().shape() == first && !kv.layer(i).has_cross(), gist_op,
                   path, ": layer ", i, " holds keys ", kv.layer(i).keys().shape(), ", layer 0 holds ", first,
                   " (every layer must hold self-attention K/V of one shape)");
  const std::int64_t B = first[0];
  CONDENSE_CHECK(first[2] == num_gist && num_gist > 0, gist_op, path, ": layer keys ", first,
                 " hold a gist length different from num_gist = ", num_gist);
  CONDENSE_CHECK(pos->size(0) == B, gist_op, path, ": 'next_position' has ", pos->size(0), " rows, the K/V have ", B);
  const Tensor<std::int64_t> pc = pos->contiguous();
  next_position.assign(pc.data(), pc.data() + B);
  for (std::int64_t b = 0; b < B; ++b)
    CONDENSE_CHECK(next_position[static_cast<std::size_t>(b)] >= num_gist, gist_op, path, ": row ", b,
                   " has next_position ", next_position[static_cast<std::size_t>(b)], " < num_gist ", num_gist);
  if (states) {
    CONDENSE_CHECK(states->defined(), gist_op, path, ": tensor 'states' is missing");
    CONDENSE_CHECK(states->dim() == 3 && states->size(0) == B && states->size(1) == num_gist, gist_op, path,
                   ": 'states' must be [B, k, d] with B = ", B, ", k = ", num_gist, ", got ", states->shape());
  }
}

}  // namespace detail

/// Writes `cache` to `path` as safetensors (layers.<i>.k / .v, next_position; metadata
/// format "condense.gist_cache", num_layers, num_gist).
template <DifferentiableElement T>
void save_gist_cache(const GistCache<T>& cache, const std::string& path) {
  io::save_safetensors(path, detail::gist_file<T>(cache.kv, nullptr, cache.next_position, cache.num_gist,
                                                  detail::gist_format));
}

/// Writes `cache` to `path` as safetensors (as save_gist_cache, plus "states"; format
/// "condense.gist_encoder_cache").
template <DifferentiableElement T>
void save_gist_cache(const GistEncoderCache<T>& cache, const std::string& path) {
  io::save_safetensors(path, detail::gist_file<T>(cache.kv, &cache.states, cache.next_position, cache.num_gist,
                                                  detail::gist_encoder_format));
}

/// Reads a GistCache saved by save_gist_cache. Throws condense::Error naming the file when
/// it is not a gist cache of element type T or its tensors disagree (missing layers or
/// tensors, layers of different shapes, a gist length other than num_gist, next_position
/// of the wrong size).
template <DifferentiableElement T>
GistCache<T> load_gist_cache(const std::string& path) {
  GistCache<T> out;
  detail::read_gist_file<T>(io::load_safetensors(path), path, detail::gist_format, out.kv, nullptr, out.next_position,
                            out.num_gist);
  return out;
}

/// Reads a GistCache and checks that it fits `model` (layers, K/V heads, head dim).
template <DifferentiableElement T, class M>
GistCache<T> load_gist_cache(const std::string& path, const DecoderLM<T, M>& model) {
  GistCache<T> out = load_gist_cache<T>(path);
  detail::check_gist_cache(model, out);
  return out;
}

/// Reads a GistEncoderCache saved by save_gist_cache (validated as load_gist_cache, plus
/// the gist states [B, k, d]).
template <DifferentiableElement T>
GistEncoderCache<T> load_gist_encoder_cache(const std::string& path) {
  GistEncoderCache<T> out;
  detail::read_gist_file<T>(io::load_safetensors(path), path, detail::gist_encoder_format, out.kv, &out.states,
                            out.next_position, out.num_gist);
  return out;
}

/// Reads a GistEncoderCache and checks that it fits `model`.
template <DifferentiableElement T, class EM, class CM>
GistEncoderCache<T> load_gist_encoder_cache(const std::string& path, const EncoderDecoder<T, EM, CM>& model) {
  GistEncoderCache<T> out = load_gist_encoder_cache<T>(path);
  detail::check_gist_cache(model, out);
  return out;
}

/// Runs prefixes ([bos] instruction + k gist tokens, right-padded to [B, P]; row b's gist
/// span [g0_b, g1_b), all of one length k) through a DecoderLM under mask::Gist and keeps
/// only the gist K/V of every row. Runs without recording gradients.
// prefix_ids: [B, P] (int64), gist_spans: [B * 2] (g0, g1 per row) -> per layer [B, Hkv, k, Dh]
template <DifferentiableElement T, class M>
GistCache<T> compress_instructions(const DecoderLM<T, M>& model, const Tensor<std::int64_t>& prefix_ids,
                                   const std::vector<std::int32_t>& gist_spans) {
  detail::check_ids(detail::gist_op, prefix_ids);
  const std::int64_t B = prefix_ids.size(0);
  const std::int64_t k = detail::check_gist_spans(gist_spans, B, prefix_ids.size(1));
  std::int64_t used = 0;  // columns past every span are not needed
  for (std::int64_t b = 0; b < B; ++b) used = std::max<std::int64_t>(used, gist_spans[static_cast<std::size_t>(2 * b + 1)]);
  NoGradGuard no_grad;
  KVCache<T> full(model.num_layers());
  ForwardOptions<T> o;
  o.cache = &full;
  const Tensor<std::int32_t> spans = from_vector<std::int32_t>(gist_spans, {2 * B}, model.device());  // read by the mask
  model.hidden_states(prefix_ids.narrow(1, 0, used), mask::Gist(spans.data(), static_cast<int>(B)), o);
  GistCache<T> out;
  out.kv = detail::gist_kv(full, gist_spans, k);
  out.num_gist = k;
  for (std::int64_t b = 0; b < B; ++b) out.next_position.push_back(gist_spans[static_cast<std::size_t>(2 * b + 1)]);
  return out;
}

/// Logits of continuation tokens (input, output; right-padded) read against the cache: row
/// b's token j sits at position next_position[b] + j and attends causally over [gist ;
/// tokens], exactly as in the full forward under mask::Gist. A one-row cache serves any
/// batch. The cache is not modified. With `extend`, the K/V of this call are appended
/// there instead of to a temporary copy: an empty `extend` starts as a copy of the cache,
/// a non-empty one continues (its tokens after the gist keep counting positions), which
/// lets a caller run its own decoding loop.
// ids: [B, T] (int64) -> [B, T, V]
template <DifferentiableElement T, class M>
Tensor<T> forward_from_gist(const DecoderLM<T, M>& model, const GistCache<T>& cache, const Tensor<std::int64_t>& ids,
                            KVCache<T>* extend = nullptr) {
  detail::check_ids(detail::gist_op, ids);
  detail::check_gist_cache(model, cache);
  const std::int64_t B = ids.size(0), L = ids.size(1);
  const std::vector<std::int64_t> rows = detail::gist_rows(cache.batch(), B);
  KVCache<T> local;
  KVCache<T>* work = extend ? extend : &local;
  std::int64_t done = 0;  // tokens after the gist already in *work
  if (work->num_layers() == 0 || work->empty()) {
    *work = rows.empty() ? cache.kv.clone() : cache.kv.select_rows(rows);
  } else {
    CONDENSE_CHECK(work->batch_size() == B && work->length() >= cache.num_gist, detail::gist_op,
                   "the cache to extend holds [B, L] = [", work->batch_size(), ", ", work->length(),
                   "], expected B = ", B, " and L >= num_gist = ", cache.num_gist);
    done = work->length() - cache.num_gist;
  }
  std::vector<std::int64_t> start(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b)
    start[static_cast<std::size_t>(b)] = cache.next_position[static_cast<std::size_t>(rows.empty() ? b : 0)] + done;
  ForwardOptions<T> o;
  o.cache = work;
  o.positions = detail::gist_positions(start, L);
  return model.forward(ids, mask::Causal{}, o);
}

/// Answers inputs from compressed instructions with a decoder-only model: row b decodes
/// inputs[b] (non-empty) after the gist tokens of cache row b (or of the only row of a
/// one-row cache), up to options.max_new_tokens new tokens, greedy or sampled as in
/// generate(). Inputs of different lengths are left-padded: row b's input tokens sit at
/// positions next_position[b] + j and a mask::Pruned keep bitmap hides the pad keys, so
/// every row decodes exactly as it would alone (and as the full prompt under mask::Gist).
/// Returns the new tokens of each row. Runs without recording gradients; the cache is not
/// modified.
template <DifferentiableElement T, class M>
std::vector<std::vector<std::int64_t>> generate_from_gist(const DecoderLM<T, M>& model, const GistCache<T>& cache,
                                                          const std::vector<std::vector<std::int64_t>>& inputs,
                                                          const GenerateOptions& options, Generator& gen) {
  constexpr const char* op = detail::gist_op;
  detail::check_generate_options(op, options, model.vocab_size());
  detail::check_gist_cache(model, cache);
  const auto B = static_cast<std::int64_t>(inputs.size());
  if (B == 0 || options.max_new_tokens == 0) return std::vector<std::vector<std::int64_t>>(inputs.size());
  const std::vector<std::int64_t> rows = detail::gist_rows(cache.batch(), B);
  std::int64_t max_len = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& in = inputs[static_cast<std::size_t>(b)];
    CONDENSE_CHECK(!in.empty(), op, "input ", b, " is empty (the first new token is predicted from the input's last token)");
    for (auto t : in)
      CONDENSE_CHECK(t >= 0 && t < model.vocab_size(), op, "token ", t, " of input ", b, " out of range [0, ",
                     model.vocab_size(), ")");
    max_len = std::max<std::int64_t>(max_len, static_cast<std::int64_t>(in.size()));
  }
  const std::int64_t k = cache.num_gist;
  const std::int64_t keys = k + max_len + options.max_new_tokens;  // [gist ; padded input ; generated]
  CONDENSE_CHECK(keys <= std::numeric_limits<int>::max() && B <= std::numeric_limits<int>::max(), op,
                 "batch or length too large for the mask policies");
  std::vector<std::int64_t> ids(static_cast<std::size_t>(B * max_len), options.pad_token);
  std::vector<std::int64_t> pos(static_cast<std::size_t>(B * max_len), 0);
  std::vector<std::int64_t> next_pos(static_cast<std::size_t>(B));
  Tensor<bool> keep = Tensor<bool>::empty({B, keys});
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& in = inputs[static_cast<std::size_t>(b)];
    const std::int64_t n = static_cast<std::int64_t>(in.size()), pad = max_len - n;
    const std::int64_t g1 = cache.next_position[static_cast<std::size_t>(rows.empty() ? b : 0)];
    for (std::int64_t t = 0; t < max_len; ++t) {
      const auto i = static_cast<std::size_t>(b * max_len + t);
      if (t >= pad) ids[i] = in[static_cast<std::size_t>(t - pad)];
      pos[i] = t >= pad ? g1 + t - pad : g1;  // pads: any valid position (their keys are hidden)
    }
    for (std::int64_t j = 0; j < keys; ++j) keep.data()[b * keys + j] = j < k || j >= k + pad;
    next_pos[static_cast<std::size_t>(b)] = g1 + n;
  }
  const Tensor<bool> keep_on_device = keep.to(model.device());  // the policy reads it where attention runs
  const mask::Pruned policy(keep_on_device.data(), static_cast<int>(B), static_cast<int>(keys));

  NoGradGuard no_grad;
  KVCache<T> work = rows.empty() ? cache.kv.clone() : cache.kv.select_rows(rows);
  work.reserve(keys);
  const auto last_logits = [&](const Tensor<T>& hidden) {
    return model.logits(hidden.narrow(1, hidden.size(1) - 1, 1)).squeeze(1);
  };
  ForwardOptions<T> prefill;
  prefill.cache = &work;
  prefill.positions = from_vector<std::int64_t>(pos, {B, max_len});
  const Tensor<T> first = last_logits(model.hidden_states(from_vector<std::int64_t>(ids, {B, max_len}), policy, prefill));
  return detail::decode_loop<T>(first, next_pos, options, gen,
                                [&](const Tensor<std::int64_t>& step_ids, const Tensor<std::int64_t>& step_pos) {
                                  ForwardOptions<T> o;
                                  o.cache = &work;
                                  o.positions = step_pos;
                                  return last_logits(model.hidden_states(step_ids, policy, o));
                                });
}

/// Greedy shorthand: up to `max_new_tokens` per row, stopping a row after `stop_token`
/// (kept in the output; a negative stop_token never stops).
template <DifferentiableElement T, class M>
std::vector<std::vector<std::int64_t>> generate_from_gist(const DecoderLM<T, M>& model, const GistCache<T>& cache,
                                                          const std::vector<std::vector<std::int64_t>>& inputs,
                                                          std::int64_t max_new_tokens, std::int64_t stop_token = -1) {
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  if (stop_token >= 0) o.stop_tokens = {stop_token};
  Generator unused(0);  // greedy decoding draws nothing
  return generate_from_gist(model, cache, inputs, o, unused);
}

/// Runs prefixes (instruction + k gist tokens, right-padded to [B, P]; spans as in the
/// decoder version) through the encoder of an EncoderDecoder under
/// mask::GistBidirectional and keeps every encoder layer's gist K/V and the final encoder
/// states of the gist tokens. Prefix tokens see only the prefix under that mask, so the
/// padding after g1_b changes nothing. Runs without recording gradients.
// prefix_ids: [B, P] (int64), gist_spans: [B * 2] -> per encoder layer [B, Hkv, k, Dh], states [B, k, d]
template <DifferentiableElement T, class EM, class CM>
GistEncoderCache<T> compress_instructions(const EncoderDecoder<T, EM, CM>& model, const Tensor<std::int64_t>& prefix_ids,
                                          const std::vector<std::int32_t>& gist_spans) {
  detail::check_ids(detail::gist_op, prefix_ids);
  const std::int64_t B = prefix_ids.size(0);
  const std::int64_t k = detail::check_gist_spans(gist_spans, B, prefix_ids.size(1));
  std::int64_t used = 0;
  for (std::int64_t b = 0; b < B; ++b) used = std::max<std::int64_t>(used, gist_spans[static_cast<std::size_t>(2 * b + 1)]);
  NoGradGuard no_grad;
  KVCache<T> full(static_cast<std::int64_t>(model.encoder.layers.size()));
  const Tensor<std::int32_t> spans = from_vector<std::int32_t>(gist_spans, {2 * B}, model.device());  // read by the mask
  const Tensor<T> states = model.encoder.forward(model.embed(prefix_ids.narrow(1, 0, used)),
                                                 mask::GistBidirectional(spans.data(), static_cast<int>(B)), {}, &full);
  GistEncoderCache<T> out;
  out.kv = detail::gist_kv(full, gist_spans, k);
  out.states = detail::gather_spans(states, 1, gist_spans, k);
  out.num_gist = k;
  for (std::int64_t b = 0; b < B; ++b) out.next_position.push_back(gist_spans[static_cast<std::size_t>(2 * b + 1)]);
  return out;
}

/// Encoder states of [gist ; input] for inputs right-padded to [B, S] (row b's valid length
/// lengths[b]; empty `lengths`: every row has S): the input tokens sit at positions
/// next_position[b] + j and attend to the cached gist K/V and to the valid input tokens,
/// exactly as under mask::GistBidirectional in the full encoder (with key padding). The
/// states of the gist tokens come from the cache. A one-row cache serves any batch; the
/// cache is not modified.
// ids: [B, S] (int64) -> states [B, k + S, d], key_lengths [B] = k + lengths[b]
template <DifferentiableElement T, class EM, class CM>
GistEncoding<T> encode_from_gist(const EncoderDecoder<T, EM, CM>& model, const GistEncoderCache<T>& cache,
                                 const Tensor<std::int64_t>& ids, const std::vector<std::int64_t>& lengths = {}) {
  constexpr const char* op = detail::gist_op;
  detail::check_ids(op, ids);
  detail::check_gist_cache(model, cache);
  const std::int64_t B = ids.size(0), S = ids.size(1), k = cache.num_gist;
  CONDENSE_CHECK(lengths.empty() || static_cast<std::int64_t>(lengths.size()) == B, op, "lengths must hold B = ", B,
                 " entries, got ", lengths.size());
  CONDENSE_CHECK(k + S <= INT_MAX && B <= INT_MAX, op, "batch or length too large for the mask policies");
  const std::vector<std::int64_t> rows = detail::gist_rows(cache.batch(), B);
  GistEncoding<T> out;
  std::vector<std::int64_t> start(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t n = lengths.empty() ? S : lengths[static_cast<std::size_t>(b)];
    CONDENSE_CHECK(n >= 0 && n <= S, op, "length ", n, " of row ", b, " outside [0, ", S, "]");
    out.key_lengths.push_back(static_cast<std::int32_t>(k + n));
    start[static_cast<std::size_t>(b)] = cache.next_position[static_cast<std::size_t>(rows.empty() ? b : 0)];
  }
  if (cache.states.device().is_cuda())
    out.device_key_lengths = from_vector<std::int32_t>(out.key_lengths, {B}, cache.states.device());
  KVCache<T> work = rows.empty() ? cache.kv.clone() : cache.kv.select_rows(rows);
  // Keys are [gist ; input]: each row sees its gist keys and valid input keys.
  const Tensor<T> input_states = model.encoder.forward(model.embed(ids), out.cross_mask(),
                                                       detail::gist_positions(start, S), &work);
  const Tensor<T> gist_states =
      rows.empty() ? cache.states
                   : index_select(cache.states, 0, from_vector<std::int64_t>(rows, {static_cast<std::int64_t>(B)}));
  out.states = cat({gist_states, input_states}, 1);
  return out;
}

/// Logits of decoder targets [B, T] over encode_from_gist's states: a causal decoder whose
/// cross-attention reads the gist states and the valid input states (equal to the full
/// model's decode under mask::GistCross). `opts` as in EncoderDecoder::decode (a cache
/// there keeps the cross K/V of these states).
// ids: [B, T] (int64) -> [B, T, V]
template <DifferentiableElement T, class EM, class CM>
Tensor<T> decode_from_gist(const EncoderDecoder<T, EM, CM>& model, const GistEncoding<T>& encoding,
                           const Tensor<std::int64_t>& ids, const ForwardOptions<T>& opts = {}) {
  CONDENSE_CHECK(encoding.states.defined() && static_cast<std::int64_t>(encoding.key_lengths.size()) == encoding.states.size(0),
                 detail::gist_op, "the encoding holds states ", encoding.states.describe(), " and ",
                 encoding.key_lengths.size(), " key lengths");
  return model.decode(ids, encoding.states, encoding.cross_mask(), opts);
}

/// Answers inputs from compressed instructions with an encoder-decoder model: encodes the
/// inputs (right-padded, non-empty) against the cache, then decodes every row from
/// `start_token` as generate_seq2seq() does. Returns the generated tokens of each row.
/// Runs without recording gradients.
template <DifferentiableElement T, class EM, class CM>
std::vector<std::vector<std::int64_t>> generate_from_gist(const EncoderDecoder<T, EM, CM>& model,
                                                          const GistEncoderCache<T>& cache,
                                                          const std::vector<std::vector<std::int64_t>>& inputs,
                                                          std::int64_t start_token, const GenerateOptions& options,
                                                          Generator& gen) {
  constexpr const char* op = detail::gist_op;
  detail::check_generate_options(op, options, model.vocab_size());
  CONDENSE_CHECK(start_token >= 0 && start_token < model.vocab_size(), op, "start_token ", start_token,
                 " out of range [0, ", model.vocab_size(), ")");
  const auto B = static_cast<std::int64_t>(inputs.size());
  if (B == 0 || options.max_new_tokens == 0) return std::vector<std::vector<std::int64_t>>(inputs.size());
  std::int64_t max_len = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& in = inputs[static_cast<std::size_t>(b)];
    CONDENSE_CHECK(!in.empty(), op, "input ", b, " is empty");
    for (auto t : in)
      CONDENSE_CHECK(t >= 0 && t < model.vocab_size(), op, "token ", t, " of input ", b, " out of range [0, ",
                     model.vocab_size(), ")");
    max_len = std::max<std::int64_t>(max_len, static_cast<std::int64_t>(in.size()));
  }
  std::vector<std::int64_t> ids(static_cast<std::size_t>(B * max_len), options.pad_token);
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& in = inputs[static_cast<std::size_t>(b)];
    std::copy(in.begin(), in.end(), ids.begin() + b * max_len);
    lengths[static_cast<std::size_t>(b)] = static_cast<std::int64_t>(in.size());
  }
  NoGradGuard no_grad;
  const GistEncoding<T> enc = encode_from_gist(model, cache, from_vector<std::int64_t>(ids, {B, max_len}), lengths);
  const mask::KeyPadding cross = enc.cross_mask();
  KVCache<T> work(model.num_layers());
  work.reserve(options.max_new_tokens);
  const auto step = [&](const Tensor<std::int64_t>& step_ids, const Tensor<std::int64_t>& step_pos) {
    ForwardOptions<T> o;
    o.cache = &work;
    o.positions = step_pos;
    return model.logits(model.decode_hidden(step_ids, enc.states, mask::Causal{}, cross, o)).squeeze(1);
  };
  const Tensor<T> first = step(full<std::int64_t>({B, 1}, start_token), zeros<std::int64_t>({B, 1}));
  return detail::decode_loop<T>(first, std::vector<std::int64_t>(static_cast<std::size_t>(B), 1), options, gen, step);
}

}  // namespace condense::nn
