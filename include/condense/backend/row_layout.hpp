// RowLayout: where the rows of one [B, heads, T, D] attention operand lie in memory, and
// AttentionLayouts, one per operand of an attention call. Shared
// by the CPU attention kernels (backend/cpu/attention.hpp) and the CUDA ones
// (backend/cuda/attention.hpp, kernels/attention/), host and device code.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "condense/core/config.hpp"

namespace condense {

/// Where the rows of one [B, heads, T, D] attention operand lie: element (b, h, t, d) at
/// b * batch + h * head + t * token + d. The head dim is contiguous; the other strides are
/// free, so a [B, T, heads, D] buffer seen as [B, heads, T, D] (heads split off a
/// projection's output) or the first T rows of a longer cache are read in place.
struct RowLayout {
  std::int64_t batch = 0, head = 0, token = 0;

  /// The layout of a contiguous [B, heads, length, D] tensor.
  static constexpr RowLayout contiguous(std::int64_t heads, std::int64_t length, std::int64_t dim) {
    return {heads * length * dim, length * dim, dim};
  }
  /// A layout not given yet (the attention entry points take it as contiguous).
  static constexpr RowLayout unset() { return {-1, -1, -1}; }
  /// False for unset().
  constexpr bool is_set() const { return batch >= 0; }
  /// Offset (in elements) of row t of head h of batch row b.
  CONDENSE_HD std::int64_t at(std::int64_t b, std::int64_t h, std::int64_t t) const {
    return b * batch + h * head + t * token;
  }
  constexpr bool operator==(const RowLayout&) const = default;
};

/// The RowLayouts of one attention call's [B, heads, T, D] operands (the CPU geometry and
/// the CUDA launcher arguments both carry them); unset ones mean contiguous.
struct AttentionLayouts {
  RowLayout q_rows = RowLayout::unset(), out_rows = RowLayout::unset();    ///< [B, H, Tq, D]
  RowLayout dout_rows = RowLayout::unset(), dq_rows = RowLayout::unset();  ///< [B, H, Tq, D]
  RowLayout k_rows = RowLayout::unset(), v_rows = RowLayout::unset();      ///< [B, Hkv, Tk, D]
  RowLayout dk_rows = RowLayout::unset(), dv_rows = RowLayout::unset();    ///< [B, Hkv, Tk, D]

  /// Every unset layout made contiguous for these extents (what the kernels run on).
  void resolve_layouts(std::int64_t heads, std::int64_t kv_heads, std::int64_t tq, std::int64_t tk, std::int64_t dim) {
    for (RowLayout* l : {&q_rows, &out_rows, &dout_rows, &dq_rows})
      if (!l->is_set()) *l = RowLayout::contiguous(heads, tq, dim);
    for (RowLayout* l : {&k_rows, &v_rows, &dk_rows, &dv_rows})
      if (!l->is_set()) *l = RowLayout::contiguous(kv_heads, tk, dim);
  }
};

}  // namespace condense
