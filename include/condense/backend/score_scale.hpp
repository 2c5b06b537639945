// Where the attention softmax scale multiplies the scores, shared by the CPU attention
// kernels (backend/cpu/attention.hpp) and the CUDA tensor-core kernels
// (kernels/attention/flash_attention_mma.cuh), so both take the same decision.
#pragma once

#include "condense/core/config.hpp"

namespace condense {

/// Where the softmax scale multiplies the scores. With an additive bias (added after the
/// scale) or a scale that is not positive, the scores are scaled as they are formed
/// (`before`). Otherwise they stay unscaled and the scale moves inside the exponential,
/// exp(s * exponent - shift), in the pass that takes it anyway: for a positive scale the
/// row maxima of the unscaled scores are those of the scaled ones divided by the scale, so
/// the maxima can be taken first and scaled once per row. A scale <= 0 would turn the
/// maxima into minima (and -inf times a negative scale into +inf), hence the rule.
template <class T>
struct ScoreScale {
  T before = T(1);    ///< multiplies the scores as they are formed (1: not at all)
  T exponent = T(1);  ///< multiplies them inside the exponential (1: not at all)

  /// `scale`: the softmax scale in the units the kernel exponentiates in (natural units
  /// on the CPU, times log2(e) for the base-2 GPU kernels).
  CONDENSE_HD ScoreScale(T scale, bool has_bias) {
    const bool scale_first = has_bias || !(scale > T(0));
    before = scale_first ? scale : T(1);
    exponent = scale_first ? T(1) : scale;
  }
};

}  // namespace condense
