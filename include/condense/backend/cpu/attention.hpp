// CPU flash-style attention kernels templated on the mask policy. Forward: per (batch,
// head, query tile), a loop over key tiles with an online softmax; the policy classifies
// each tile so Empty tiles are skipped without touching memory, Full tiles skip the
// predicate and Partial tiles are masked per element. Backward recomputes the scores from
// the saved log-sum-exp (no Tq x Tk matrix kept) and runs per (batch, kv head) so the key
// and value gradients of a group of query heads are written by one thread. The tile
// products go to tile_gemm (no packing per call); the keys (and, for the backward, the
// values) are transposed once per call, tile by tile, as the B operand of Q K^T and dO V^T.
// Without a bias the softmax scale is applied inside the exponential's pass (ScoreScale).
// q, k, v, out and the gradients are read and written through RowLayouts (any strides
// but a contiguous head dim), so head-split views and cache prefixes need no copy. A
// forward with a few queries (a decode step, a short chunk after a cache) forms its scores
// over the keys as they lie (matrix-vector products, or K Q^T tile products from 8 rows; no
// transposed keys) and, with grouped heads, runs the queries of every query head of a kv
// head in one pass over its keys.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <omp.h>

#include "condense/backend/cpu/reduce.hpp"
#include "condense/backend/score_scale.hpp"
#include "condense/backend/cpu/tile_gemm.hpp"
#include "condense/backend/row_layout.hpp"
#include "condense/mask/policy.hpp"

namespace condense::cpu {

/// Geometry and options of one attention call. The bias, lse and dbias are contiguous; q,
/// k, v, out and the gradients follow their RowLayouts (AttentionLayouts; an unset one
/// means contiguous).
struct AttentionGeometry : AttentionLayouts {
  std::int64_t batch = 0, heads = 0, kv_heads = 0, tq = 0, tk = 0, dim = 0;
  std::int64_t bias_heads = 0;  // 0: no bias; 1 or heads
  double scale = 1.0;
  int tile_q = 64, tile_k = 64;
  bool skip_tiles = true;  // false: every tile is treated as Partial (debug / property tests)
  /// Forwards with at most this many queries per (batch, head) form their scores over the
  /// keys as they lie (matrix-vector products); longer ones transpose the keys once per call
  /// into tiles (AttentionOptions::in_place_keys_max_queries).
  std::int64_t in_place_keys_max_queries = 16;
  /// Those few queries of every query head of a kv head in one pass over its keys, when
  /// there is work for every thread (AttentionOptions::group_query_heads).
  bool group_query_heads = true;

