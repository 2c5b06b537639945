// Gisting mask policies. Each row b has a gist span [g0, g1): the gist tokens placed right
// after the instruction. Gist (decoder), GistBidirectional (encoder), GistCross (decoder
// queries over encoder states) and GistNegativeControl (the "gist removed" control; the
// positive control is plain Causal). A row without a span (g0 >= g1, e.g. (0, 0) or
// (-1, -1)) is left unchanged by gisting: causal in a decoder, unmasked in an encoder and
// in cross-attention.
#pragma once

#include <cstdint>

#include "condense/core/config.hpp"
#include "condense/core/error.hpp"
#include "condense/mask/policy.hpp"

namespace condense::mask {

/// The gist span of every row: one span for all rows, or a caller-owned [rows, 2] int32
/// array of (g0, g1) pairs on the device that runs the kernel.
struct GistSpans {
  const std::int32_t* spans = nullptr;  ///< [rows, 2] (g0, g1) per row, or nullptr
  int rows = 0;                         ///< rows in `spans`
  int g0 = 0;                           ///< the span of every row when spans == nullptr
  int g1 = 0;

  constexpr GistSpans() = default;
  /// The same span [first, end) in every row.
  constexpr CONDENSE_HD GistSpans(int first, int end) : g0(first), g1(end) {}
  /// Per-row spans: (spans[2b], spans[2b+1]) for b < rows.
  /// `policy` names the owner in error messages.
  GistSpans(const std::int32_t* per_row_spans, int n_rows, const char* policy = "GistSpans")
      : spans(per_row_spans), rows(n_rows) {
    CONDENSE_CHECK(per_row_spans != nullptr, policy, "spans pointer is null");
    CONDENSE_CHECK(n_rows >= 0, policy, "number of rows must be >= 0, got ", n_rows);
  }

  /// The span of row b into (s0, s1).
  constexpr CONDENSE_HD void get(int b, int& s0, int& s1) const {
    if (spans) {
      s0 = spans[2 * static_cast<long long>(b)];
      s1 = spans[2 * static_cast<long long>(b) + 1];
    } else {
      s0 = g0;
      s1 = g1;
    }
  }
  void validate(const char* op, const char* policy, int batch) const {
    CONDENSE_CHECK(spans == nullptr || batch <= rows, op, policy, " holds gist spans for ", rows,
                   " rows, but the batch has ", batch);
  }
};

namespace detail {

/// Decoder gist rule with query offset: k <= p (p = q + offset) and (p < s1 or k >= key_from).
/// Exact classification by splitting rows at p = s1 and keys at key_from.
constexpr CONDENSE_HD TileKind classify_gist_decoder(int q0, int q1, int k0, int k1, int offset, int s1, int key_from) {
  TileParts parts;
  const int qs = clamp_to(static_cast<long long>(s1) - offset, q0, q1);  // first row with p >= s1
  if (q0 < qs) parts.add(classify_causal(q0, qs, k0, k1, offset));
  if (qs < q1) {
    const int ks = clamp_to(key_from, k0, k1);
    if (k0 < ks) parts.add(TileKind::Empty);
    if (ks < k1) parts.add(classify_causal(qs, q1, ks, k1, offset));
  }
  return parts.result();
}

}  // namespace detail

/// Gist mask of a decoder: causal, and queries after the span see only the gist span and
/// what follows it: k <= p and (p < g1 or k >= g0), with p = offset + q the query's
/// absolute position (offset > 0 when queries continue a KV cache of the full sequence).
/// Rows without a span are causal.
struct Gist {
  GistSpans span;
  int offset = 0;

  constexpr CONDENSE_HD Gist(int g0, int g1, int query_offset = 0) : span(g0, g1), offset(query_offset) {}
  Gist(const std::int32_t* spans, int rows, int query_offset = 0)
      : span(spans, rows, "Gist"), offset(query_offset) {}

  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const {
    const long long p = static_cast<long long>(q) + offset;
    if (k > p) return false;
    int s0 = 0, s1 = 0;
    span.get(b, s0, s1);
    return s0 >= s1 || p < s1 || k >= s0;
  }
  /// Exact.
  constexpr CONDENSE_HD TileKind classify(int b, int q0, int q1, int k0, int k1) const {
    int s0 = 0, s1 = 0;
    span.get(b, s0, s1);
    if (s0 >= s1) return classify_causal(q0, q1, k0, k1, offset);
    return detail::classify_gist_decoder(q0, q1, k0, k1, offset, s1, s0);
  }
  void validate(const char* op, int batch, int, int) const { span.validate(op, "Gist", batch); }
};

/// Negative control of gisting (the gist is removed, not just compressed into): causal,
/// and queries after the span see neither the instruction nor the gist tokens:
/// k <= p and (p < g1 or k >= g1), p = offset + q. Rows without a span are causal.
struct GistNegativeControl {
  GistSpans span;
  int offset = 0;

