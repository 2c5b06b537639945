// Host-side tools over any mask policy: materialize (the mask as a Tensor<bool>, from
// allowed() alone, the oracle for kernels), tile_map (the TileKind of every tile),
// count_allowed / density (allowed pairs, for FLOP counting) and check_classify (verifies
// that a policy's classify is conservative on a tile grid, and how tight it is).
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "condense/backend/cpu/parallel.hpp"
#include "condense/core/error.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/mask/policy.hpp"

namespace condense {

/// The TileKind of every tile of one batch row, on the grid of tiles [i*tile_q, (i+1)*tile_q)
/// x [j*tile_k, (j+1)*tile_k) clipped to Tq x Tk (the grid an attention kernel walks).
struct TileMap {
  std::int64_t tq = 0, tk = 0;            ///< mask size
  std::int64_t tile_q = 1, tile_k = 1;    ///< tile size
  std::int64_t tiles_q = 0, tiles_k = 0;  ///< number of tile rows and columns
  std::vector<TileKind> kinds;            ///< [tiles_q * tiles_k], row-major

  /// Kind of tile (i, j).
  TileKind at(std::int64_t i, std::int64_t j) const {
    CONDENSE_CHECK(i >= 0 && i < tiles_q && j >= 0 && j < tiles_k, "tile_map", "tile (", i, ", ", j,
                   ") out of range for a ", tiles_q, "x", tiles_k, " tile map");
    return kinds[static_cast<std::size_t>(i * tiles_k + j)];
  }
  /// Number of tiles of `kind`.
  std::int64_t count(TileKind kind) const {
    std::int64_t n = 0;
    for (TileKind k : kinds) n += k == kind;
    return n;
  }
};

/// What check_classify found: tiles by the kind classify gave, and how many Partial tiles
/// were in fact uniform (all allowed or all masked): 0 means classify is exact on the grid.
struct ClassifyReport {
  std::int64_t full = 0, partial = 0, empty = 0;
  std::int64_t partial_but_full = 0, partial_but_empty = 0;
};

namespace detail {

inline void check_tile_sizes(const char* op, std::int64_t tile_q, std::int64_t tile_k) {
  CONDENSE_CHECK(tile_q > 0 && tile_k > 0 && tile_q <= INT_MAX && tile_k <= INT_MAX, op,
                 "tile sizes must be positive, got ", tile_q, "x", tile_k);
}

/// Writes row b of the mask into out[tq * tk] (from allowed() only).
template <class M>
void fill_mask(const M& m, int b, int tq, int tk, bool* out) {
  const std::int64_t grain = std::max<std::int64_t>(1, 16384 / std::max(tk, 1));
  cpu::parallel_for(0, tq, grain, [&](std::int64_t q0, std::int64_t q1) {
    for (std::int64_t q = q0; q < q1; ++q) {
      bool* row = out + q * tk;
      for (int k = 0; k < tk; ++k) row[k] = m.allowed(b, static_cast<int>(q), k);
    }
  });
}

/// Allowed pairs of row b, tile by tile: Full tiles count their area, Empty tiles nothing,
/// Partial tiles are counted element by element.
template <class M>
std::int64_t count_row(const M& m, int b, int tq, int tk) {
  constexpr int tile = 64;
  const int tiles_q = (tq + tile - 1) / tile;
  std::vector<std::int64_t> per_tile_row(static_cast<std::size_t>(tiles_q), 0);
  cpu::parallel_for(0, tiles_q, 1, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      const int q0 = static_cast<int>(i) * tile, q1 = std::min(tq, q0 + tile);
      std::int64_t n = 0;
      for (int k0 = 0; k0 < tk; k0 += tile) {
        const int k1 = std::min(tk, k0 + tile);
        const TileKind kind = m.classify(b, q0, q1, k0, k1);
        if (kind == TileKind::Full) {
          n += static_cast<std::int64_t>(q1 - q0) * (k1 - k0);
        } else if (kind == TileKind::Partial) {
          for (int q = q0; q < q1; ++q)
            for (int k = k0; k < k1; ++k) n += m.allowed(b, q, k);
        }
      }
      per_tile_row[static_cast<std::size_t>(i)] = n;
    }
  });
  std::int64_t total = 0;
  for (auto n : per_tile_row) total += n;
  return total;
}

}  // namespace detail

