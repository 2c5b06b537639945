// The key/value cache of incremental decoding. LayerKV holds one attention layer's keys and
// values [B, Hkv, L, Dh] (post-RoPE, so a cached prefix keeps the positions it was
// computed at) in a buffer with spare capacity, so appending a token copies only the new
// rows (amortised growth by doubling); it also holds the cross-attention keys/values of
// encoder states, computed once. KVCache is the per-layer list with whole-cache
// operations (clone, truncate, select_rows) and the named-tensor form used to save it.
//
// Autograd: with grad mode on and keys/values that require grad, append concatenates
// (the cache then carries the graph, so a loss can back-propagate into the cached prefix);
// otherwise it writes into the buffer in place without recording anything.
#pragma once

#include <charconv>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/core/error.hpp"
#include "condense/core/factories.hpp"
#include "condense/core/tensor.hpp"
#include "condense/ops/indexing.hpp"

namespace condense::nn {

/// Keys and values of one attention layer: self-attention K/V [B, Hkv, L, Dh] with spare
/// capacity along L, and optional cross-attention K/V [B, Hkv, S, Dh] of encoder states.
/// Move-only (a copy would share the buffer); use clone() for a deep copy.
template <DifferentiableElement T>
class LayerKV {
 public:
  LayerKV() = default;
  LayerKV(LayerKV&&) noexcept = default;
  LayerKV& operator=(LayerKV&&) noexcept = default;
  LayerKV(const LayerKV&) = delete;
  LayerKV& operator=(const LayerKV&) = delete;

  /// Number of cached positions L.
  std::int64_t length() const { return len_; }
  /// Positions the buffer holds before it must grow (0 before the first append).
  std::int64_t capacity() const { return k_.defined() ? k_.size(2) : 0; }
  /// True once keys were appended or assigned (possibly truncated to length 0 since).
  bool defined() const { return k_.defined(); }
  /// Batch size B (0 before the first append).
  std::int64_t batch_size() const { return k_.defined() ? k_.size(0) : 0; }
  /// True when the cached keys carry autograd history.
  bool has_graph() const { return graph_; }

  /// The cached keys, a view of the buffer (undefined before the first append).
  // -> [B, Hkv, L, Dh]
  Tensor<T> keys() const { return k_.defined() ? k_.narrow(2, 0, len_) : Tensor<T>(); }
  /// The cached values, a view of the buffer (undefined before the first append).
  // -> [B, Hkv, L, Dh]
  Tensor<T> values() const { return v_.defined() ? v_.narrow(2, 0, len_) : Tensor<T>(); }

  /// Appends new keys and values after the cached ones and returns all of them (views).
  /// The returned views alias the buffer: a later truncate() + append() overwrites them.
  // k, v: [B, Hkv, T, Dh] -> (keys, values): [B, Hkv, L + T, Dh]
  std::pair<Tensor<T>, Tensor<T>> append(const Tensor<T>& k, const Tensor<T>& v) {
    constexpr const char* op = "KVCache";
    CONDENSE_CHECK(k.defined() && v.defined(), op, "append needs defined keys and values");
    CONDENSE_CHECK(k.dim() == 4 && k.shape() == v.shape(), op, "keys and values must both be [B, Hkv, T, Dh], got ",
                   k.shape(), " and ", v.shape());
    if (k_.defined()) {
      CONDENSE_CHECK(k.size(0) == k_.size(0) && k.size(1) == k_.size(1) && k.size(3) == k_.size(3), op,
                     "appending keys ", k.shape(), " to a cache of [B, Hkv, L, Dh] = [", k_.size(0), ", ", k_.size(1),
                     ", ", len_, ", ", k_.size(3), "]");
    }
    const std::int64_t n = k.size(2);
    const bool graph = GradMode::is_enabled() &&
                       (k.requires_grad() || v.requires_grad() ||
                        (graph_ && len_ > 0 && (k_.requires_grad() || v_.requires_grad())));
    if (graph) {
      if (len_ == 0 || !k_.defined()) {
        k_ = k;
        v_ = v;
      } else {
        k_ = cat({keys(), k}, 2);
        v_ = cat({values(), v}, 2);
      }
      len_ += n;
      graph_ = true;
      return {k_, v_};
    }
    CONDENSE_CHECK(!k_.defined() || k.device() == k_.device(), op, "appending keys ", k.describe(), " to a cache on ",
                   k_.device());
    ensure_capacity(k.shape(), len_ + n, k.device());
    condense::detail::copy_into(k_.narrow(2, len_, n), k.detach(), op);
    condense::detail::copy_into(v_.narrow(2, len_, n), v.detach(), op);
    len_ += n;
    return {keys(), values()};
  }

