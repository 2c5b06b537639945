// The mask-policy vocabulary: TileKind, the MaskPolicy concept, check_mask_policy (one
// readable static_assert per requirement, for entry points templated on a policy), the
// optional host-side validate hook, and the tile helpers built-in and user policies share
// (exact classification of diagonal bands, combining the kinds of the parts of a tile).
#pragma once

#include <climits>
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "condense/core/config.hpp"
#include "condense/core/error.hpp"

namespace condense {

/// What a mask policy says about a whole tile of (query, key) pairs.
/// Empty: no pair is allowed (the tile is skipped). Full: every pair is allowed (no
/// per-element predicate). Partial: anything else, or "not known cheaply".
enum class TileKind : std::uint8_t { Empty, Partial, Full };

/// A mask policy: a small trivially copyable struct whose members are callable on host and
/// device. `allowed(b, q, k)`: may query q of batch row b attend to key k.
/// `classify(b, q0, q1, k0, k1)`: the kind of tile [q0,q1) x [k0,k1) (both ranges non-empty);
/// it must be conservative: Full only if every pair is allowed, Empty only if none is.
template <class M>
concept MaskPolicy = requires(const M m, int b, int q, int k, int q0, int q1, int k0, int k1) {
  { m.allowed(b, q, k) } -> std::same_as<bool>;
  { m.classify(b, q0, q1, k0, k1) } -> std::same_as<TileKind>;  // tile [q0,q1) x [k0,k1)
};

namespace detail {

template <class M>
concept mask_has_allowed = requires(const M m, int b, int q, int k) { m.allowed(b, q, k); };
template <class M>
concept mask_allowed_is_bool = requires(const M m, int b, int q, int k) {
  { m.allowed(b, q, k) } -> std::same_as<bool>;
};
template <class M>
concept mask_has_classify = requires(const M m, int b, int q0, int q1, int k0, int k1) { m.classify(b, q0, q1, k0, k1); };
template <class M>
concept mask_classify_is_tile_kind = requires(const M m, int b, int q0, int q1, int k0, int k1) {
  { m.classify(b, q0, q1, k0, k1) } -> std::same_as<TileKind>;
};

}  // namespace detail

/// Checks the members a mask policy needs (allowed and classify, their signatures and
/// return types), with one static_assert per requirement. Returns MaskPolicy<Policy>.
/// Host-only code (materialize, combinators) needs only this; kernels need check_mask_policy.
template <class Policy>
constexpr CONDENSE_HD bool check_mask_policy_members() {
  using M = std::remove_cvref_t<Policy>;
  static_assert(detail::mask_has_allowed<M>,
                "condense mask policy: missing member `bool allowed(int b, int q, int k) const` "
                "(may query q of batch row b attend to key k; must be callable on a const policy)");
  static_assert(!detail::mask_has_allowed<M> || detail::mask_allowed_is_bool<M>,
                "condense mask policy: `allowed(b, q, k)` must return exactly bool");
  static_assert(detail::mask_has_classify<M>,
                "condense mask policy: missing member `TileKind classify(int b, int q0, int q1, int k0, int k1) const` "
                "(kind of tile [q0,q1) x [k0,k1): Full only if every pair is allowed, Empty only if none is; "
                "return TileKind::Partial when unsure)");
  static_assert(!detail::mask_has_classify<M> || detail::mask_classify_is_tile_kind<M>,
                "condense mask policy: `classify(b, q0, q1, k0, k1)` must return exactly condense::TileKind");
  return MaskPolicy<M>;
}

/// Checks that Policy (cv and references ignored) is a usable mask policy for the attention
/// kernels: the members of check_mask_policy_members, and trivially copyable (it is passed
/// by value to kernels). One static_assert per requirement, so that a policy missing one
/// gets a message naming it (the compiler names the policy type in the instantiation
/// note). Returns true when it passes. Call it first in every entry point templated on a
/// policy; to keep the rest of the body from adding follow-on errors, use
///   if constexpr (!check_mask_policy<Policy>()) return {}; else { ... }
template <class Policy>
constexpr CONDENSE_HD bool check_mask_policy() {
  using M = std::remove_cvref_t<Policy>;
  constexpr bool members = check_mask_policy_members<M>();
  static_assert(std::is_trivially_copyable_v<M>,
                "condense mask policy: the policy must be trivially copyable (it is passed by value to kernels); "
                "hold per-row data as raw pointers + lengths, not std::vector or std::function");
  return members && std::is_trivially_copyable_v<M>;
}

/// A policy whose mask factors into a per-key filter and a simpler base policy:
/// allowed(b, q, k) == key_kept(b, k) && key_base().allowed(b, q, k). Kernels may gather
/// the kept keys of each row and run the base policy over them (token pruning).
template <class M>
concept KeyFilteredMask = requires(const M m, int b, int k) {
  { m.key_kept(b, k) } -> std::same_as<bool>;
  { m.key_base() } -> MaskPolicy;
};

/// Policies with runtime parameters that must fit the attention problem may define
///   void validate(const char* op, int batch, int tq, int tk) const;   // host only
/// which throws condense::Error (e.g. a keep bitmap shorter than Tk). It checks sizes and
/// pointers only and never reads the per-row arrays (they may live on a GPU).
template <class M>
concept ValidatedMask = requires(const M m, const char* op, int batch, int tq, int tk) { m.validate(op, batch, tq, tk); };

/// Checks the problem size (non-negative, fits in int) and calls `m.validate` when the
/// policy has it. Entry points call this on the host before running a kernel.
template <class M>
void validate_mask(const M& m, const char* op, std::int64_t batch, std::int64_t tq, std::int64_t tk) {
  CONDENSE_CHECK(batch >= 0 && tq >= 0 && tk >= 0, op, "mask sizes must be non-negative, got batch ", batch, ", Tq ",
                 tq, ", Tk ", tk);
  CONDENSE_CHECK(batch <= INT_MAX && tq <= INT_MAX && tk <= INT_MAX, op, "mask sizes must fit in int, got batch ",
                 batch, ", Tq ", tq, ", Tk ", tk);
  if constexpr (ValidatedMask<M>) m.validate(op, static_cast<int>(batch), static_cast<int>(tq), static_cast<int>(tk));
}

namespace mask {

/// Sentinel for "no bound" in band classification and window sizes.
inline constexpr long long unbounded = static_cast<long long>(INT_MAX) * 4;

/// Exact kind of the tile [q0,q1) x [k0,k1) for the band lo <= k - q <= hi (a rectangle
/// covers every difference between its extremes, so this is exact). Causal with offset o
/// is the band (-unbounded, o]; a sliding window is a finite band.
constexpr CONDENSE_HD TileKind classify_band(int q0, int q1, int k0, int k1, long long lo, long long hi) {
  const long long dmin = static_cast<long long>(k0) - (static_cast<long long>(q1) - 1);
  const long long dmax = (static_cast<long long>(k1) - 1) - static_cast<long long>(q0);
  if (lo > hi || dmax < lo || dmin > hi) return TileKind::Empty;
  if (dmin >= lo && dmax <= hi) return TileKind::Full;
  return TileKind::Partial;
}

/// Exact kind of a tile under "k <= q + offset".
constexpr CONDENSE_HD TileKind classify_causal(int q0, int q1, int k0, int k1, int offset = 0) {
  return classify_band(q0, q1, k0, k1, -unbounded, offset);
}

/// Conservative kind of A-and-B from the kinds of A and B.
constexpr CONDENSE_HD TileKind intersect_kinds(TileKind a, TileKind b) {
  if (a == TileKind::Empty || b == TileKind::Empty) return TileKind::Empty;
  if (a == TileKind::Full && b == TileKind::Full) return TileKind::Full;
  return TileKind::Partial;
}

/// Conservative kind of A-or-B from the kinds of A and B.
constexpr CONDENSE_HD TileKind union_kinds(TileKind a, TileKind b) {
  if (a == TileKind::Full || b == TileKind::Full) return TileKind::Full;
  if (a == TileKind::Empty && b == TileKind::Empty) return TileKind::Empty;
  return TileKind::Partial;
}

/// Classifies a tile from a partition of it into sub-tiles: add() the exact kind of each
/// non-empty part; result() is exact when every part's kind is. Stop adding once mixed().
struct TileParts {
  bool any_allowed = false;
  bool any_masked = false;
  /// Adds the kind of one non-empty part.
  constexpr CONDENSE_HD void add(TileKind kind) {
    any_allowed = any_allowed || kind != TileKind::Empty;
    any_masked = any_masked || kind != TileKind::Full;
  }
  /// True once both an allowed and a masked pair are known (the result is Partial).
  constexpr CONDENSE_HD bool mixed() const { return any_allowed && any_masked; }
  /// The kind of the whole tile (Empty when no part was added).
  constexpr CONDENSE_HD TileKind result() const {
    if (!any_allowed) return TileKind::Empty;
    return any_masked ? TileKind::Partial : TileKind::Full;
  }
};

namespace detail {

constexpr CONDENSE_HD int imin(int a, int b) { return a < b ? a : b; }
constexpr CONDENSE_HD int imax(int a, int b) { return a > b ? a : b; }
/// x clamped to [lo, hi] (lo <= hi), computed without overflow.
constexpr CONDENSE_HD int clamp_to(long long x, int lo, int hi) {
  return x < lo ? lo : (x > hi ? hi : static_cast<int>(x));
}
/// Floor division for b > 0 (positions may be shifted below zero by offsets).
constexpr CONDENSE_HD long long floor_div(long long a, long long b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace detail
}  // namespace mask
}  // namespace condense
