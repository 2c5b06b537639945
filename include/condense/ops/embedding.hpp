// Embedding lookup: gathers rows of a [V, D] table by integer ids (int32 or int64, any
// shape). The backward pass scatter-adds the output gradient into a dense [V, D] gradient
// without races: ids are bucketed by row (a counting sort, shared by both devices), then
// on the CPU each table row is owned by one thread, which sums its occurrences in a fixed
// order; on CUDA the buckets become a plan of work items (embedding_grad_plan) for the
// kernels of kernels/embedding.cu. Both give deterministic results. A 16-bit table is
// gathered as stored; its gradient is summed in float and rounded once per entry.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/lookup_kernels.hpp"
#include "condense/backend/cuda/runtime.hpp"
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

/// Positions of the ids bucketed by id (a stable counting sort): the positions whose id is v
/// are order[start[v]] .. order[start[v + 1] - 1], in increasing order.
struct EmbeddingBuckets {
  std::vector<std::int64_t> start;  ///< [rows + 1]
  std::vector<std::int64_t> order;  ///< [n]
};

/// Buckets the n positions of `ids` (each in [0, rows)) by id.
template <IndexElement I>
EmbeddingBuckets bucket_embedding_ids(const I* ids, std::int64_t n, std::int64_t rows) {
  EmbeddingBuckets b;
  b.start.assign(static_cast<std::size_t>(rows + 1), 0);
  for (std::int64_t i = 0; i < n; ++i) ++b.start[static_cast<std::size_t>(ids[i]) + 1];
  for (std::int64_t v = 0; v < rows; ++v) b.start[static_cast<std::size_t>(v + 1)] += b.start[static_cast<std::size_t>(v)];
  b.order.resize(static_cast<std::size_t>(n));
  std::vector<std::int64_t> next(b.start.begin(), b.start.end() - 1);
  for (std::int64_t i = 0; i < n; ++i) b.order[static_cast<std::size_t>(next[static_cast<std::size_t>(ids[i])]++)] = i;
  return b;
}

/// The host side of the CUDA embedding backward: one int64 buffer to upload in the layout
/// cuda::EmbeddingGradWork describes (sorted positions, work items, heavy rows) and its counts.
struct EmbeddingGradPlan {
  std::vector<std::int64_t> data;
  std::int64_t positions = 0, items = 0, heavy_rows = 0, partial_rows = 0;
};

/// The work items of the CUDA embedding backward from bucketed ids: one item per table row
/// that some id hits (except `skip_row`) with at most `chunk` occurrences; a row hit more
/// often becomes a heavy row whose occurrences are split into items of `chunk` (the last one
/// shorter) that sum into consecutive partial rows. Rows in increasing order.
inline EmbeddingGradPlan embedding_grad_plan(EmbeddingBuckets buckets, std::int64_t skip_row,
                                             std::int64_t chunk = cuda::embedding_grad_chunk) {
  CONDENSE_CHECK(chunk >= 1, "embedding", "embedding backward chunk must be positive, got ", chunk);
  EmbeddingGradPlan plan;
  plan.positions = static_cast<std::int64_t>(buckets.order.size());
  plan.data = std::move(buckets.order);
  std::vector<std::int64_t> heavy;
  const auto rows = static_cast<std::int64_t>(buckets.start.size()) - 1;
  for (std::int64_t v = 0; v < rows; ++v) {
    const std::int64_t begin = buckets.start[static_cast<std::size_t>(v)];
    const std::int64_t end = buckets.start[static_cast<std::size_t>(v + 1)];
    if (begin == end || v == skip_row) continue;
    if (end - begin <= chunk) {
      plan.data.insert(plan.data.end(), {v, begin, end});
      ++plan.items;
      continue;
    }
    const std::int64_t first = plan.partial_rows;
    for (std::int64_t k = begin; k < end; k += chunk) {
      plan.data.insert(plan.data.end(), {-1 - plan.partial_rows, k, std::min(k + chunk, end)});
      ++plan.items;
      ++plan.partial_rows;
    }
    heavy.insert(heavy.end(), {v, first, plan.partial_rows - first});
    ++plan.heavy_rows;
  }
  plan.data.insert(plan.data.end(), heavy.begin(), heavy.end());
  return plan;
}