  /// Makes room for `capacity` positions (applied at the first append when nothing is
  /// cached yet). Never shrinks.
  void reserve(std::int64_t capacity) {
    CONDENSE_CHECK(capacity >= 0, "KVCache", "reserve needs a capacity >= 0, got ", capacity);
    reserve_ = std::max(reserve_, capacity);
    if (k_.defined() && !graph_ && capacity > k_.size(2)) ensure_capacity(k_.shape(), capacity, k_.device());
  }

  /// Keeps the first `length` positions (the buffer and the cross-attention K/V stay).
  void truncate(std::int64_t length) {
    CONDENSE_CHECK(length >= 0 && length <= len_, "KVCache", "cannot truncate a cache of length ", len_, " to ", length);
    if (graph_ && k_.defined()) {
      k_ = k_.narrow(2, 0, length);
      v_ = v_.narrow(2, 0, length);
    }
    len_ = length;
  }

  /// Drops everything (self and cross K/V).
  void clear() { *this = LayerKV(); }

  /// Replaces the cached self-attention K/V by `k`, `v` (kept as given, no copy).
  // k, v: [B, Hkv, L, Dh]
  void assign(const Tensor<T>& k, const Tensor<T>& v) {
    CONDENSE_CHECK(k.defined() && v.defined() && k.dim() == 4 && k.shape() == v.shape(), "KVCache",
                   "keys and values must both be [B, Hkv, L, Dh], got ", k.describe(), " and ", v.describe());
    k_ = k;
    v_ = v;
    len_ = k.size(2);
    graph_ = true;  // not a private buffer: the next append copies before writing
  }

  /// True when cross-attention K/V are cached.
  bool has_cross() const { return cross_k_.defined(); }
  /// Cross-attention keys (undefined when none).
  // -> [B, Hkv, S, Dh]
  const Tensor<T>& cross_keys() const { return cross_k_; }
  /// Cross-attention values (undefined when none).
  // -> [B, Hkv, S, Dh]
  const Tensor<T>& cross_values() const { return cross_v_; }
  /// Stores the cross-attention K/V of encoder states (computed once per source batch).
  // k, v: [B, Hkv, S, Dh]
  void set_cross(const Tensor<T>& k, const Tensor<T>& v) {
    CONDENSE_CHECK(k.defined() && v.defined() && k.dim() == 4 && k.shape() == v.shape(), "KVCache",
                   "cross keys and values must both be [B, Hkv, S, Dh], got ", k.describe(), " and ", v.describe());
    cross_k_ = k;
    cross_v_ = v;
  }

  /// A deep copy (new buffers with the same capacity; autograd history kept when present).
  LayerKV clone() const {
    LayerKV out;
    out.len_ = len_;
    out.reserve_ = reserve_;
    out.graph_ = graph_;
    if (k_.defined()) {
      if (graph_) {
        out.k_ = keys().clone();
        out.v_ = values().clone();
      } else {
        out.k_ = Tensor<T>::empty(k_.shape(), k_.device());
        out.v_ = Tensor<T>::empty(v_.shape(), v_.device());
        if (len_ > 0) {
          condense::detail::copy_into(out.k_.narrow(2, 0, len_), keys(), "KVCache");
          condense::detail::copy_into(out.v_.narrow(2, 0, len_), values(), "KVCache");
        }
      }
    }
    if (cross_k_.defined()) {
      out.cross_k_ = cross_k_.clone();
      out.cross_v_ = cross_v_.clone();
    }
    return out;
  }