  /// Every unset layout made contiguous (what the kernels run on; call after the extents
  /// are set).
  void resolve_layouts() { AttentionLayouts::resolve_layouts(heads, kv_heads, tq, tk, dim); }
};

/// Counters a kernel reports (tiles by kind).
struct AttentionTileStats {
  std::int64_t empty = 0, partial = 0, full = 0;
};

namespace detail {

/// The keys and values one (batch, kv head) attends to: either all Tk rows, or the gathered
/// kept rows with `index[j]` = the original position of gathered key j. Key j's row is at
/// k + j * k_stride (values: v + j * v_stride).
template <class T>
struct KeySet {
  const T* k = nullptr;
  const T* v = nullptr;
  const std::int32_t* index = nullptr;  // null: identity
  std::int64_t count = 0;
  std::int64_t k_stride = 0, v_stride = 0;
  std::int64_t pos(std::int64_t j) const { return index ? index[j] : j; }
};

/// Gathered kept keys of a KeyFilteredMask policy, for all (batch, kv head).
template <class T>
struct GatheredKeys {
  std::vector<std::int32_t> index;       // [B, Tk]: per row, kept positions first
  std::vector<std::int64_t> count;       // [B]
  std::vector<T> k, v;                   // [B, Hkv, Tk, D] contiguous (first count[b] rows used)
};

template <class T, class Policy>
GatheredKeys<T> gather_kept_keys(const T* k, const T* v, const AttentionGeometry& g, const Policy& policy) {
  GatheredKeys<T> out;
  out.index.resize(static_cast<std::size_t>(g.batch * g.tk));
  out.count.assign(static_cast<std::size_t>(g.batch), 0);
  for (std::int64_t b = 0; b < g.batch; ++b) {
    std::int64_t n = 0;
    for (std::int64_t key = 0; key < g.tk; ++key)
      if (policy.key_kept(static_cast<int>(b), static_cast<int>(key))) out.index[static_cast<std::size_t>(b * g.tk + n++)] = static_cast<std::int32_t>(key);
    out.count[static_cast<std::size_t>(b)] = n;
  }
  out.k.resize(static_cast<std::size_t>(g.batch * g.kv_heads * g.tk * g.dim));
  out.v.resize(out.k.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t bk = 0; bk < g.batch * g.kv_heads; ++bk) {
    const std::int64_t b = bk / g.kv_heads, kvh = bk % g.kv_heads;
    for (std::int64_t j = 0; j < out.count[static_cast<std::size_t>(b)]; ++j) {
      const std::int64_t key = out.index[static_cast<std::size_t>(b * g.tk + j)];
      const T* k_row = k + g.k_rows.at(b, kvh, key);
      const T* v_row = v + g.v_rows.at(b, kvh, key);
      const std::int64_t dst = (bk * g.tk + j) * g.dim;
      std::copy(k_row, k_row + g.dim, out.k.data() + dst);
      std::copy(v_row, v_row + g.dim, out.v.data() + dst);
    }
  }
  return out;
}

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MutMap = Eigen::Map<RowMatrix<T>, 0, Eigen::OuterStride<>>;

/// Elements of one key set's part of transposed_key_tiles: Tk rounded up to whole tiles, by D.
inline std::int64_t transposed_set_size(const AttentionGeometry& g) {
  return (g.tk + g.tile_k - 1) / g.tile_k * g.tile_k * g.dim;
}

/// Where the rows of a score tile stand: row i is query q0 + i % queries of the tile's
/// (i / queries)-th head (one head unless the heads of a kv head's group are grouped), so
/// its query, output and bias rows step by token within a head and by head after that.
struct ScoreRows {
  std::int64_t q0 = 0;                ///< position of the first query
  std::int64_t queries = 1;           ///< query rows per head
  std::int64_t bias_head_stride = 0;  ///< elements between two heads' bias rows (0: shared)
  std::int64_t bias_token_stride = 0; ///< elements between two queries' bias rows (Tk)

