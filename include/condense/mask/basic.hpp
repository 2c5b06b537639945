// Basic mask policies: None, Causal (with a query offset for decoding after a cache),
// SlidingWindow, KeyPadding (a valid-key length per row), Pruned (a keep bitmap per row,
// combined with causal) and Dense (an explicit [B, Tq, Tk] boolean mask).
// Every policy is a small trivially copyable struct; allowed/classify are host+device.
#pragma once

#include <cstdint>

#include "condense/core/config.hpp"
#include "condense/core/error.hpp"
#include "condense/mask/policy.hpp"

namespace condense::mask {

/// No mask: every query sees every key.
struct None {
  constexpr CONDENSE_HD bool allowed(int, int, int) const { return true; }
  constexpr CONDENSE_HD TileKind classify(int, int, int, int, int) const { return TileKind::Full; }
};

/// Causal: query i sits at absolute position offset + i and sees keys k <= offset + i.
/// offset = number of cached keys when new queries continue a KV cache (0: plain causal).
struct Causal {
  int offset = 0;

  constexpr Causal() = default;
  constexpr CONDENSE_HD explicit Causal(int query_offset) : offset(query_offset) {}

  constexpr CONDENSE_HD bool allowed(int, int q, int k) const {
    return static_cast<long long>(k) - q <= offset;
  }
  /// Exact.
  constexpr CONDENSE_HD TileKind classify(int, int q0, int q1, int k0, int k1) const {
    return classify_causal(q0, q1, k0, k1, offset);
  }
};

/// Sliding window: query at absolute position p = offset + q sees keys p - left <= k <= p + right.
/// right = 0 gives a causal window of left + 1 keys; `mask::unbounded` is no limit on a side.
struct SlidingWindow {
  long long left = 0;
  long long right = 0;
  int offset = 0;

  constexpr SlidingWindow() = default;
  constexpr CONDENSE_HD SlidingWindow(long long left_keys, long long right_keys, int query_offset = 0)
      : left(left_keys), right(right_keys), offset(query_offset) {}

  constexpr CONDENSE_HD bool allowed(int, int q, int k) const {
    const long long d = static_cast<long long>(k) - q - offset;
    return -left <= d && d <= right;
  }
  /// Exact.
  constexpr CONDENSE_HD TileKind classify(int, int q0, int q1, int k0, int k1) const {
    return classify_band(q0, q1, k0, k1, offset - left, offset + right);
  }
};

/// Key padding: row b has len(b) valid keys; keys k >= len(b) are masked for every query.
/// Either one length for every row, or a per-row array `lengths[rows]` owned by the caller
/// (on the device that runs the kernel).
struct KeyPadding {
  const std::int32_t* lengths = nullptr;  ///< per-row valid key counts, or nullptr
  int rows = 0;                           ///< entries in `lengths`
  int length = 0;                         ///< the length of every row when lengths == nullptr

  /// The same number of valid keys in every row.
  constexpr CONDENSE_HD explicit KeyPadding(int valid_keys) : length(valid_keys) {}
  /// Per-row valid key counts: lengths[b] for b < rows.
  KeyPadding(const std::int32_t* per_row_lengths, int n_rows) : lengths(per_row_lengths), rows(n_rows) {
    CONDENSE_CHECK(per_row_lengths != nullptr, "KeyPadding", "lengths pointer is null");
    CONDENSE_CHECK(n_rows >= 0, "KeyPadding", "number of rows must be >= 0, got ", n_rows);
  }

  constexpr CONDENSE_HD int len(int b) const { return lengths ? lengths[b] : length; }
  constexpr CONDENSE_HD bool allowed(int b, int, int k) const { return k < len(b); }
  /// Exact (one load).
  constexpr CONDENSE_HD TileKind classify(int b, int, int, int k0, int k1) const {
    const int n = len(b);
    if (k1 <= n) return TileKind::Full;
    if (k0 >= n) return TileKind::Empty;
    return TileKind::Partial;
  }
  void validate(const char* op, int batch, int, int) const {
    CONDENSE_CHECK(lengths == nullptr || batch <= rows, op, "KeyPadding holds lengths for ", rows,
                   " rows, but the batch has ", batch);
  }
};

/// Pruned (inference after hard drops): causal (query i at absolute position offset + i)
/// and keep[b * keys_per_row + k] != 0. `keep` is a [rows, keys_per_row] boolean array
/// owned by the caller (a Tensor<bool>'s data on the device that runs the kernel).
struct Pruned {
  const bool* keep = nullptr;
  int rows = 0;
  int keys_per_row = 0;
  int offset = 0;