  /// A copy of this layer's cached K/V (and cross K/V) on `device`, without autograd history;
  /// the copy's buffer holds exactly the cached positions and grows on the next append.
  LayerKV to(Device device) const {
    LayerKV out;
    out.reserve_ = reserve_;
    if (k_.defined()) {
      out.k_ = keys().detach().contiguous().to(device);
      out.v_ = values().detach().contiguous().to(device);
      out.len_ = len_;
    }
    if (cross_k_.defined()) {
      out.cross_k_ = cross_k_.detach().contiguous().to(device);
      out.cross_v_ = cross_v_.detach().contiguous().to(device);
    }
    return out;
  }

  /// The batch rows `rows` (in that order, repeats allowed) of this layer's K/V.
  // rows: [n] -> a layer of batch n
  LayerKV select_rows(const Tensor<std::int64_t>& rows) const {
    LayerKV out;
    out.reserve_ = reserve_;
    if (k_.defined()) {
      out.k_ = index_select(keys(), 0, rows);
      out.v_ = index_select(values(), 0, rows);
      out.len_ = len_;
      out.graph_ = out.k_.requires_grad() || out.v_.requires_grad();
    }
    if (cross_k_.defined()) {
      out.cross_k_ = index_select(cross_k_, 0, rows);
      out.cross_v_ = index_select(cross_v_, 0, rows);
    }
    return out;
  }

 private:
  /// Makes the buffer a private one of shape [B, Hkv, >= needed, Dh], keeping the cached rows.
  void ensure_capacity(const Shape& like, std::int64_t needed, Device device) {
    if (k_.defined() && !graph_ && needed <= k_.size(2)) return;
    std::int64_t cap = std::max(needed, reserve_);
    if (k_.defined() && !graph_) cap = std::max(cap, 2 * k_.size(2));
    const std::int64_t B = like[0], H = like[1], D = like[3];
    Tensor<T> nk = Tensor<T>::empty({B, H, cap, D}, device);
    Tensor<T> nv = Tensor<T>::empty({B, H, cap, D}, device);
    if (k_.defined() && len_ > 0) {
      condense::detail::copy_into(nk.narrow(2, 0, len_), keys().detach(), "KVCache");
      condense::detail::copy_into(nv.narrow(2, 0, len_), values().detach(), "KVCache");
    }
    k_ = nk;
    v_ = nv;
    graph_ = false;
  }

  Tensor<T> k_, v_;  // [B, Hkv, capacity, Dh]; the first len_ positions are cached
  std::int64_t len_ = 0;
  std::int64_t reserve_ = 0;
  bool graph_ = false;  // k_/v_ are not a private buffer (autograd history or assigned)
  Tensor<T> cross_k_, cross_v_;
};

/// The KV cache of a whole model: one LayerKV per attention layer, all of one length.
/// A default-constructed cache is empty; a model's forward sizes it on first use.
/// Move-only; clone() makes a deep copy.
template <DifferentiableElement T>
class KVCache {
 public:
  /// (name, tensor) pairs, as named_tensors() returns them.
  using NamedTensors = std::vector<std::pair<std::string, Tensor<T>>>;

  KVCache() = default;
  /// An empty cache for `n_layers` layers.
  explicit KVCache(std::int64_t n_layers) { resize(n_layers); }
  KVCache(KVCache&&) noexcept = default;
  KVCache& operator=(KVCache&&) noexcept = default;
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;

  /// Number of layers.
  std::int64_t num_layers() const { return static_cast<std::int64_t>(layers_.size()); }
  /// Sets the number of layers (new layers are empty; dropped layers are discarded).
  void resize(std::int64_t n_layers) {
    CONDENSE_CHECK(n_layers >= 0, "KVCache", "number of layers must be >= 0, got ", n_layers);
    layers_.resize(static_cast<std::size_t>(n_layers));
    for (auto& l : layers_) l.reserve(reserve_);
  }
  /// Cached positions per row (that of layer 0; 0 for a cache without layers).
  std::int64_t length() const { return layers_.empty() ? 0 : layers_[0].length(); }
  /// True when no position is cached.
  bool empty() const { return length() == 0; }
  /// Batch size (0 before the first append).
  std::int64_t batch_size() const { return layers_.empty() ? 0 : layers_[0].batch_size(); }
  /// True when the layers hold cross-attention K/V.
  bool has_cross() const { return !layers_.empty() && layers_[0].has_cross(); }