  /// Query position of row i.
  std::int64_t position(std::int64_t i) const { return q0 + i % queries; }
  /// Offset of row i's bias row from the first row's.
  std::int64_t bias_offset(std::int64_t i) const {
    return i / queries * bias_head_stride + i % queries * bias_token_stride;
  }
  /// Offset of row i from the first row's in an operand laid out as `rows`.
  std::int64_t row_offset(std::int64_t i, const RowLayout& rows) const {
    return i / queries * rows.head + i % queries * rows.token;
  }
};

/// Turns the products Q K^T of a tile (rows as `at` says, cols k0..) into scores: times
/// `before` (ScoreScale::before), plus the bias, -inf where masked.
// s: [rows, cols], bias: row i at bias + at.bias_offset(i), [cols] each, or null
template <class T, class Policy>
void finish_scores(RowMatrix<T>& s, const T* bias, T before, const Policy& policy, int b, const ScoreRows& at,
                   std::int64_t k0, TileKind kind, const std::int32_t* index) {
  const std::int64_t rows = s.rows(), cols = s.cols();
  if (before != T(1)) s *= before;
  if (bias)
    for (std::int64_t i = 0; i < rows; ++i)
      s.row(i) += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias + at.bias_offset(i), cols);
  if (kind == TileKind::Partial) {
    constexpr T neg_inf = -std::numeric_limits<T>::infinity();
    for (std::int64_t i = 0; i < rows; ++i) {
      const int position = static_cast<int>(at.position(i));
      for (std::int64_t j = 0; j < cols; ++j)
        if (!policy.allowed(b, position, static_cast<int>(index ? index[k0 + j] : k0 + j))) s(i, j) = neg_inf;
    }
  }
}

/// Fills scores S (rows q0.., cols k0..) = before * Q K^T + bias, with -inf where masked.
/// `kt` is the key tile transposed (a block of transposed_key_tiles, rows g.tile_k apart);
/// q's rows are q_stride apart.
// q: [rows, D] (row stride q_stride), kt: [D, cols] (stride tile_k) -> s: [rows, cols]
template <class T, class Policy>
void tile_scores(RowMatrix<T>& s, const T* q, std::int64_t q_stride, const T* kt, const T* bias, T before,
                 const AttentionGeometry& g, const Policy& policy, int b, std::int64_t q0, std::int64_t rows,
                 std::int64_t k0, std::int64_t cols, TileKind kind, const std::int32_t* index) {
  s.resize(rows, cols);
  tile_gemm<T>(rows, cols, g.dim, {q, q_stride, 1}, kt, g.tile_k, s.data(), cols, false);
  finish_scores(s, bias, before, policy, b, ScoreRows{q0, rows, 0, g.tk}, k0, kind, index);
}

/// From this many query rows on, decode_scores forms a tile's scores as one tile product
/// over the keys as they lie, S^T = K Q^T (Q^T copied once per work item), instead of one
/// matrix-vector product per row (measured: at 4 rows the products' half-empty registers
/// lose to the matrix-vector products, at 64 rows they win by about 1.4x).
inline constexpr std::int64_t decode_product_min_rows = 8;

/// The scores of a few query rows (a decode step's or a short chunk's queries of one head,
/// or of every head of a kv head's group) against keys k0.. of a key set, read as they lie
/// (transposing every key first would cost as much as the attention itself): with
/// `q_transposed` (at least decode_product_min_rows rows) one tile product S^T = K Q^T into
/// `scratch`, else a matrix-vector product per row.
// q: row i at q + at.row_offset(i, g.q_rows), [D] each; q_transposed: [D, rows] or null;
// keys k0..k0+cols: [cols, D] (row stride keys.k_stride) -> s: [rows, cols]
template <class T, class Policy>
void decode_scores(RowMatrix<T>& s, RowMatrix<T>& scratch, const T* q, const T* q_transposed, std::int64_t rows,
                   const KeySet<T>& keys, const T* bias, T before, const AttentionGeometry& g, const Policy& policy,
                   int b, const ScoreRows& at, std::int64_t k0, std::int64_t cols, TileKind kind) {
  const T* k_first = keys.k + k0 * keys.k_stride;
  if (q_transposed) {
    scratch.resize(cols, rows);
    tile_gemm<T>(cols, rows, g.dim, {k_first, keys.k_stride, 1}, q_transposed, rows, scratch.data(), rows, false);
    s = scratch.transpose();
  } else {
    s.resize(rows, cols);
    const ConstMap<T> k(k_first, cols, g.dim, Eigen::OuterStride<>(keys.k_stride));
    for (std::int64_t i = 0; i < rows; ++i) {
      const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>> query(q + at.row_offset(i, g.q_rows), g.dim);
      s.row(i).noalias() = (k * query).transpose();
    }
  }
  finish_scores(s, bias, before, policy, b, at, k0, kind, keys.index);
}

/// One key tile of the online softmax, row by row: the running maxima m (of the scaled
/// scores) and sums l take in the tile's scores s (unscaled: exponent multiplies them), s
/// becomes P = exp(s * exponent - m), and the output accumulator's rows are rescaled by
/// exp(m_old - m). A row with no allowed key so far keeps m = -inf and gets P = 0.
// s: [rows, cols] (contiguous), m, l: [rows], acc: [rows, D]
template <class T>
void online_softmax_tile(RowMatrix<T>& s, T exponent, Eigen::Array<T, Eigen::Dynamic, 1>& m,
                         Eigen::Array<T, Eigen::Dynamic, 1>& l, RowMatrix<T>& acc) {
  const std::int64_t cols = s.cols();
  for (std::int64_t i = 0; i < s.rows(); ++i) {
    T* row = s.data() + i * cols;
    ArrayMap<T> p(row, cols);
    // Eigen's packet reductions: a tile row is too short for the NaN-aware max_contiguous
    // or the 32 lanes of sum_contiguous to pay off.
    const T m_new = std::max(m(i), p.maxCoeff() * exponent);
    if (m_new == -std::numeric_limits<T>::infinity()) {
      std::fill(row, row + cols, T(0));
      continue;
    }
    const T alpha = std::exp(m(i) - m_new);  // 0 while m(i) was -inf
    p = vexp(p * exponent - m_new);
    l(i) = l(i) * alpha + p.sum();
    if (alpha != T(1)) acc.row(i) *= alpha;
    m(i) = m_new;
  }
}

/// The key (or value) rows of every key set transposed tile by tile: for each key tile of
/// g.tile_k keys from k0, a [D, tile_k] block at offset k0 * D of the set's part (the B
/// operand of Q K^T and dO V^T, its rows g.tile_k apart so that a tile's rows do not share
/// the L1 cache sets that rows Tk floats apart would).
// rows of set i: [count_i, D] -> per set: [ceil(Tk / tile_k), D, tile_k]
template <class T>
std::vector<T> transposed_key_tiles(const std::vector<KeySet<T>>& keysets, bool values, const AttentionGeometry& g) {
  const std::int64_t set_size = transposed_set_size(g);
  std::vector<T> out(static_cast<std::size_t>(g.batch * g.kv_heads * set_size));
  const auto sets = static_cast<std::int64_t>(keysets.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < sets; ++i) {
    const KeySet<T>& keys = keysets[static_cast<std::size_t>(i)];
    const T* rows = values ? keys.v : keys.k;
    const std::int64_t stride = values ? keys.v_stride : keys.k_stride;
    for (std::int64_t k0 = 0; k0 < keys.count; k0 += g.tile_k) {
      const std::int64_t cols = std::min<std::int64_t>(g.tile_k, keys.count - k0);
      MutMap<T>(out.data() + i * set_size + k0 * g.dim, g.dim, cols, Eigen::OuterStride<>(g.tile_k)) =
          ConstMap<T>(rows + k0 * stride, cols, g.dim, Eigen::OuterStride<>(stride)).transpose();
    }
  }
  return out;
}

/// Kind of the tile of queries [q0,q1) and (gathered) keys [k0,k1). For gathered keys the
/// original positions span [pos(k0), pos(k1-1)]; classifying that whole range is
/// conservative for the subset.
template <class T, class Policy>
TileKind classify_tile(const Policy& policy, const AttentionGeometry& g, int b, std::int64_t q0, std::int64_t q1,
                       std::int64_t k0, std::int64_t k1, const KeySet<T>& keys) {
  if (!g.skip_tiles) return TileKind::Partial;
  return policy.classify(b, static_cast<int>(q0), static_cast<int>(q1), static_cast<int>(keys.pos(k0)),
                         static_cast<int>(keys.pos(k1 - 1) + 1));
}

}  // namespace detail