  Pruned(const bool* keep_bitmap, int n_rows, int n_keys_per_row, int query_offset = 0)
      : keep(keep_bitmap), rows(n_rows), keys_per_row(n_keys_per_row), offset(query_offset) {
    CONDENSE_CHECK(keep_bitmap != nullptr, "Pruned", "keep pointer is null");
    CONDENSE_CHECK(n_rows >= 0 && n_keys_per_row >= 0, "Pruned", "keep must be [rows, keys] with rows, keys >= 0, got [",
                   n_rows, ", ", n_keys_per_row, "]");
  }

  constexpr CONDENSE_HD bool kept(int b, int k) const {
    return keep[static_cast<long long>(b) * keys_per_row + k];
  }
  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const {
    return static_cast<long long>(k) - q <= offset && kept(b, k);
  }
  /// Exact: the causal part by arithmetic, then a scan of the keep bits of the tile's keys
  /// (O(k1 - k0) loads, stopping early), which lets tiles of dropped keys be skipped.
  constexpr CONDENSE_HD TileKind classify(int b, int q0, int q1, int k0, int k1) const {
    const TileKind causal = classify_causal(q0, q1, k0, k1, offset);
    if (causal == TileKind::Empty) return TileKind::Empty;
    // Keys some query of the tile can see causally: k <= q1 - 1 + offset.
    const int visible_end = detail::clamp_to(static_cast<long long>(q1) + offset, k0, k1);
    bool any_kept_visible = false;
    for (int k = k0; k < visible_end && !any_kept_visible; ++k) any_kept_visible = kept(b, k);
    if (!any_kept_visible) return TileKind::Empty;
    if (causal != TileKind::Full) return TileKind::Partial;
    for (int k = k0; k < k1; ++k)
      if (!kept(b, k)) return TileKind::Partial;
    return TileKind::Full;
  }
  /// Key filter for kernels that compact the kept keys: allowed(b, q, k) ==
  /// key_kept(b, k) && key_base().allowed(b, q, k), so a kernel may gather the kept keys
  /// and run the base (causal) policy over them, paying only for kept keys.
  constexpr CONDENSE_HD bool key_kept(int b, int k) const { return kept(b, k); }
  constexpr CONDENSE_HD Causal key_base() const { return Causal{offset}; }
  void validate(const char* op, int batch, int, int tk) const {
    CONDENSE_CHECK(batch <= rows, op, "Pruned keep holds ", rows, " rows, but the batch has ", batch);
    CONDENSE_CHECK(tk <= keys_per_row, op, "Pruned keep rows hold ", keys_per_row, " keys, but Tk = ", tk);
  }
};

/// An explicit mask: mask[(b * n_queries + q) * n_keys + k] != 0, a contiguous
/// [batch, n_queries, n_keys] boolean array owned by the caller. For masks no policy
/// describes, and for tests. classify is conservative (always Partial): no tile is skipped.
struct Dense {
  const bool* mask = nullptr;
  int batch = 0;
  int n_queries = 0;
  int n_keys = 0;

  Dense(const bool* mask_data, int n_batch, int queries, int keys)
      : mask(mask_data), batch(n_batch), n_queries(queries), n_keys(keys) {
    CONDENSE_CHECK(mask_data != nullptr, "Dense", "mask pointer is null");
    CONDENSE_CHECK(n_batch >= 0 && queries >= 0 && keys >= 0, "Dense",
                   "mask must be [batch, Tq, Tk] with non-negative sizes, got [", n_batch, ", ", queries, ", ", keys, "]");
  }

  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const {
    return mask[(static_cast<long long>(b) * n_queries + q) * n_keys + k];
  }
  constexpr CONDENSE_HD TileKind classify(int, int, int, int, int) const { return TileKind::Partial; }
  void validate(const char* op, int n_batch, int tq, int tk) const {
    CONDENSE_CHECK(n_batch <= batch && tq <= n_queries && tk <= n_keys, op, "Dense mask is [", batch, ", ", n_queries,
                   ", ", n_keys, "], too small for batch ", n_batch, ", Tq ", tq, ", Tk ", tk);
  }
};

}  // namespace condense::mask
