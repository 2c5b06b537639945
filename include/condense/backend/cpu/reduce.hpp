// CPU reduction kernel: out[m] = combine over r of in[m, r], where the kept dims (m) and
// the reduced dims (r) may be any subsets with any strides. Parallel over outputs; the
// loop order follows the input's contiguous dimension so both common cases (reduce the
// last dim, reduce the leading rows) stream through memory.
#pragma once

#include <cstdint>
#include <vector>

#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cpu/strided.hpp"
#include "condense/core/shape.hpp"

namespace condense::cpu {

/// Reduces `in` (shape, strides, already at its offset) over the dims where `reduce[d]` is
/// true into contiguous `out` (the kept dims in order). `Reducer` provides
/// `Acc init()`, `void step(Acc&, T)` and `T finish(const Acc&, std::int64_t count)`.
template <class T, class Reducer>
void reduce_dims(const T* in, const Shape& shape, const Strides& strides, const std::vector<bool>& reduce, T* out,
                 const Reducer& reducer) {
  Shape kept_shape, red_shape;
  Strides kept_strides, red_strides;
  bool inner_is_kept = false;
  std::int64_t best_stride = -1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (reduce[d]) {
      red_shape.push_back(shape[d]);
      red_strides.push_back(strides[d]);
    } else {
      kept_shape.push_back(shape[d]);
      kept_strides.push_back(strides[d]);
    }
    if (shape[d] > 1 && (best_stride < 0 || strides[d] < best_stride)) {
      best_stride = strides[d];
      inner_is_kept = !reduce[d];
    }
  }
  const std::int64_t m_count = numel_of(kept_shape);
  const std::int64_t r_count = numel_of(red_shape);
  const Strides out_strides = contiguous_strides(kept_shape);
  StridedLayout<2> m_layout(kept_shape, {&kept_strides, &out_strides});
  StridedLayout<1> r_layout(red_shape, {&red_strides});
  const std::int64_t r_rows = r_layout.rows(), r_inner = r_layout.inner(), r_step = r_layout.strides[0].back();
  if (m_count == 0) return;

  auto reduce_one = [&](std::int64_t in_offset) {
    auto acc = reducer.init();
    for (std::int64_t rr = 0; rr < r_rows; ++rr) {
      const T* p = in + in_offset + r_layout.row_offsets(rr)[0];
      for (std::int64_t j = 0; j < r_inner; ++j) reducer.step(acc, p[j * r_step]);
    }
    return reducer.finish(acc, r_count);
  };

  if (!inner_is_kept || m_layout.inner() < 8) {
    // Each output reads a block of the input: parallel over outputs.
    const std::int64_t grain = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(r_count, 1));
    parallel_for(0, m_count, grain, [&](std::int64_t m0, std::int64_t m1) {
      const std::int64_t inner = m_layout.inner();
      for (std::int64_t m = m0; m < m1;) {
        const auto off = m_layout.row_offsets(m / inner);
        for (std::int64_t i = m % inner; i < inner && m < m1; ++i, ++m)
          out[off[1] + i * m_layout.strides[1].back()] = reduce_one(off[0] + i * m_layout.strides[0].back());
      }
    });
    return;
  }
  // The kept dims are the contiguous ones: sweep the reduced dims outside, the kept row inside.
  const std::int64_t inner = m_layout.inner();
  const std::int64_t in_step = m_layout.strides[0].back(), out_step = m_layout.strides[1].back();
  const std::int64_t grain = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(r_count * inner, 1));
  parallel_for(0, m_layout.rows(), grain, [&](std::int64_t row0, std::int64_t row1) {
    using Acc = decltype(reducer.init());
    std::vector<Acc> acc(static_cast<std::size_t>(inner));
    for (std::int64_t row = row0; row < row1; ++row) {
      const auto off = m_layout.row_offsets(row);
      for (auto& a : acc) a = reducer.init();
      for (std::int64_t rr = 0; rr < r_rows; ++rr) {
        const std::int64_t r_off = r_layout.row_offsets(rr)[0];
        for (std::int64_t j = 0; j < r_inner; ++j) {
          const T* p = in + off[0] + r_off + j * r_step;
          for (std::int64_t i = 0; i < inner; ++i) reducer.step(acc[static_cast<std::size_t>(i)], p[i * in_step]);
        }
      }
      for (std::int64_t i = 0; i < inner; ++i) out[off[1] + i * out_step] = reducer.finish(acc[static_cast<std::size_t>(i)], r_count);
    }
  });
}

/// Sum (or mean when `mean` is set) reducer.
template <class T>
struct SumReducer {
  bool mean = false;
  T init() const { return T(0); }
  void step(T& acc, T x) const { acc += x; }
  T finish(const T& acc, std::int64_t count) const { return mean && count > 0 ? acc / static_cast<T>(count) : acc; }
};

}  // namespace condense::cpu