namespace detail {

/// Forward over given key sets (one per batch * kv head).
template <class T, class Policy>
AttentionTileStats forward_over_keys(const T* q, const std::vector<KeySet<T>>& keysets, const T* bias, T* out, T* lse,
                                     const AttentionGeometry& g, const Policy& policy) {
  const std::int64_t group = g.heads / g.kv_heads;
  // A few queries per (batch, head), as in a decode step or a short chunk after a cache:
  // their scores are formed over the keys as they lie (decode_scores), so the keys are not
  // transposed (which would cost as much as the attention itself). With grouped heads, one
  // work item then takes the queries of every head of a kv head's group, so each key and
  // value row is read once for all of them, unless that leaves threads without work.
  const bool few_queries = g.tq <= g.in_place_keys_max_queries;
  const bool grouped =
      few_queries && g.group_query_heads && group > 1 && g.batch * g.kv_heads >= omp_get_max_threads();
  // A work item: `rows` query rows of head h0 (queries q0..) or the queries of heads h0..
  // (grouped; few queries are one query tile, q0 = 0).
  const std::int64_t item_heads = grouped ? group : 1;
  const std::int64_t q_tiles = grouped ? 1 : (g.tq + g.tile_q - 1) / g.tile_q;
  const std::int64_t work = g.batch * (g.heads / item_heads) * q_tiles;
  const std::vector<T> key_tiles = few_queries ? std::vector<T>() : transposed_key_tiles(keysets, false, g);
  const ScoreScale<T> score_scale(static_cast<T>(g.scale), bias != nullptr);
  std::int64_t n_empty = 0, n_partial = 0, n_full = 0;
#pragma omp parallel reduction(+ : n_empty, n_partial, n_full)
  {
    RowMatrix<T> s, acc, q_transposed, scores_transposed;
    Eigen::Array<T, Eigen::Dynamic, 1> m, l;
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t w = 0; w < work; ++w) {
      const std::int64_t qt = q_tiles - 1 - w % q_tiles;  // longest (last) query tiles first
      const std::int64_t item = w / q_tiles, items_per_batch = g.heads / item_heads;
      const std::int64_t b = item / items_per_batch, h0 = item % items_per_batch * item_heads, kvh = h0 / group;
      const std::int64_t q0 = qt * g.tile_q, q1 = grouped ? g.tq : std::min(g.tq, q0 + g.tile_q);
      const std::int64_t rows = item_heads * (q1 - q0);
      // Grouped rows run through one head's queries, then the next head's: q, out and the
      // bias step by token, then by head (a bias shared by the heads repeats).
      const ScoreRows at{q0, q1 - q0, g.bias_heads == 1 ? 0 : g.tq * g.tk, g.tk};
      const T* qp = q + g.q_rows.at(b, h0, q0);
      const KeySet<T>& keys = keysets[static_cast<std::size_t>(b * g.kv_heads + kvh)];
      const T* ktp = few_queries ? nullptr : key_tiles.data() + (b * g.kv_heads + kvh) * transposed_set_size(g);
      const T* vp = keys.v;
      const T* bp = bias ? bias + ((b * g.bias_heads + (g.bias_heads == 1 ? 0 : h0)) * g.tq + q0) * g.tk : nullptr;
      const bool scores_by_product = few_queries && rows >= decode_product_min_rows;
      if (scores_by_product) {
        q_transposed.resize(g.dim, rows);
        for (std::int64_t i = 0; i < rows; ++i)
          q_transposed.col(i) =
              Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(qp + at.row_offset(i, g.q_rows), g.dim);
      }
      acc.setZero(rows, g.dim);
      m.setConstant(rows, -std::numeric_limits<T>::infinity());
      l.setZero(rows);
      for (std::int64_t k0 = 0; k0 < keys.count; k0 += g.tile_k) {
        const std::int64_t k1 = std::min(keys.count, k0 + g.tile_k), cols = k1 - k0;
        const TileKind kind = classify_tile(policy, g, static_cast<int>(b), q0, q1, k0, k1, keys);
        // Counted per (batch, head, query tile), grouped or not.
        (kind == TileKind::Empty ? n_empty : kind == TileKind::Full ? n_full : n_partial) += item_heads;
        if (kind == TileKind::Empty) continue;
        if (few_queries) {
          decode_scores(s, scores_transposed, qp, scores_by_product ? q_transposed.data() : nullptr, rows, keys,
                        bp ? bp + k0 : nullptr, score_scale.before, g, policy, static_cast<int>(b), at, k0, cols, kind);
        } else {
          tile_scores(s, qp, g.q_rows.token, ktp + k0 * g.dim, bp ? bp + k0 : nullptr, score_scale.before, g, policy,
                      static_cast<int>(b), q0, rows, k0, cols, kind, keys.index);
        }
        online_softmax_tile(s, score_scale.exponent, m, l, acc);  // s becomes P
        tile_gemm<T>(rows, g.dim, cols, {s.data(), cols, 1}, vp + k0 * keys.v_stride, keys.v_stride, acc.data(), g.dim,
                     true);  // O += P V
      }
      T* out_first = out + g.out_rows.at(b, h0, q0);
      // lse is [B, H, Tq]: consecutive rows are consecutive queries, then heads (grouped).
      T* lse_row = lse + (b * g.heads + h0) * g.tq + q0;
      for (std::int64_t i = 0; i < rows; ++i) {
        Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> o(out_first + at.row_offset(i, g.out_rows), g.dim);
        if (l(i) > T(0)) {
          o = acc.row(i) / l(i);
          lse_row[i] = m(i) + std::log(l(i));
        } else {
          o.setZero();
          lse_row[i] = -std::numeric_limits<T>::infinity();
        }
      }
    }
  }
  return {n_empty, n_partial, n_full};
}