/// Dense gradient of an embedding table: out[v] = sum of g[n] over the n with ids[n] == v
/// (zero for `skip_row`). `g` is [n, d] contiguous, `out` [rows, d] uninitialised. The 16-bit
/// floats are summed in float, in the same order, and each table entry is rounded once.
template <DifferentiableElement T, IndexElement I>
void embedding_scatter_add(const T* g, const I* ids, std::int64_t n, std::int64_t rows, std::int64_t d,
                           std::int64_t skip_row, T* out) {
  using A = compute_type_t<T>;
  const EmbeddingBuckets buckets = bucket_embedding_ids(ids, n, rows);
  const std::vector<std::int64_t>& start = buckets.start;
  const std::vector<std::int64_t>& order = buckets.order;
  // Each thread owns a block of table rows: it zeroes the rows no id hits and sums the rest.
  const std::int64_t grain = std::max<std::int64_t>(1, (1 << 14) / std::max<std::int64_t>(d, 1));
  cpu::parallel_for(0, rows, grain, [&](std::int64_t v0, std::int64_t v1) {
    std::vector<A> widened;  // the 16-bit floats: one row of float sums
    if constexpr (!std::is_same_v<A, T>) widened.resize(static_cast<std::size_t>(d));
    for (std::int64_t v = v0; v < v1; ++v) {
      T* dst = out + v * d;
      const std::int64_t b = start[static_cast<std::size_t>(v)], e = start[static_cast<std::size_t>(v + 1)];
      if (b == e || v == skip_row) {
        std::fill(dst, dst + d, T(0));
        continue;
      }
      A* acc = nullptr;
      if constexpr (std::is_same_v<A, T>) {
        acc = dst;
        std::memcpy(dst, g + order[static_cast<std::size_t>(b)] * d, static_cast<std::size_t>(d) * sizeof(T));
      } else {
        acc = widened.data();
        const T* first = g + order[static_cast<std::size_t>(b)] * d;
        for (std::int64_t j = 0; j < d; ++j) acc[j] = static_cast<A>(first[j]);
      }
      for (std::int64_t k = b + 1; k < e; ++k) {
        const T* src = g + order[static_cast<std::size_t>(k)] * d;
#pragma omp simd
        for (std::int64_t j = 0; j < d; ++j) acc[j] += static_cast<A>(src[j]);
      }
      if constexpr (!std::is_same_v<A, T>) {
        for (std::int64_t j = 0; j < d; ++j) dst[j] = T(acc[j]);
      }
    }
  });
}

/// Throws unless `ids` are defined and on the CPU or on the weight's device.
template <Element T, IndexElement I>
void check_embedding_ids_device(const Tensor<T>& weight, const Tensor<I>& ids) {
  CONDENSE_CHECK(ids.defined(), "embedding", "undefined tensor argument");
  CONDENSE_CHECK(ids.device().is_cpu() || ids.device() == weight.device(), "embedding", "ids ", ids.describe(),
                 " must be on the CPU or on the device of the weight ", weight.describe());
}

/// Checks that `weight` is a 2-D table and returns the row `padding_idx` names (-1 for none).
template <Element T>
std::int64_t embedding_skip_row(const Tensor<T>& weight, std::optional<std::int64_t> padding_idx) {
  CONDENSE_CHECK(weight.dim() == 2, "embedding", "weight must be a 2-D table [V, D], got shape ", weight.shape());
  const std::int64_t rows = weight.size(0);
  if (!padding_idx) return -1;
  const std::int64_t p = *padding_idx;
  CONDENSE_CHECK(p >= -rows && p < rows, "embedding", "padding_idx ", p, " out of range for a table of ", rows,
                 " rows (weight ", weight.shape(), ")");
  return p < 0 ? p + rows : p;
}