  constexpr CONDENSE_HD GistNegativeControl(int g0, int g1, int query_offset = 0) : span(g0, g1), offset(query_offset) {}
  GistNegativeControl(const std::int32_t* spans, int rows, int query_offset = 0)
      : span(spans, rows, "GistNegativeControl"), offset(query_offset) {}

  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const {
    const long long p = static_cast<long long>(q) + offset;
    if (k > p) return false;
    int s0 = 0, s1 = 0;
    span.get(b, s0, s1);
    return s0 >= s1 || p < s1 || k >= s1;
  }
  /// Exact.
  constexpr CONDENSE_HD TileKind classify(int b, int q0, int q1, int k0, int k1) const {
    int s0 = 0, s1 = 0;
    span.get(b, s0, s1);
    if (s0 >= s1) return classify_causal(q0, q1, k0, k1, offset);
    return detail::classify_gist_decoder(q0, q1, k0, k1, offset, s1, s1);
  }
  void validate(const char* op, int batch, int, int) const { span.validate(op, "GistNegativeControl", batch); }
};

/// Gist mask of a bidirectional encoder: tokens up to the end of the span (instruction and
/// gist tokens) see each other; tokens after it see the gist span and what follows:
/// q < g1 ? k < g1 : k >= g0. Rows without a span are unmasked.
struct GistBidirectional {
  GistSpans span;

  constexpr CONDENSE_HD GistBidirectional(int g0, int g1) : span(g0, g1) {}
  GistBidirectional(const std::int32_t* spans, int rows) : span(spans, rows, "GistBidirectional") {}

  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const {
    int s0 = 0, s1 = 0;
    span.get(b, s0, s1);
    if (s0 >= s1) return true;
    return q < s1 ? k < s1 : k >= s0;
  }
  /// Exact.
  constexpr CONDENSE_HD TileKind classify(int b, int q0, int q1, int k0, int k1) const {
    int s0 = 0, s1 = 0;
    span.get(b, s0, s1);
    if (s0 >= s1) return TileKind::Full;
    TileParts parts;
    const int qs = detail::clamp_to(s1, q0, q1);
    if (q0 < qs) {  // rows before g1: keys [k0, g1) allowed, [g1, k1) masked
      const int ks = detail::clamp_to(s1, k0, k1);
      if (k0 < ks) parts.add(TileKind::Full);
      if (ks < k1) parts.add(TileKind::Empty);
    }
    if (qs < q1) {  // rows from g1 on: keys [k0, g0) masked, [g0, k1) allowed
      const int ks = detail::clamp_to(s0, k0, k1);
      if (k0 < ks) parts.add(TileKind::Empty);
      if (ks < k1) parts.add(TileKind::Full);
    }
    return parts.result();
  }
  void validate(const char* op, int batch, int, int) const { span.validate(op, "GistBidirectional", batch); }
};

/// Gist mask of cross-attention from decoder queries to encoder states: the decoder sees the
/// gist span and the encoder tokens after it, k >= g0 (the instruction is reachable only
/// through the gist tokens). Rows without a span are unmasked.
struct GistCross {
  GistSpans span;

  constexpr CONDENSE_HD GistCross(int g0, int g1) : span(g0, g1) {}
  GistCross(const std::int32_t* spans, int rows) : span(spans, rows, "GistCross") {}

  constexpr CONDENSE_HD bool allowed(int b, int, int k) const {
    int s0 = 0, s1 = 0;
    span.get(b, s0, s1);
    return s0 >= s1 || k >= s0;
  }
  /// Exact.
  constexpr CONDENSE_HD TileKind classify(int b, int, int, int k0, int k1) const {
    int s0 = 0, s1 = 0;
    span.get(b, s0, s1);
    if (s0 >= s1 || k0 >= s0) return TileKind::Full;
    if (k1 <= s0) return TileKind::Empty;
    return TileKind::Partial;
  }
  void validate(const char* op, int batch, int, int) const { span.validate(op, "GistCross", batch); }
};

}  // namespace condense::mask