  /// Layer `i`.
  LayerKV<T>& layer(std::int64_t i) { return layers_.at(checked_index(i)); }
  const LayerKV<T>& layer(std::int64_t i) const { return layers_.at(checked_index(i)); }

  /// Throws unless every layer holds the same number of positions (`op` names the caller).
  void check_consistent(const char* op) const {
    for (std::size_t i = 1; i < layers_.size(); ++i)
      CONDENSE_CHECK(layers_[i].length() == layers_[0].length(), op, "cache layers hold different lengths: layer 0 has ",
                     layers_[0].length(), ", layer ", i, " has ", layers_[i].length());
  }

  /// Reserves `capacity` positions in every layer (see LayerKV::reserve).
  void reserve(std::int64_t capacity) {
    reserve_ = std::max(reserve_, capacity);
    for (auto& l : layers_) l.reserve(capacity);
  }
  /// Keeps the first `length` positions of every layer (cross K/V stay).
  void truncate(std::int64_t length) {
    CONDENSE_CHECK(length >= 0 && length <= this->length(), "KVCache", "cannot truncate a cache of length ",
                   this->length(), " to ", length);
    for (auto& l : layers_) l.truncate(length);
  }
  /// Drops every cached tensor (the number of layers stays).
  void clear() {
    for (auto& l : layers_) l.clear();
  }
  /// A deep copy.
  KVCache clone() const {
    KVCache out;
    out.reserve_ = reserve_;
    for (const auto& l : layers_) out.layers_.push_back(l.clone());
    return out;
  }
  /// A copy of the cache on `device` (e.g. a cache loaded from a file, for a model on the
  /// GPU); autograd history is not kept.
  KVCache to(Device device) const {
    KVCache out;
    out.reserve_ = reserve_;
    for (const auto& l : layers_) out.layers_.push_back(l.to(device));
    return out;
  }
  /// A cache holding the batch rows `rows` (in that order; repeats allowed), e.g. to drop
  /// finished rows or to decode one row of a batch prefill on its own.
  KVCache select_rows(const std::vector<std::int64_t>& rows) const {
    const std::int64_t b = batch_size();
    for (auto r : rows) CONDENSE_CHECK(r >= 0 && r < b, "KVCache", "row ", r, " out of range for batch ", b);
    const Tensor<std::int64_t> index = from_vector<std::int64_t>(rows, {static_cast<std::int64_t>(rows.size())});
    KVCache out;
    out.reserve_ = reserve_;
    for (const auto& l : layers_) out.layers_.push_back(l.select_rows(index));
    return out;
  }

  /// The cached tensors as independent contiguous copies named "layers.<i>.k",
  /// "layers.<i>.v" [B, Hkv, L, Dh] and, with cross-attention K/V, "layers.<i>.cross_k",
  /// "layers.<i>.cross_v" [B, Hkv, S, Dh]. Layers never appended to are left out.
  NamedTensors named_tensors() const {
    NamedTensors out;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const auto& l = layers_[i];
      const std::string p = "layers." + std::to_string(i) + ".";
      if (l.defined()) {
        out.emplace_back(p + "k", l.keys().detach().clone());
        out.emplace_back(p + "v", l.values().detach().clone());
      }
      if (l.has_cross()) {
        out.emplace_back(p + "cross_k", l.cross_keys().detach().clone());
        out.emplace_back(p + "cross_v", l.cross_values().detach().clone());
      }
    }
    return out;
  }

