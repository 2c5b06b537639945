// DigestCross: the cross-attention mask of an IC-Former style compressor. n learned digest
// embeddings are the queries; the keys are [context (L_ctx tokens) ; the n initial digest
// embeddings]. A digest query sees the whole context and the digest slots up to its own;
// optionally the context is split into groups and digest group i reads context chunk i only.
#pragma once

#include <climits>
#include <cstdint>

#include "condense/core/config.hpp"
#include "condense/core/error.hpp"
#include "condense/mask/policy.hpp"

namespace condense::mask {

/// Options of DigestCross.
struct DigestCrossOptions {
  /// Number of groups G for the chunked variant (1: not chunked). Digest group i is the
  /// queries [i*n/G, (i+1)*n/G); context chunk i is [i*len/G, (i+1)*len/G) (integer
  /// division, len = the row's context length), so groups and chunks are balanced.
  int groups = 1;
  /// Optional per-row context lengths (caller-owned int32 array of `rows` entries on the
  /// device that runs the kernel): context keys k >= lengths[b] are padding and masked.
  const std::int32_t* context_lengths = nullptr;
  int rows = 0;
};

/// Keys are [context ; digest slots]: k < L_ctx is context, k = L_ctx + j is digest slot j.
/// Query q (digest q, 0 <= q < n) sees context keys k < len(b) (only its group's chunk when
/// chunked) and digest slots j <= q:  (k < len(b) [and k in chunk(group(q))]) or k - L_ctx <= q.
struct DigestCross {
  int context = 0;  ///< L_ctx: context keys (padded length)
  int digests = 1;  ///< n: digest queries and digest key slots
  int groups = 1;
  const std::int32_t* context_lengths = nullptr;
  int rows = 0;

  DigestCross(int context_len, int n_digests, DigestCrossOptions options = {})
      : context(context_len),
        digests(n_digests),
        groups(options.groups),
        context_lengths(options.context_lengths),
        rows(options.rows) {
    CONDENSE_CHECK(context_len >= 0 && n_digests >= 1, "DigestCross", "need L_ctx >= 0 and n >= 1, got L_ctx ",
                   context_len, ", n ", n_digests);
    CONDENSE_CHECK(static_cast<long long>(context_len) + n_digests <= INT_MAX, "DigestCross",
                   "L_ctx + n overflows int: ", context_len, " + ", n_digests);
    CONDENSE_CHECK(options.groups >= 1 && options.groups <= n_digests, "DigestCross", "groups must be in [1, n = ",
                   n_digests, "], got ", options.groups);
    CONDENSE_CHECK(options.groups == 1 || options.groups <= context_len, "DigestCross", "groups (", options.groups,
                   ") must not exceed L_ctx (", context_len, ") so that every context chunk is non-empty");
    CONDENSE_CHECK(options.rows >= 0, "DigestCross", "rows must be >= 0, got ", options.rows);
  }
  /// The chunked variant: `n_groups` digest groups, group i reading context chunk i.
  static DigestCross chunked(int context_len, int n_digests, int n_groups) {
    return DigestCross(context_len, n_digests, DigestCrossOptions{.groups = n_groups});
  }

  /// Context length of row b (the padded L_ctx without per-row lengths).
  constexpr CONDENSE_HD int context_len(int b) const {
    if (!context_lengths) return context;
    const int len = context_lengths[b];
    return len < 0 ? 0 : (len > context ? context : len);
  }
  /// Digest group of query q.
  constexpr CONDENSE_HD int group_of(int q) const {
    return static_cast<int>(((static_cast<long long>(q) + 1) * groups - 1) / digests);
  }
  /// First query of group i (i <= groups).
  constexpr CONDENSE_HD int group_begin(int i) const {
    return static_cast<int>(static_cast<long long>(i) * digests / groups);
  }
  /// First context key of chunk i (i <= groups) for a row with context length len.
  constexpr CONDENSE_HD int chunk_begin(int i, int len) const {
    return static_cast<int>(static_cast<long long>(i) * len / groups);
  }

  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const {
    if (k >= context) return static_cast<long long>(k) - context <= q;
    const int len = context_len(b);
    if (k >= len) return false;
    if (groups == 1) return true;
    const int i = group_of(q);
    return i < groups && chunk_begin(i, len) <= k && k < chunk_begin(i + 1, len);
  }

  /// Exact: digest slots by arithmetic (a band), the context split by digest group
  /// (at most (q1 - q0) * G / n + 2 groups, stopping once the tile is known Partial).
  constexpr CONDENSE_HD TileKind classify(int b, int q0, int q1, int k0, int k1) const {
    TileParts parts;
    const int kd = detail::clamp_to(context, k0, k1);  // keys [kd, k1) are digest slots
    if (kd < k1) parts.add(classify_causal(q0, q1, kd, k1, context));
    if (k0 < kd) {
      const int len = context_len(b);
      const int kv = detail::clamp_to(len, k0, kd);  // keys [kv, kd) are padding
      if (kv < kd) parts.add(TileKind::Empty);
      if (k0 < kv) {
        if (groups == 1) {
          parts.add(TileKind::Full);
        } else {
          const int i_last = detail::imin(group_of(q1 - 1), groups);
          for (int i = detail::imin(group_of(q0), groups); i <= i_last && !parts.mixed(); ++i) {
            if (i >= groups) {  // queries past the last group see no context
              parts.add(TileKind::Empty);
              break;
            }
            const int cb = detail::clamp_to(chunk_begin(i, len), k0, kv);
            const int ce = detail::clamp_to(chunk_begin(i + 1, len), k0, kv);
            if (k0 < cb) parts.add(TileKind::Empty);
            if (cb < ce) parts.add(TileKind::Full);
            if (ce < kv) parts.add(TileKind::Empty);
          }
        }
      }
    }
    return parts.result();
  }

  void validate(const char* op, int batch, int tq, int tk) const {
    CONDENSE_CHECK(tq <= digests, op, "DigestCross has n = ", digests, " digest queries, but Tq = ", tq);
    CONDENSE_CHECK(static_cast<long long>(tk) <= static_cast<long long>(context) + digests, op,
                   "DigestCross keys are L_ctx + n = ", context, " + ", digests, ", but Tk = ", tk);
    CONDENSE_CHECK(context_lengths == nullptr || batch <= rows, op, "DigestCross holds context lengths for ", rows,
                   " rows, but the batch has ", batch);
  }
};

}  // namespace condense::mask
