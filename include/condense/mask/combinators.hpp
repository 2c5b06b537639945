// Mask combinators: Intersect<A, B> (allowed by both) and Union<A, B> (allowed by either),
// with conservative tile classification, and the shorthands a & b, a | b for policies.
#pragma once

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

}  // namespace condense::mask