/// Backward over given key sets; dk/dv rows are those of the key sets (gathered or not),
/// laid out as dk_rows / dv_rows say.
template <class T, class Policy>
void backward_over_keys(const T* q, const std::vector<KeySet<T>>& keysets, const T* bias, const T* out, const T* lse,
                        const T* dout, T* dq, T* dk, T* dv, T* dbias, const AttentionGeometry& g, const RowLayout& dk_rows,
                        const RowLayout& dv_rows, const Policy& policy) {
  const std::int64_t group = g.heads / g.kv_heads;
  const std::int64_t q_tiles = (g.tq + g.tile_q - 1) / g.tile_q;
  // delta[b,h,i] = rowsum(dO * O)
  std::vector<T> delta(static_cast<std::size_t>(g.batch * g.heads * g.tq));
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < g.batch * g.heads * g.tq; ++r) {
    const std::int64_t b = r / (g.heads * g.tq), h = r / g.tq % g.heads, t = r % g.tq;
    const T* dout_row = dout + g.dout_rows.at(b, h, t);
    const T* out_row = out + g.out_rows.at(b, h, t);
    T sum = 0;
    for (std::int64_t d = 0; d < g.dim; ++d) sum += dout_row[d] * out_row[d];
    delta[static_cast<std::size_t>(r)] = sum;
  }
  const T scale = static_cast<T>(g.scale);
  const ScoreScale<T> score_scale(scale, bias != nullptr);
  const std::vector<T> key_tiles = transposed_key_tiles(keysets, false, g);
  const std::vector<T> value_tiles = transposed_key_tiles(keysets, true, g);
