// custom_mask: writing your own mask policy. A prefix-LM mask (bidirectional over the first
// `prefix` tokens, causal after them) with an exact classify built from the library's tile
// helpers, and a dilated causal mask with a merely conservative classify. Both are checked
// against the concept at compile time, verified on a tile grid (classify conservative, and
// how tight), combined with a built-in policy, materialised and printed.
#include <cstdio>

#include "condense/mask/materialize.hpp"
#include "condense/mask/policies.hpp"

using namespace condense;

/// Prefix-LM: every query sees the prefix [0, prefix); after it, keys k <= q.
struct PrefixLM {
  int prefix = 0;

  CONDENSE_HD bool allowed(int /*b*/, int q, int k) const { return k < prefix || k <= q; }

  /// Exact: split the tile's keys at the prefix end. The prefix part is Full; the rest is
  /// a causal band, which classify_causal answers exactly. TileParts combines the parts.
  CONDENSE_HD TileKind classify(int /*b*/, int q0, int q1, int k0, int k1) const {
    const int split = prefix < k0 ? k0 : (prefix > k1 ? k1 : prefix);
    mask::TileParts parts;
    if (k0 < split) parts.add(TileKind::Full);
    if (split < k1) parts.add(mask::classify_causal(q0, q1, split, k1));
    return parts.result();
  }
};

/// Dilated causal: k <= q and (q - k) divisible by `dilation`. classify only needs to be
/// conservative: Empty where the causal part is Empty, Partial elsewhere (a dilation of 1
/// is plain causal, so reuse the exact answer then).
struct DilatedCausal {
  int dilation = 2;

  CONDENSE_HD bool allowed(int, int q, int k) const { return k <= q && (q - k) % dilation == 0; }
  CONDENSE_HD TileKind classify(int, int q0, int q1, int k0, int k1) const {
    const TileKind causal = mask::classify_causal(q0, q1, k0, k1);
    if (causal == TileKind::Empty || dilation == 1) return causal;
    return TileKind::Partial;
  }
};

// What the attention entry points check: the two members with their exact return types,
// and trivially copyable (policies are passed by value to kernels).
static_assert(check_mask_policy<PrefixLM>());
static_assert(check_mask_policy<DilatedCausal>());

template <class M>
void show(const char* title, const M& policy, int tq, int tk, int tile) {
  // Throws if classify ever claims Full over a masked pair or Empty over an allowed one.
  const ClassifyReport report = check_classify(policy, 1, tq, tk, tile, tile);
  std::printf("%s: %lld of %d pairs allowed; %dx%d tiles: %lld full, %lld partial (%lld could be tighter), %lld empty\n",
              title, static_cast<long long>(count_allowed(policy, 0, tq, tk)), tq * tk, tile, tile,
              static_cast<long long>(report.full), static_cast<long long>(report.partial),
              static_cast<long long>(report.partial_but_full + report.partial_but_empty),
              static_cast<long long>(report.empty));
  const auto values = materialize(policy, 0, tq, tk).to_vector();
  for (int q = 0; q < tq; ++q) {
    std::printf("  ");
    for (int k = 0; k < tk; ++k) std::printf("%c", values[static_cast<std::size_t>(q * tk + k)] ? '1' : '.');
    std::printf("\n");
  }
}

int main() {
  show("prefix-LM, prefix 5", PrefixLM{5}, 12, 12, 4);
  show("dilated causal, dilation 3", DilatedCausal{3}, 12, 12, 4);
  // User policies combine with the built-ins (the & and | operators are found through the
  // built-in operand; two user policies combine with mask::Intersect{a, b} / mask::Union{a, b}).
  show("prefix-LM & key padding 10", PrefixLM{5} & mask::KeyPadding(10), 12, 12, 4);
  show("dilated causal | sliding window 1", mask::Union(DilatedCausal{3}, mask::SlidingWindow(1, 0)), 12, 12, 4);
  return 0;
}