/// Row b of the mask: out[q][k] = policy.allowed(b, q, k). Uses allowed() only (never
/// classify), so it is an independent oracle for the tile-skipping kernels. The policy's
/// per-row arrays must be readable on the host.
// -> [Tq, Tk]
template <class M>
Tensor<bool> materialize(const M& policy, std::int64_t b, std::int64_t tq, std::int64_t tk) {
  if constexpr (!check_mask_policy_members<M>()) {
    return {};
  } else {
    constexpr const char* op = "materialize";
    CONDENSE_CHECK(b >= 0, op, "batch row must be >= 0, got ", b);
    validate_mask(policy, op, b + 1, tq, tk);
    Tensor<bool> out = Tensor<bool>::empty({tq, tk});
    if (tq > 0 && tk > 0) detail::fill_mask(policy, static_cast<int>(b), static_cast<int>(tq), static_cast<int>(tk), out.data());
    return out;
  }
}

/// The mask of every batch row: out[b][q][k] = policy.allowed(b, q, k) (see materialize).
// -> [B, Tq, Tk]
template <class M>
Tensor<bool> materialize_batch(const M& policy, std::int64_t batch, std::int64_t tq, std::int64_t tk) {
  if constexpr (!check_mask_policy_members<M>()) {
    return {};
  } else {
    validate_mask(policy, "materialize_batch", batch, tq, tk);
    Tensor<bool> out = Tensor<bool>::empty({batch, tq, tk});
    if (tq > 0 && tk > 0)
      for (std::int64_t b = 0; b < batch; ++b)
        detail::fill_mask(policy, static_cast<int>(b), static_cast<int>(tq), static_cast<int>(tk), out.data() + b * tq * tk);
    return out;
  }
}

/// The classify() answer for every tile of row b on the grid of tile_q x tile_k tiles
/// (the last row and column of tiles clipped to Tq, Tk).
template <class M>
TileMap tile_map(const M& policy, std::int64_t b, std::int64_t tq, std::int64_t tk, std::int64_t tile_q,
                 std::int64_t tile_k) {
  if constexpr (!check_mask_policy_members<M>()) {
    return {};
  } else {
    constexpr const char* op = "tile_map";
    CONDENSE_CHECK(b >= 0, op, "batch row must be >= 0, got ", b);
    validate_mask(policy, op, b + 1, tq, tk);
    detail::check_tile_sizes(op, tile_q, tile_k);
    TileMap map;
    map.tq = tq;
    map.tk = tk;
    map.tile_q = tile_q;
    map.tile_k = tile_k;
    map.tiles_q = (tq + tile_q - 1) / tile_q;
    map.tiles_k = (tk + tile_k - 1) / tile_k;
    map.kinds.reserve(static_cast<std::size_t>(map.tiles_q * map.tiles_k));
    for (std::int64_t i = 0; i < map.tiles_q; ++i) {
      for (std::int64_t j = 0; j < map.tiles_k; ++j) {
        const auto q0 = static_cast<int>(i * tile_q), k0 = static_cast<int>(j * tile_k);
        const auto q1 = static_cast<int>(std::min(tq, (i + 1) * tile_q));
        const auto k1 = static_cast<int>(std::min(tk, (j + 1) * tile_k));
        map.kinds.push_back(policy.classify(static_cast<int>(b), q0, q1, k0, k1));
      }
    }
    return map;
  }
}

/// Number of allowed (query, key) pairs of row b in a Tq x Tk mask, for FLOP counting.
/// Counts whole tiles through classify (Full and Empty tiles cost O(1)), so it relies on a
/// conservative classify; check_classify verifies one.
template <class M>
std::int64_t count_allowed(const M& policy, std::int64_t b, std::int64_t tq, std::int64_t tk) {
  if constexpr (!check_mask_policy_members<M>()) {
    return 0;
  } else {
    constexpr const char* op = "count_allowed";
    CONDENSE_CHECK(b >= 0, op, "batch row must be >= 0, got ", b);
    validate_mask(policy, op, b + 1, tq, tk);
    return detail::count_row(policy, static_cast<int>(b), static_cast<int>(tq), static_cast<int>(tk));
  }
}