#pragma omp parallel
  {
    RowMatrix<T> s, dp;
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t bk = 0; bk < g.batch * g.kv_heads; ++bk) {
      const std::int64_t b = bk / g.kv_heads, kvh = bk % g.kv_heads;
      const KeySet<T>& keys = keysets[static_cast<std::size_t>(bk)];
      const T* kp = keys.k;
      const T* ktp = key_tiles.data() + bk * transposed_set_size(g);
      const T* vtp = value_tiles.data() + bk * transposed_set_size(g);
      MutMap<T> dk_all(dk + dk_rows.at(b, kvh, 0), g.tk, g.dim, Eigen::OuterStride<>(dk_rows.token));
      MutMap<T> dv_all(dv + dv_rows.at(b, kvh, 0), g.tk, g.dim, Eigen::OuterStride<>(dv_rows.token));
      dk_all.setZero();
      dv_all.setZero();
      for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const std::int64_t bh = b * g.heads + h;
        MutMap<T> dq_all(dq + g.dq_rows.at(b, h, 0), g.tq, g.dim, Eigen::OuterStride<>(g.dq_rows.token));
        dq_all.setZero();
        if (dbias) std::fill(dbias + bh * g.tq * g.tk, dbias + (bh + 1) * g.tq * g.tk, T(0));
        for (std::int64_t qt = 0; qt < q_tiles; ++qt) {
          const std::int64_t q0 = qt * g.tile_q, q1 = std::min(g.tq, q0 + g.tile_q), rows = q1 - q0;
          const T* qp = q + g.q_rows.at(b, h, q0);
          const T* dop = dout + g.dout_rows.at(b, h, q0);
          const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> lse_t(lse + bh * g.tq + q0, rows);
          const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> delta_t(delta.data() + bh * g.tq + q0, rows);
          // Rows with no allowed key (lse = -inf) get zero probability everywhere.
          const Eigen::Array<T, Eigen::Dynamic, 1> shift =
              (lse_t == -std::numeric_limits<T>::infinity()).select(std::numeric_limits<T>::infinity(), lse_t);
          const T* bp = bias ? bias + ((b * g.bias_heads + (g.bias_heads == 1 ? 0 : h)) * g.tq + q0) * g.tk : nullptr;
          for (std::int64_t k0 = 0; k0 < keys.count; k0 += g.tile_k) {
            const std::int64_t k1 = std::min(keys.count, k0 + g.tile_k), cols = k1 - k0;
            const TileKind kind = classify_tile(policy, g, static_cast<int>(b), q0, q1, k0, k1, keys);
            if (kind == TileKind::Empty) continue;
            tile_scores(s, qp, g.q_rows.token, ktp + k0 * g.dim, bp ? bp + k0 : nullptr, score_scale.before, g, policy,
                        static_cast<int>(b), q0, rows, k0, cols, kind, keys.index);
            for (std::int64_t i = 0; i < rows; ++i)  // P
              s.row(i).array() = vexp(s.row(i).array() * score_scale.exponent - shift(i));
            T* dv_tile = dv_all.data() + k0 * dv_rows.token;
            T* dk_tile = dk_all.data() + k0 * dk_rows.token;
            tile_gemm<T>(cols, g.dim, rows, {s.data(), 1, cols}, dop, g.dout_rows.token, dv_tile, dv_rows.token,
                         true);  // dV += P^T dO
            dp.resize(rows, cols);
            tile_gemm<T>(rows, cols, g.dim, {dop, g.dout_rows.token, 1}, vtp + k0 * g.dim, g.tile_k, dp.data(), cols,
                         false);  // dP = dO V^T
            s = (s.array() * (dp.array().colwise() - delta_t)).matrix();  // dS (before scale)
            if (dbias) MutMap<T>(dbias + (bh * g.tq + q0) * g.tk + k0, rows, cols, Eigen::OuterStride<>(g.tk)) = s;
            s *= scale;
            tile_gemm<T>(rows, g.dim, cols, {s.data(), cols, 1}, kp + k0 * keys.k_stride, keys.k_stride,
                         dq_all.data() + q0 * g.dq_rows.token, g.dq_rows.token, true);  // dQ += scale dS K
            tile_gemm<T>(cols, g.dim, rows, {s.data(), 1, cols}, qp, g.q_rows.token, dk_tile, dk_rows.token,
                         true);  // dK += scale dS^T Q
          }
        }
      }
    }
  }
}