  /// Rebuilds a cache from named_tensors() output (any order). Every layer 0..n-1 needs
  /// both "k" and "v" of one shape, all layers one batch size and length; "cross_k" and
  /// "cross_v" come in pairs. Unknown names and bad shapes throw.
  static KVCache from_named_tensors(const NamedTensors& tensors) {
    constexpr const char* op = "KVCache";
    struct Slot {
      Tensor<T> k, v, ck, cv;
    };
    std::map<std::int64_t, Slot> slots;
    for (const auto& [name, t] : tensors) {
      std::int64_t index = -1;
      std::string kind;
      CONDENSE_CHECK(parse_name(name, index, kind), op, "unexpected tensor name '", name,
                     "' (expected layers.<i>.k, .v, .cross_k or .cross_v)");
      CONDENSE_CHECK(t.defined() && t.dim() == 4, op, "tensor '", name, "' must be [B, Hkv, L, Dh], got ", t.describe());
      Slot& s = slots[index];
      Tensor<T>& dst = kind == "k" ? s.k : kind == "v" ? s.v : kind == "cross_k" ? s.ck : s.cv;
      CONDENSE_CHECK(!dst.defined(), op, "tensor '", name, "' appears twice");
      dst = t.detach();
    }
    KVCache out;
    if (slots.empty()) return out;
    const std::int64_t n = slots.rbegin()->first + 1;
    CONDENSE_CHECK(static_cast<std::int64_t>(slots.size()) == n, op, "layers must be numbered 0..", n - 1,
                   " without gaps, got ", slots.size(), " layers");
    out.resize(n);
    const Slot& first = slots.begin()->second;
    for (auto& [i, s] : slots) {
      const std::string p = "layers." + std::to_string(i) + ".";
      CONDENSE_CHECK(s.k.defined() == s.v.defined(), op, p, "k and ", p, "v must come together");
      CONDENSE_CHECK(s.ck.defined() == s.cv.defined(), op, p, "cross_k and ", p, "cross_v must come together");
      CONDENSE_CHECK(s.k.defined() == first.k.defined() && s.ck.defined() == first.ck.defined(), op,
                     "every layer must hold the same kinds of tensors; layer ", i, " differs from layer 0");
      if (s.k.defined()) {
        CONDENSE_CHECK(s.k.shape() == s.v.shape(), op, p, "k ", s.k.shape(), " and ", p, "v ", s.v.shape(), " differ");
        CONDENSE_CHECK(s.k.size(0) == first.k.size(0) && s.k.size(2) == first.k.size(2), op, p, "k ", s.k.shape(),
                       " disagrees with layers.0.k ", first.k.shape(), " in batch size or length");
        LayerKV<T>& l = out.layers_[static_cast<std::size_t>(i)];
        l.append(s.k, s.v);  // copies into a private buffer (no autograd: the tensors were detached)
      }
      if (s.ck.defined()) {
        CONDENSE_CHECK(s.ck.shape() == s.cv.shape(), op, p, "cross_k ", s.ck.shape(), " and ", p, "cross_v ",
                       s.cv.shape(), " differ");
        out.layers_[static_cast<std::size_t>(i)].set_cross(s.ck, s.cv);
      }
    }
    return out;
  }

 private:
  std::size_t checked_index(std::int64_t i) const {
    CONDENSE_CHECK(i >= 0 && i < num_layers(), "KVCache", "layer ", i, " out of range for a cache of ", num_layers(),
                   " layers");
    return static_cast<std::size_t>(i);
  }

  /// Splits "layers.<i>.<kind>" into (i, kind); false when the name has another form.
  static bool parse_name(const std::string& name, std::int64_t& index, std::string& kind) {
    const std::string prefix = "layers.";
    if (name.rfind(prefix, 0) != 0) return false;
    const std::size_t dot = name.find('.', prefix.size());
    if (dot == std::string::npos || dot == prefix.size()) return false;
    const char* b = name.data() + prefix.size();
    const char* e = name.data() + dot;
    const auto [ptr, ec] = std::from_chars(b, e, index);
    if (ec != std::errc() || ptr != e || index < 0 || (e - b > 1 && *b == '0')) return false;
    kind = name.substr(dot + 1);
    return kind == "k" || kind == "v" || kind == "cross_k" || kind == "cross_v";
  }

  std::vector<LayerKV<T>> layers_;
  std::int64_t reserve_ = 0;
};

}  // namespace condense::nn