/// Number of allowed pairs summed over batch rows 0..batch-1.
template <class M>
std::int64_t count_allowed_batch(const M& policy, std::int64_t batch, std::int64_t tq, std::int64_t tk) {
  if constexpr (!check_mask_policy_members<M>()) {
    return 0;
  } else {
    validate_mask(policy, "count_allowed_batch", batch, tq, tk);
    std::int64_t total = 0;
    for (std::int64_t b = 0; b < batch; ++b)
      total += detail::count_row(policy, static_cast<int>(b), static_cast<int>(tq), static_cast<int>(tk));
    return total;
  }
}

/// Fraction of the Tq x Tk pairs of row b that are allowed (0 for an empty mask).
template <class M>
double density(const M& policy, std::int64_t b, std::int64_t tq, std::int64_t tk) {
  const std::int64_t n = count_allowed(policy, b, tq, tk);
  return tq * tk == 0 ? 0.0 : static_cast<double>(n) / (static_cast<double>(tq) * static_cast<double>(tk));
}

/// Fraction of the batch x Tq x Tk pairs that are allowed (0 for an empty mask).
template <class M>
double density_batch(const M& policy, std::int64_t batch, std::int64_t tq, std::int64_t tk) {
  const std::int64_t n = count_allowed_batch(policy, batch, tq, tk);
  const double total = static_cast<double>(batch) * static_cast<double>(tq) * static_cast<double>(tk);
  return total == 0.0 ? 0.0 : static_cast<double>(n) / total;
}

/// Verifies classify against allowed on every tile of the tile_q x tile_k grid of rows
/// 0..batch-1: throws condense::Error naming the first tile where classify says Full but a
/// pair is masked, or Empty but a pair is allowed. Returns the tile counts and how many
/// Partial answers were not tight. O(batch * Tq * Tk): a debugging and testing aid.
template <class M>
ClassifyReport check_classify(const M& policy, std::int64_t batch, std::int64_t tq, std::int64_t tk,
                              std::int64_t tile_q, std::int64_t tile_k) {
  if constexpr (!check_mask_policy_members<M>()) {
    return {};
  } else {
    constexpr const char* op = "check_classify";
    validate_mask(policy, op, batch, tq, tk);
    detail::check_tile_sizes(op, tile_q, tile_k);
    ClassifyReport report;
    for (std::int64_t b = 0; b < batch; ++b) {
      for (std::int64_t q0 = 0; q0 < tq; q0 += tile_q) {
        for (std::int64_t k0 = 0; k0 < tk; k0 += tile_k) {
          const std::int64_t q1 = std::min(tq, q0 + tile_q), k1 = std::min(tk, k0 + tile_k);
          const TileKind kind = policy.classify(static_cast<int>(b), static_cast<int>(q0), static_cast<int>(q1),
                                                static_cast<int>(k0), static_cast<int>(k1));
          std::int64_t n_allowed = 0, wq = -1, wk = -1;  // witness of a wrong answer
          for (std::int64_t q = q0; q < q1; ++q) {
            for (std::int64_t k = k0; k < k1; ++k) {
              const bool a = policy.allowed(static_cast<int>(b), static_cast<int>(q), static_cast<int>(k));
              n_allowed += a;
              if (wq < 0 && ((kind == TileKind::Full && !a) || (kind == TileKind::Empty && a))) {
                wq = q;
                wk = k;
              }
            }
          }
          CONDENSE_CHECK(wq < 0, op, "classify says ", kind == TileKind::Full ? "Full" : "Empty", " for tile [", q0, ",",
                         q1, ") x [", k0, ",", k1, ") of row ", b, ", but (q ", wq, ", k ", wk, ") is ",
                         kind == TileKind::Full ? "masked" : "allowed");
          const std::int64_t area = (q1 - q0) * (k1 - k0);
          if (kind == TileKind::Full) ++report.full;
          if (kind == TileKind::Empty) ++report.empty;
          if (kind == TileKind::Partial) {
            ++report.partial;
            report.partial_but_full += n_allowed == area;
            report.partial_but_empty += n_allowed == 0;
          }
        }
      }
    }
    return report;
  }
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