/// One KeySet per (batch, kv head) over all keys.
template <class T>
std::vector<KeySet<T>> all_keys(const T* k, const T* v, const AttentionGeometry& g) {
  std::vector<KeySet<T>> sets(static_cast<std::size_t>(g.batch * g.kv_heads));
  for (std::int64_t bk = 0; bk < g.batch * g.kv_heads; ++bk) {
    const std::int64_t b = bk / g.kv_heads, kvh = bk % g.kv_heads;
    sets[static_cast<std::size_t>(bk)] = {k + g.k_rows.at(b, kvh, 0), v + g.v_rows.at(b, kvh, 0), nullptr, g.tk,
                                          g.k_rows.token, g.v_rows.token};
  }
  return sets;
}

/// One KeySet per (batch, kv head) over the gathered kept keys.
template <class T>
std::vector<KeySet<T>> kept_keys(const GatheredKeys<T>& gathered, const AttentionGeometry& g) {
  std::vector<KeySet<T>> sets(static_cast<std::size_t>(g.batch * g.kv_heads));
  for (std::int64_t bk = 0; bk < g.batch * g.kv_heads; ++bk) {
    const std::int64_t b = bk / g.kv_heads;
    sets[static_cast<std::size_t>(bk)] = {gathered.k.data() + bk * g.tk * g.dim, gathered.v.data() + bk * g.tk * g.dim,
                                          gathered.index.data() + b * g.tk, gathered.count[static_cast<std::size_t>(b)],
                                          g.dim, g.dim};
  }
  return sets;
}

