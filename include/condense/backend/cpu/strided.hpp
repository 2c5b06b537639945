// Strided iteration on the CPU: walks K tensors of one shape (each with its own strides,
// 0 for broadcast dims) row by row, after merging dimensions that are contiguous for all
// of them. Every elementwise loop and the contiguous() copy are built on it.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "condense/backend/cpu/parallel.hpp"
#include "condense/core/shape.hpp"

namespace condense::cpu {

/// A shape with K stride sets, dims merged where possible (innermost last).
template <std::size_t K>
struct StridedLayout {
  std::vector<std::int64_t> shape;
  std::array<std::vector<std::int64_t>, K> strides;

  StridedLayout(const Shape& s, const std::array<const Strides*, K>& st) {
    for (std::size_t d = 0; d < s.size(); ++d) {
      if (s[d] == 1) continue;  // size-1 dims never move the offset
      bool merge = !shape.empty();
      for (std::size_t k = 0; k < K && merge; ++k)
        merge = strides[k].back() == (*st[k])[d] * s[d];
      if (merge) {
        shape.back() *= s[d];
        for (std::size_t k = 0; k < K; ++k) strides[k].back() = (*st[k])[d];
      } else {
        shape.push_back(s[d]);
        for (std::size_t k = 0; k < K; ++k) strides[k].push_back((*st[k])[d]);
      }
    }
    if (shape.empty()) {  // scalar or all-ones shape: one row of one element
      shape.push_back(1);
      for (auto& v : strides) v.push_back(0);
    }
  }
  std::int64_t inner() const { return shape.back(); }
  std::int64_t rows() const {
    std::int64_t r = 1;
    for (std::size_t d = 0; d + 1 < shape.size(); ++d) r *= shape[d];
    return r;
  }
  /// Element offsets of row `row` for each of the K tensors.
  std::array<std::int64_t, K> row_offsets(std::int64_t row) const {
    std::array<std::int64_t, K> off{};
    for (std::size_t d = shape.size() - 1; d-- > 0;) {
      const std::int64_t i = row % shape[d];
      row /= shape[d];
      for (std::size_t k = 0; k < K; ++k) off[k] += i * strides[k][d];
    }
    return off;
  }
};

/// Calls fn(offsets, inner_len, inner_strides) for every row of `layout` (or for chunks of
/// rows when there are few long ones), split across threads when the work is large enough.
/// `fn` must treat each call independently: it may receive part of a row.
template <std::size_t K, class Fn>
void for_each_row(const StridedLayout<K>& layout, Fn&& fn, std::int64_t grain_elements = 32768) {
  const std::int64_t inner = layout.inner();
  std::array<std::int64_t, K> inner_strides;
  for (std::size_t k = 0; k < K; ++k) inner_strides[k] = layout.strides[k].back();
  const std::int64_t rows = layout.rows();
  if (rows < 2 * get_num_threads() && inner >= 2 * grain_elements) {
    // Few long rows (e.g. everything merged into one): split each row into chunks.
    const std::int64_t chunks = (inner + grain_elements - 1) / grain_elements;
    parallel_for(0, rows * chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
      for (std::int64_t c = c0; c < c1; ++c) {
        auto off = layout.row_offsets(c / chunks);
        const std::int64_t start = (c % chunks) * grain_elements;
        for (std::size_t k = 0; k < K; ++k) off[k] += start * inner_strides[k];
        fn(off, std::min(grain_elements, inner - start), inner_strides);
      }
    });
    return;
  }
  const std::int64_t row_grain = std::max<std::int64_t>(1, grain_elements / std::max<std::int64_t>(inner, 1));
  parallel_for(0, rows, row_grain, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) fn(layout.row_offsets(r), inner, inner_strides);
  });
}

/// Copies a strided view (`src` already at its offset) into contiguous `dst`.
template <class T>
void copy_to_contiguous(const T* src, const Shape& shape, const Strides& src_strides, T* dst) {
  const Strides dst_strides = contiguous_strides(shape);
  StridedLayout<2> layout(shape, {&dst_strides, &src_strides});
  for_each_row(layout, [&](const std::array<std::int64_t, 2>& off, std::int64_t n, const std::array<std::int64_t, 2>& st) {
    T* d = dst + off[0];
    const T* s = src + off[1];
    if (st[1] == 1) {
      for (std::int64_t i = 0; i < n; ++i) d[i] = s[i];
    } else {
      for (std::int64_t i = 0; i < n; ++i) d[i] = s[i * st[1]];
    }
  });
}

}  // namespace condense::cpu
