// Mask combinators: Intersect<A, B> (allowed by both) and Union<A, B> (allowed by either),
// with conservative tile classification, the shorthands a & b, a | b for policies, and
// QueryOffset<P>, which runs any policy on queries that continue a KV cache.
#pragma once

#include <climits>

#include "condense/core/config.hpp"
#include "condense/mask/policy.hpp"

namespace condense::mask {

/// Allowed where both A and B allow. classify: Empty if either part is Empty, Full if both
/// are Full, Partial otherwise (B is not asked when A says Empty).
template <class A, class B>
struct Intersect {
  static_assert(check_mask_policy_members<A>() && check_mask_policy_members<B>(), "Intersect<A, B> needs two mask policies");
  A first;
  B second;

  constexpr CONDENSE_HD Intersect(const A& a, const B& b) : first(a), second(b) {}

  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const { return first.allowed(b, q, k) && second.allowed(b, q, k); }
  constexpr CONDENSE_HD TileKind classify(int b, int q0, int q1, int k0, int k1) const {
    const TileKind a = first.classify(b, q0, q1, k0, k1);
    if (a == TileKind::Empty) return TileKind::Empty;
    return intersect_kinds(a, second.classify(b, q0, q1, k0, k1));
  }
  void validate(const char* op, int batch, int tq, int tk) const {
    validate_mask(first, op, batch, tq, tk);
    validate_mask(second, op, batch, tq, tk);
  }
};

/// Allowed where A or B allows. classify: Full if either part is Full, Empty if both are
/// Empty, Partial otherwise (B is not asked when A says Full).
template <class A, class B>
struct Union {
  static_assert(check_mask_policy_members<A>() && check_mask_policy_members<B>(), "Union<A, B> needs two mask policies");
  A first;
  B second;

  constexpr CONDENSE_HD Union(const A& a, const B& b) : first(a), second(b) {}

  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const { return first.allowed(b, q, k) || second.allowed(b, q, k); }
  constexpr CONDENSE_HD TileKind classify(int b, int q0, int q1, int k0, int k1) const {
    const TileKind a = first.classify(b, q0, q1, k0, k1);
    if (a == TileKind::Full) return TileKind::Full;
    return union_kinds(a, second.classify(b, q0, q1, k0, k1));
  }
  void validate(const char* op, int batch, int tq, int tk) const {
    validate_mask(first, op, batch, tq, tk);
    validate_mask(second, op, batch, tq, tk);
  }
};

template <class A, class B>
Intersect(A, B) -> Intersect<A, B>;
template <class A, class B>
Union(A, B) -> Union<A, B>;

/// a & b: Intersect{a, b} (found by argument-dependent lookup for condense::mask policies).
template <MaskPolicy A, MaskPolicy B>
constexpr CONDENSE_HD Intersect<A, B> operator&(const A& a, const B& b) {
  return Intersect<A, B>(a, b);
}

/// a | b: Union{a, b}.
template <MaskPolicy A, MaskPolicy B>
constexpr CONDENSE_HD Union<A, B> operator|(const A& a, const B& b) {
  return Union<A, B>(a, b);
}

/// Query-offset adapter: runs policy P on queries shifted by `offset`,
/// allowed(b, q, k) = inner.allowed(b, q + offset, k). A policy written for a whole
/// sequence (query i and key i are the same token) then serves queries that continue a KV
/// cache of `offset` keys: the new queries are the tokens at key indices offset, offset+1, ...
/// Unlike each policy's own `offset` member, this works for any policy (including user
/// policies without one) and composes: QueryOffset{Causal{}, n} allows exactly what
/// Causal{n} allows. The nn modules wrap every mask in it with the cache length, so a mask
/// is always given in whole-sequence coordinates. classify shifts [q0, q1) the same way,
/// so it is exact whenever P's classify is. Key-filtered policies (Pruned) stay key-filtered.
template <class P>
struct QueryOffset {
  static_assert(check_mask_policy_members<P>(), "QueryOffset<P> needs a mask policy");
  P inner;
  int offset = 0;

  constexpr CONDENSE_HD QueryOffset(const P& policy, int query_offset) : inner(policy), offset(query_offset) {}

  constexpr CONDENSE_HD bool allowed(int b, int q, int k) const { return inner.allowed(b, q + offset, k); }
  constexpr CONDENSE_HD TileKind classify(int b, int q0, int q1, int k0, int k1) const {
    return inner.classify(b, q0 + offset, q1 + offset, k0, k1);
  }
  /// Key filter of a key-filtered inner policy, with the base policy shifted alike.
  constexpr CONDENSE_HD bool key_kept(int b, int k) const
    requires KeyFilteredMask<P>
  {
    return inner.key_kept(b, k);
  }
  constexpr CONDENSE_HD auto key_base() const
    requires KeyFilteredMask<P>
  {
    return QueryOffset<decltype(inner.key_base())>(inner.key_base(), offset);
  }
  /// Checks the offset and lets P check the shifted problem (queries up to offset + tq).
  void validate(const char* op, int batch, int tq, int tk) const {
    CONDENSE_CHECK(offset >= 0, op, "QueryOffset offset must be >= 0, got ", offset);
    CONDENSE_CHECK(static_cast<long long>(offset) + tq <= INT_MAX, op, "QueryOffset offset ", offset, " + Tq ", tq,
                   " overflows int");
    validate_mask(inner, op, batch, static_cast<long long>(offset) + tq, tk);
  }
};

template <class P>
QueryOffset(P, int) -> QueryOffset<P>;

}  // namespace condense::mask