/// Whether the kept-key path applies: a key-filtered policy, no bias, tile skipping on.
template <class Policy>
bool gathers_keys(const AttentionGeometry& g, bool has_bias) {
  return KeyFilteredMask<Policy> && !has_bias && g.skip_tiles;
}

}  // namespace detail

/// Forward: out [B,H,Tq,D] and lse [B,H,Tq] (-inf for rows with no allowed key; their
/// output is zero). bias is [B, bias_heads, Tq, Tk] or null. q, k, v and out are laid out
/// as g's RowLayouts say; out must not overlap itself.
template <class T, class Policy>
AttentionTileStats attention_forward(const T* q, const T* k, const T* v, const T* bias, T* out, T* lse,
                                     const AttentionGeometry& geometry, const Policy& policy) {
  AttentionGeometry g = geometry;
  g.resolve_layouts();
  if constexpr (KeyFilteredMask<Policy>) {
    if (detail::gathers_keys<Policy>(g, bias != nullptr)) {
      const auto gathered = detail::gather_kept_keys(k, v, g, policy);
      return detail::forward_over_keys(q, detail::kept_keys(gathered, g), bias, out, lse, g, policy.key_base());
    }
  }
  return detail::forward_over_keys(q, detail::all_keys(k, v, g), bias, out, lse, g, policy);
}

/// Backward from the saved out/lse. Writes dq [B,H,Tq,D], dk/dv [B,Hkv,Tk,D] (overwritten),
/// and, when dbias is non-null, dbias [B,H,Tq,Tk] per head (the caller reduces over heads
/// for a shared bias). Every [B, heads, T, D] operand is laid out as g's RowLayouts say;
/// dq, dk and dv must not overlap themselves.
template <class T, class Policy>
void attention_backward(const T* q, const T* k, const T* v, const T* bias, const T* out, const T* lse, const T* dout,
                        T* dq, T* dk, T* dv, T* dbias, const AttentionGeometry& geometry, const Policy& policy) {
  AttentionGeometry g = geometry;
  g.resolve_layouts();
  if constexpr (KeyFilteredMask<Policy>) {
    if (detail::gathers_keys<Policy>(g, bias != nullptr)) {
      const auto gathered = detail::gather_kept_keys(k, v, g, policy);
      std::vector<T> dk_kept(gathered.k.size()), dv_kept(gathered.v.size());
      const RowLayout kept_rows = RowLayout::contiguous(g.kv_heads, g.tk, g.dim);
      detail::backward_over_keys(q, detail::kept_keys(gathered, g), bias, out, lse, dout, dq, dk_kept.data(),
                                 dv_kept.data(), dbias, g, kept_rows, kept_rows, policy.key_base());
      // Scatter the kept keys' gradients back; dropped keys get zero.
#pragma omp parallel for schedule(static)
      for (std::int64_t bk = 0; bk < g.batch * g.kv_heads; ++bk) {
        const std::int64_t b = bk / g.kv_heads, kvh = bk % g.kv_heads;
        detail::MutMap<T>(dk + g.dk_rows.at(b, kvh, 0), g.tk, g.dim, Eigen::OuterStride<>(g.dk_rows.token)).setZero();
        detail::MutMap<T>(dv + g.dv_rows.at(b, kvh, 0), g.tk, g.dim, Eigen::OuterStride<>(g.dv_rows.token)).setZero();
        for (std::int64_t j = 0; j < gathered.count[static_cast<std::size_t>(b)]; ++j) {
          const std::int64_t key = gathered.index[static_cast<std::size_t>(b * g.tk + j)];
          const std::int64_t src = (bk * g.tk + j) * g.dim;
          std::copy(dk_kept.data() + src, dk_kept.data() + src + g.dim, dk + g.dk_rows.at(b, kvh, key));
          std::copy(dv_kept.data() + src, dv_kept.data() + src + g.dim, dv + g.dv_rows.at(b, kvh, key));
        }
      }
      return;
    }
  }
  detail::backward_over_keys(q, detail::all_keys(k, v, g), bias, out, lse, dout, dq, dk, dv, dbias, g, g.dk_rows,
                             g.dv_rows, policy);
}

}  // namespace condense::cpu