/// embedding() for a table on a CUDA device; ids on the CPU or on that device are checked
/// on the host (copied there when needed), then looked up from a device copy.
// weight: [V, D] (CUDA), ids: [...] -> [..., D]
template <Element T, IndexElement I>
Tensor<T> cuda_embedding(const Tensor<T>& weight, const Tensor<I>& ids, std::optional<std::int64_t> padding_idx) {
  constexpr std::string_view op = "embedding";
  check_embedding_ids_device(weight, ids);
  const std::int64_t skip_row = embedding_skip_row(weight, padding_idx);
  const Device device = weight.device();
  const std::int64_t rows = weight.size(0), d = weight.size(1);
  // A private host copy: the ids are checked here and bucketed again by the backward pass.
  const Tensor<I> host_ids = ids.device().is_cpu() ? ids.clone() : ids.to(Device::cpu()).contiguous();
  const std::int64_t n = host_ids.numel();
  check_embedding_ids(host_ids.data(), n, weight.shape());
  const Tensor<I> device_ids = ids.device().is_cuda() ? ids.contiguous() : host_ids.to(device);
  const Tensor<T> table = weight.detach().contiguous();
  Shape out_shape = ids.shape();
  out_shape.push_back(d);
  Tensor<T> out = Tensor<T>::empty(out_shape, device);
  cuda::embedding_gather(out.data(), table.data(), d * static_cast<std::int64_t>(sizeof(T)), device_ids.data(), dtype_of<I>,
                         n, device.index, op);
  if constexpr (DifferentiableElement<T>) {  // the kernels sum the 16-bit floats in float
    record<T>(op, out, {weight}, [host_ids, rows, d, n, skip_row, device, op](const Tensor<T>& grad, GradSink& s) {
      const Tensor<T> g = grad.contiguous();
      const EmbeddingGradPlan plan = embedding_grad_plan(bucket_embedding_ids(host_ids.data(), n, rows), skip_row);
      Tensor<std::int64_t> device_plan = Tensor<std::int64_t>::empty({static_cast<std::int64_t>(plan.data.size())}, device);
      if (!plan.data.empty())
        cuda::copy(device_plan.data(), plan.data.data(), plan.data.size() * sizeof(std::int64_t), cuda::CopyKind::HostToDevice,
                   device.index, op);
      using Stat = cuda::lookup_stat_t<T>;
      const Tensor<Stat> partials = Tensor<Stat>::empty({plan.partial_rows, d}, device);
      cuda::EmbeddingGradWork work;
      work.plan = device_plan.data();
      work.positions = plan.positions;
      work.items = plan.items;
      work.heavy_rows = plan.heavy_rows;
      work.partials = partials.data();
      work.partial_rows = plan.partial_rows;
      Tensor<T> dw = Tensor<T>::empty({rows, d}, device);
      cuda::embedding_grad(dw.data(), g.data(), dtype_of<T>, rows, d, work, device.index, op);
      s.add(0, dw);
    });
  }
  return out;
}

}  // namespace detail

/// Looks up rows of `weight` by `ids` (int32 or int64, any shape, each in [0, V)). With a
/// table on a CUDA device the ids may be on the CPU or on that device. With `padding_idx`
/// (negative counts from the end), that row receives no gradient; its forward values are
/// returned as stored. `ids` never receive a gradient. Any element type; differentiable in
/// the weight for float, double and the 16-bit floats. A 16-bit table is gathered as stored
/// (no conversion), and its gradient is summed in float and rounded once per entry.
// weight: [V, D], ids: [...] -> [..., D]
template <Element T, IndexElement I>
Tensor<T> embedding(const Tensor<T>& weight, const Tensor<I>& ids, std::optional<std::int64_t> padding_idx = std::nullopt) {
  if (weight.defined() && weight.device().is_cuda()) return detail::cuda_embedding(weight, ids, padding_idx);
  detail::check_cpu("embedding", weight);
  detail::check_embedding_ids_device(weight, ids);
  const std::int64_t skip_row = detail::embedding_skip_row(weight, padding_idx);
  const std::int64_t rows = weight.size(0), d = weight.size(1);
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
  if constexpr (DifferentiableElement<T>) {
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
