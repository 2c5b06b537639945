// The mask policy of the custom_policy_cuda example: a prefix-LM mask (bidirectional over
// the first `prefix` tokens, causal after them). Shared by the .cu file that builds its CUDA
// kernels and the C++ program that uses it; it includes no CUDA header. The declaration at
// the end tells attention() that the kernels exist (prefix_lm_kernels.cu builds them).
#pragma once

#include "condense/backend/cuda/attention.hpp"
#include "condense/mask/policy.hpp"

/// Prefix-LM: every query sees the prefix [0, prefix); after it, keys k <= q.
struct PrefixLM {
  int prefix = 0;

  CONDENSE_HD bool allowed(int /*b*/, int q, int k) const { return k < prefix || k <= q; }

  /// Exact: the prefix part of a tile is Full, the rest a causal band.
  CONDENSE_HD condense::TileKind classify(int /*b*/, int q0, int q1, int k0, int k1) const {
    const int split = prefix < k0 ? k0 : (prefix > k1 ? k1 : prefix);
    condense::mask::TileParts parts;
    if (k0 < split) parts.add(condense::TileKind::Full);
    if (split < k1) parts.add(condense::mask::classify_causal(q0, q1, split, k1));
    return parts.result();
  }
};

CONDENSE_CUDA_DECLARE_ATTENTION(PrefixLM);
