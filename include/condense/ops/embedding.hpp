// Embedding lookup: gathers rows of a [V, D] table by integer ids (int32 or int64, any
// shape). The backward pass scatter-adds the output gradient into a dense [V, D] gradient
// without races: ids are bucketed by row (a counting sort), then each table row is owned
// by one thread, which sums its occurrences in a fixed order (deterministic results).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/elementwise.hpp"

namespace condense {
namespace detail {

/// Checks every id against the table size [0, rows); throws naming the first bad id.
template <IndexElement I>
void check_embedding_ids(const I* ids, std::int64_t n, const Shape& table_shape) {
  const std::int64_t rows = table_shape[0];
  std::int64_t bad = -1;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto id = static_cast<std::int64_t>(ids[i]);
    if (id < 0 || id >= rows) {
      bad = i;
      break;
    }
  }
  if (bad >= 0)
    fail("embedding", "id ", static_cast<std::int64_t>(ids[bad]), " out of range for a table of ", rows,
         " rows (weight ", table_shape, ")");
}

/// Dense gradient of an embedding table: out[v] = sum of g[n] over the n with ids[n] == v
/// (zero for `skip_row`). `g` is [n, d] contiguous, `out` [rows, d] uninitialised.
template <FloatingElement T, IndexElement I>
void embedding_scatter_add(const T* g, const I* ids, std::int64_t n, std::int64_t rows, std::int64_t d,
                           std::int64_t skip_row, T* out) {
  // Counting sort of the positions by id: start[v] .. start[v + 1] index into `order`.
  std::vector<std::int64_t> start(static_cast<std::size_t>(rows + 1), 0);
  for (std::int64_t i = 0; i < n; ++i) ++start[static_cast<std::size_t>(ids[i]) + 1];
  for (std::int64_t v = 0; v < rows; ++v) start[static_cast<std::size_t>(v + 1)] += start[static_cast<std::size_t>(v)];
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  {
    std::vector<std::int64_t> next(start.begin(), start.end() - 1);
    for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(next[static_cast<std::size_t>(ids[i])]++)] = i;
  }
  // Each thread owns a block of table rows: it zeroes the rows no id hits and sums the rest.
  const std::int64_t grain = std::max<std::int64_t>(1, (1 << 14) / std::max<std::int64_t>(d, 1));
  cpu::parallel_for(0, rows, grain, [&](std::int64_t v0, std::int64_t v1) {
    for (std::int64_t v = v0; v < v1; ++v) {
      T* dst = out + v * d;
      const std::int64_t b = start[static_cast<std::size_t>(v)], e = start[static_cast<std::size_t>(v + 1)];
      if (b == e || v == skip_row) {
        std::memset(dst, 0, static_cast<std::size_t>(d) * sizeof(T));
        continue;
      }
      std::memcpy(dst, g + order[static_cast<std::size_t>(b)] * d, static_cast<std::size_t>(d) * sizeof(T));
      for (std::int64_t k = b + 1; k < e; ++k) {
        const T* src = g + order[static_cast<std::size_t>(k)] * d;
#pragma omp simd
        for (std::int64_t j = 0; j < d; ++j) dst[j] += src[j];
      }
    }
  });
}

}  // namespace detail

/// Looks up rows of `weight` by `ids` (int32 or int64, any shape, each in [0, V)).
/// With `padding_idx` (negative counts from the end), that row receives no gradient; its
/// forward values are returned as stored. `ids` never receive a gradient.
// weight: [V, D], ids: [...] -> [..., D]
template <Element T, IndexElement I>
Tensor<T> embedding(const Tensor<T>& weight, const Tensor<I>& ids, std::optional<std::int64_t> padding_idx = std::nullopt) {
  detail::check_cpu("embedding", weight);
  detail::check_cpu("embedding", ids);
  CONDENSE_CHECK(weight.dim() == 2, "embedding", "weight must be a 2-D table [V, D], got shape ", weight.shape());
  const std::int64_t rows = weight.size(0), d = weight.size(1);
  std::int64_t skip_row = -1;
  if (padding_idx) {
    const std::int64_t p = *padding_idx;
    CONDENSE_CHECK(p >= -rows && p < rows, "embedding", "padding_idx ", p, " out of range for a table of ", rows,
                   " rows (weight ", weight.shape(), ")");
    skip_row = p < 0 ? p + rows : p;
  }
  const Tensor<I> idc = ids.clone();  // a private copy: the backward pass reads the ids again
  const std::int64_t n = idc.numel();
  detail::check_embedding_ids(idc.data(), n, weight.shape());
  const Tensor<T> table = weight.detach().contiguous();
  Shape out_shape = ids.shape();
  out_shape.push_back(d);
  Tensor<T> out = Tensor<T>::empty(out_shape);
  {
    const I* pid = idc.data();
    const T* pt = table.data();
    T* po = out.data();
    const std::size_t row_bytes = static_cast<std::size_t>(d) * sizeof(T);
    const std::int64_t grain = std::max<std::int64_t>(1, (1 << 14) / std::max<std::int64_t>(d, 1));
    if (row_bytes > 0) {
      cpu::parallel_for(0, n, grain, [&](std::int64_t i0, std::int64_t i1) {
        for (std::int64_t i = i0; i < i1; ++i) std::memcpy(po + i * d, pt + static_cast<std::int64_t>(pid[i]) * d, row_bytes);
      });
    }
  }
  if constexpr (FloatingElement<T>) {
    record<T>("embedding", out, {weight}, [idc, rows, d, n, skip_row, wshape = weight.shape()](const Tensor<T>& grad, GradSink& s) {
      const Tensor<T> g = grad.contiguous();
      Tensor<T> dw = Tensor<T>::empty(wshape);
      detail::embedding_scatter_add(g.data(), idc.data(), n, rows, d, skip_row, dw.data());
      s.add(0, dw);
    });
  }
  return out;
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
