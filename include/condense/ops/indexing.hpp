// Joining and indexing ops: cat and stack (every element type), index_select,
// gather and scatter_add (int32 or int64 indices), all differentiable for float, double and
// the 16-bit floats. cat, stack, index_select and gather move 16-bit values as stored; their
// gradients that sum (the scatter-adds of index_select and gather) are computed in float and
// rounded once, and scatter_add itself runs through float.
// The indexed ops share two kernels over an [O, K, I] walk of the index positions (O: the
// dims before `dim`, K: `dim`, I: the dims after it); each tensor is reached through its
// own strides, so non-contiguous inputs are read in place. Scatter-add never splits the
// indexed dim across threads, so it needs no atomics. On CUDA: cat and stack (device copies
// into slices of the output), index_select (the embedding kernels), gather and scatter_add
// (kernels/gather.cu, split the same way; indices checked on the host).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cpu/strided.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"
#include "condense/ops/embedding.hpp"
#include "condense/ops/views.hpp"

namespace condense {
namespace detail {

/// Elements per thread chunk for gather-like loops (indirect loads).
inline constexpr std::int64_t indexing_grain = 1 << 14;

/// Element offset of row-major position j over some dims of a tensor: affine (j * stride)
/// when those dims collapse into one stride, a lookup table otherwise.
struct IndexingOffsets {
  bool affine = true;
  std::int64_t stride = 0;
  std::vector<std::int64_t> table;
  std::int64_t operator()(std::int64_t j) const { return affine ? j * stride : table[static_cast<std::size_t>(j)]; }
  bool unit() const { return affine && stride == 1; }
  bool constant() const { return affine && stride == 0; }
};

/// Offsets for walking `extents` (row-major) through `strides`.
inline IndexingOffsets indexing_offsets(const std::vector<std::int64_t>& extents, const std::vector<std::int64_t>& strides) {
  IndexingOffsets m;
  std::vector<std::int64_t> e, s;
  std::int64_t total = 1;
  for (std::size_t d = 0; d < extents.size(); ++d) {
    total *= extents[d];
    if (extents[d] != 1) {
      e.push_back(extents[d]);
      s.push_back(strides[d]);
    }
  }
  if (e.empty() || total == 0) return m;
  bool collapses = true;
  for (std::size_t d = 0; d + 1 < e.size(); ++d) collapses = collapses && s[d] == s[d + 1] * e[d + 1];
  if (collapses) {
    m.stride = s.back();
    return m;
  }
  m.affine = false;
  m.table.resize(static_cast<std::size_t>(total));
  std::vector<std::int64_t> pos(e.size(), 0);
  std::int64_t off = 0;
  for (std::int64_t j = 0; j < total; ++j) {
    m.table[static_cast<std::size_t>(j)] = off;
    for (std::size_t d = e.size(); d-- > 0;) {
      off += s[d];
      if (++pos[d] < e[d]) break;
      off -= s[d] * e[d];
      pos[d] = 0;
    }
  }
  return m;
}

/// How one tensor is reached from the [O, K, I] walk: offset = o(o) + k * k_stride + i(i),
/// where for the indexed tensor k is the index value instead of the position.
struct IndexingAccess {
  IndexingOffsets o, i;
  std::int64_t k_stride = 0;
};

/// Access for a tensor with `strides`, walked over `extents` (the iteration shape) split at `dim`.
inline IndexingAccess indexing_access(const Shape& extents, const Strides& strides, std::size_t dim) {
  const auto& e = extents.vec();
  const auto& s = strides.vec();
  IndexingAccess a;
  a.o = indexing_offsets(std::vector<std::int64_t>(e.begin(), e.begin() + static_cast<std::ptrdiff_t>(dim)),
                         std::vector<std::int64_t>(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(dim)));
  a.i = indexing_offsets(std::vector<std::int64_t>(e.begin() + static_cast<std::ptrdiff_t>(dim) + 1, e.end()),
                         std::vector<std::int64_t>(s.begin() + static_cast<std::ptrdiff_t>(dim) + 1, s.end()));
  a.k_stride = s[dim];
  return a;
}

/// The [O, K, I] extents of `extents` split at `dim`.
struct IndexingDims {
  std::int64_t O = 1, K = 1, I = 1;
};
inline IndexingDims indexing_dims(const Shape& extents, std::size_t dim) {
  IndexingDims g;
  for (std::size_t d = 0; d < extents.size(); ++d) {
    if (d < dim) g.O *= extents[d];
    else if (d == dim) g.K = extents[d];
    else g.I *= extents[d];
  }
  return g;
}

/// True when index value j addresses one of `extent` slots.
template <class Idx>
inline bool indexing_in_range(Idx j, std::int64_t extent) {
  return static_cast<std::uint64_t>(static_cast<std::int64_t>(j)) < static_cast<std::uint64_t>(extent);
}

/// The first index value outside [0, extent) in row-major walk order (call only after a
/// kernel reported one).
template <class Idx>
std::int64_t indexing_first_bad(const Idx* idx, const IndexingAccess& ia, const IndexingDims& g, std::int64_t extent) {
  for (std::int64_t o = 0; o < g.O; ++o)
    for (std::int64_t k = 0; k < g.K; ++k)
      for (std::int64_t i = 0; i < g.I; ++i) {
        const Idx j = idx[ia.o(o) + k * ia.k_stride + ia.i(i)];
        if (!indexing_in_range(j, extent)) return static_cast<std::int64_t>(j);
      }
  return 0;
}

/// Calls fn(row, i0, i1) for pieces of rows [0, rows) x [0, inner), split across threads by elements.
template <class Fn>
void indexing_for_chunks(std::int64_t rows, std::int64_t inner, std::int64_t grain, Fn&& fn) {
  if (inner <= 0) return;
  cpu::parallel_for(0, rows * inner, grain, [&](std::int64_t e0, std::int64_t e1) {
    std::int64_t r = e0 / inner, i = e0 % inner;
    while (e0 < e1) {
      const std::int64_t n = std::min(inner - i, e1 - e0);
      fn(r, i, i + n);
      e0 += n;
      ++r;
      i = 0;
    }
  });
}

/// out[o, k, i] = src[sa.o(o) + idx(o, k, i) * sa.k_stride + sa.i(i)] into contiguous `out`.
/// Returns false (leaving `out` partly written) when an index value is outside [0, extent).
template <class T, class Idx>
bool gather_kernel(T* out, const T* src, const IndexingAccess& sa, std::int64_t extent, const Idx* idx,
                   const IndexingAccess& ia, const IndexingDims& g) {
  std::atomic<bool> bad{false};
  if (g.I == 1) {  // one element per row (gather or select along the last dim): a flat loop
    const std::int64_t sk = sa.k_stride, ik = ia.k_stride;
    cpu::parallel_for(0, g.O * g.K, indexing_grain, [&](std::int64_t e0, std::int64_t e1) {
      std::int64_t o = e0 / g.K, k = e0 % g.K;
      const T* s = src + sa.o(o);
      const Idx* ix = idx + ia.o(o);
      bool local_bad = false;
      for (std::int64_t e = e0; e < e1; ++e) {
        const Idx j = ix[k * ik];
        if (indexing_in_range(j, extent)) out[e] = s[static_cast<std::int64_t>(j) * sk];
        else local_bad = true;
        if (++k == g.K && e + 1 < e1) {
          k = 0;
          ++o;
          s = src + sa.o(o);
          ix = idx + ia.o(o);
        }
      }
      if (local_bad) bad.store(true, std::memory_order_relaxed);
    });
    return !bad.load();
  }
  indexing_for_chunks(g.O * g.K, g.I, indexing_grain, [&](std::int64_t r, std::int64_t i0, std::int64_t i1) {
    const std::int64_t o = r / g.K, k = r % g.K;
    const T* s = src + sa.o(o);
    const Idx* ix = idx + ia.o(o) + k * ia.k_stride;
    T* po = out + r * g.I;
    const std::int64_t sk = sa.k_stride;
    bool local_bad = false;
    if (ia.i.constant()) {  // one index for the whole row (index_select)
      const Idx j = *ix;
      if (!indexing_in_range(j, extent)) {
        bad.store(true, std::memory_order_relaxed);
        return;
      }
      const T* row = s + static_cast<std::int64_t>(j) * sk;
      if (sa.i.unit()) {
        std::copy(row + i0, row + i1, po + i0);
      } else if (sa.i.affine) {
        const std::int64_t st = sa.i.stride;
        for (std::int64_t i = i0; i < i1; ++i) po[i] = row[i * st];
      } else {
        for (std::int64_t i = i0; i < i1; ++i) po[i] = row[sa.i(i)];
      }
    } else if (ia.i.affine && sa.i.affine) {
      const std::int64_t ist = ia.i.stride, sst = sa.i.stride;
      for (std::int64_t i = i0; i < i1; ++i) {
        const Idx j = ix[i * ist];
        if (!indexing_in_range(j, extent)) {
          local_bad = true;
          continue;
        }
        po[i] = s[static_cast<std::int64_t>(j) * sk + i * sst];
      }
    } else {
      for (std::int64_t i = i0; i < i1; ++i) {
        const Idx j = ix[ia.i(i)];
        if (!indexing_in_range(j, extent)) {
          local_bad = true;
          continue;
        }
        po[i] = s[static_cast<std::int64_t>(j) * sk + sa.i(i)];
      }
    }
    if (local_bad) bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

/// out[oa.o(o) + idx(o, k, i) * oa.k_stride + oa.i(i)] += src(o, k, i). Threads split the O
/// or the I positions, never K, so two threads never add into one element. Returns false
/// when an index value is outside [0, extent) (those positions are skipped).
template <class T, class Idx>
bool scatter_add_kernel(T* out, const IndexingAccess& oa, std::int64_t extent, const Idx* idx, const IndexingAccess& ia,
                        const T* src, const IndexingAccess& sa, const IndexingDims& g) {
  std::atomic<bool> bad{false};
  const auto run = [&](std::int64_t o0, std::int64_t o1, std::int64_t i0, std::int64_t i1) {
    bool local_bad = false;
    const std::int64_t ok = oa.k_stride, ik = ia.k_stride, sk = sa.k_stride;
    for (std::int64_t o = o0; o < o1; ++o) {
      T* po = out + oa.o(o);
      const Idx* pi = idx + ia.o(o);
      const T* ps = src + sa.o(o);
      for (std::int64_t k = 0; k < g.K; ++k) {
        const Idx* ix = pi + k * ik;
        const T* s = ps + k * sk;
        if (ia.i.constant()) {  // one index for the whole row (index_select backward)
          const Idx j = *ix;
          if (!indexing_in_range(j, extent)) {
            local_bad = true;
            continue;
          }
          T* row = po + static_cast<std::int64_t>(j) * ok;
          if (oa.i.unit() && sa.i.unit()) {
            for (std::int64_t i = i0; i < i1; ++i) row[i] += s[i];
          } else if (oa.i.affine && sa.i.affine) {
            const std::int64_t ost = oa.i.stride, sst = sa.i.stride;
            for (std::int64_t i = i0; i < i1; ++i) row[i * ost] += s[i * sst];
          } else {
            for (std::int64_t i = i0; i < i1; ++i) row[oa.i(i)] += s[sa.i(i)];
          }
        } else if (oa.i.affine && ia.i.affine && sa.i.affine) {
          const std::int64_t ost = oa.i.stride, ist = ia.i.stride, sst = sa.i.stride;
          for (std::int64_t i = i0; i < i1; ++i) {
            const Idx j = ix[i * ist];
            if (!indexing_in_range(j, extent)) {
              local_bad = true;
              continue;
            }
            po[static_cast<std::int64_t>(j) * ok + i * ost] += s[i * sst];
          }
        } else {
          for (std::int64_t i = i0; i < i1; ++i) {
            const Idx j = ix[ia.i(i)];
            if (!indexing_in_range(j, extent)) {
              local_bad = true;
              continue;
            }
            po[static_cast<std::int64_t>(j) * ok + oa.i(i)] += s[sa.i(i)];
          }
        }
      }
    }
    if (local_bad) bad.store(true, std::memory_order_relaxed);
  };
  const std::int64_t work = g.O * g.K * g.I;
  const std::int64_t threads = get_num_threads();
  if (work == 0) return true;
  if (g.I == 1) {  // one element per row (scatter along the last dim): split the outer positions only
    const std::int64_t ok = oa.k_stride, ik = ia.k_stride, sk = sa.k_stride;
    const std::int64_t grain = std::max<std::int64_t>(1, indexing_grain / std::max<std::int64_t>(g.K, 1));
    cpu::parallel_for(0, g.O, grain, [&](std::int64_t o0, std::int64_t o1) {
      bool local_bad = false;
      for (std::int64_t o = o0; o < o1; ++o) {
        T* po = out + oa.o(o);
        const Idx* pi = idx + ia.o(o);
        const T* ps = src + sa.o(o);
        for (std::int64_t k = 0; k < g.K; ++k) {
          const Idx j = pi[k * ik];
          if (indexing_in_range(j, extent)) po[static_cast<std::int64_t>(j) * ok] += ps[k * sk];
          else local_bad = true;
        }
      }
      if (local_bad) bad.store(true, std::memory_order_relaxed);
    });
    return !bad.load();
  }
  if (threads <= 1 || work < 2 * indexing_grain) {
    run(0, g.O, 0, g.I);
  } else if (g.O >= threads || g.I < 2 * threads) {
    // Split the outer positions: each thread owns whole slabs of the output.
    const std::int64_t grain = std::max<std::int64_t>(1, indexing_grain / std::max<std::int64_t>(g.K * g.I, 1));
    cpu::parallel_for(0, g.O, grain, [&](std::int64_t o0, std::int64_t o1) { run(o0, o1, 0, g.I); });
  } else {
    // Few outer positions: split the trailing positions (disjoint columns of the output).
    const std::int64_t grain = std::max<std::int64_t>(1, indexing_grain / std::max<std::int64_t>(g.O * g.K, 1));
    cpu::parallel_for(0, g.I, grain, [&](std::int64_t i0, std::int64_t i1) { run(0, g.O, i0, i1); });
  }
  return !bad.load();
}

/// A contiguous copy of `t` that records nothing.
template <Element T>
Tensor<T> indexing_copy(const Tensor<T>& t) {
  Tensor<T> out = Tensor<T>::empty(t.shape(), t.device());
  if (t.numel() > 0) cpu::copy_to_contiguous(t.data(), t.shape(), t.strides(), out.data());
  return out;
}

/// Adds src (shape index.shape, any strides) into the contiguous tensor `out` at `index`
/// along `dim` (indices already validated or reported by the caller).
template <Element T, IndexElement I>
bool scatter_add_into(const Tensor<T>& out, std::size_t dim, const Tensor<I>& index, const Tensor<T>& src) {
  const IndexingDims g = indexing_dims(index.shape(), dim);
  return scatter_add_kernel(out.data(), indexing_access(index.shape(), out.strides(), dim), out.shape()[dim],
                            index.data(), indexing_access(index.shape(), index.strides(), dim), src.data(),
                            indexing_access(index.shape(), src.strides(), dim), g);
}

/// Attaches `backward` to `output` for an op with a list of inputs (record() for a runtime count).
template <DifferentiableElement T, class Backward>
void indexing_record_list(std::string_view name, Tensor<T>& output, const std::vector<Tensor<T>>& inputs, Backward&& backward) {
  if (!GradMode::is_enabled()) return;
  if (std::none_of(inputs.begin(), inputs.end(), [](const Tensor<T>& t) { return t.requires_grad(); })) return;
  auto node = std::make_shared<FunctionNode<T, std::decay_t<Backward>>>(name, std::forward<Backward>(backward));
  node->inputs.reserve(inputs.size());
  for (const auto& t : inputs) node->inputs.push_back(t.requires_grad() ? t.impl() : nullptr);
  output.impl()->requires_grad = true;
  output.impl()->grad_fn = std::move(node);
}

/// `backward`, a gradient rule written for float and double (a generic callable), applied to
/// `grad`: for the 16-bit floats on the gradient widened to float, with the result rounded
/// once (a scatter-add in the 16-bit type would round at every addition).
template <DifferentiableElement T, class Backward>
Tensor<T> grad_in_compute_type(const Tensor<T>& grad, Backward backward) {
  if constexpr (HalfElement<T>) return cast<T>(backward(cast<float>(grad)));
  else return backward(grad);
}

/// Concatenates `pieces` (same rank, equal outside `dim`, one device) along `dim` into a new
/// contiguous tensor of `out_shape`. Records nothing.
template <Element T>
Tensor<T> cat_kernel(const std::vector<Tensor<T>>& pieces, std::size_t dim, const Shape& out_shape, Device device) {
  Tensor<T> out = Tensor<T>::empty(out_shape, device);
  if (out.numel() == 0) return out;
  std::int64_t outer = 1, inner = 1;
  for (std::size_t d = 0; d < out_shape.size(); ++d) {
    if (d < dim) outer *= out_shape[d];
    if (d > dim) inner *= out_shape[d];
  }
  const std::int64_t row = out_shape[dim] * inner;
  if (device.is_cuda()) {  // one strided device copy per piece into its slice of the output
    std::int64_t at = 0;
    for (const Tensor<T>& piece : pieces) {
      const std::int64_t extent = piece.shape()[dim];
      if (piece.numel() > 0) copy_into(out.narrow(static_cast<std::int64_t>(dim), at, extent), piece, "cat");
      at += extent;
    }
    return out;
  }
  T* o = out.data();
  std::vector<std::int64_t> column(pieces.size());
  std::vector<std::size_t> dense;  // contiguous pieces, copied with plain block copies
  std::int64_t at = 0;
  for (std::size_t p = 0; p < pieces.size(); ++p) {
    column[p] = at;
    const std::int64_t extent = pieces[p].shape()[dim];
    at += extent * inner;
    if (pieces[p].numel() == 0) continue;
    if (pieces[p].is_contiguous()) {
      dense.push_back(p);
    } else {
      copy_into(out.narrow(static_cast<std::int64_t>(dim), column[p] / inner, extent), pieces[p], "cat");
    }
  }
  if (dense.empty()) return out;
  if (outer == 1) {
    for (std::size_t p : dense) {
      const T* s = pieces[p].data();
      T* dst = o + column[p];
      cpu::parallel_for(0, pieces[p].numel(), 1 << 16, [&](std::int64_t a, std::int64_t b) { std::copy(s + a, s + b, dst + a); });
    }
    return out;
  }
  const std::int64_t grain = std::max<std::int64_t>(1, (1 << 16) / std::max<std::int64_t>(row, 1));
  cpu::parallel_for(0, outer, grain, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (std::size_t p : dense) {
        const std::int64_t len = pieces[p].shape()[dim] * inner;
        const T* s = pieces[p].data() + r * len;
        std::copy(s, s + len, o + r * row + column[p]);
      }
    }
  });
  return out;
}

/// Checks a tensor list for cat/stack: non-empty, defined, one device.
template <Element T>
void indexing_check_list(std::string_view op, const std::vector<Tensor<T>>& tensors) {
  CONDENSE_CHECK(!tensors.empty(), op, "expected a non-empty list of tensors");
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    CONDENSE_CHECK(tensors[i].defined(), op, "tensor ", i, " is undefined");
    CONDENSE_CHECK(tensors[i].device() == tensors[0].device(), op, "tensor ", i, " is on ", tensors[i].device(),
                   " but tensor 0 is on ", tensors[0].device());
  }
}

/// index_select of a CUDA tensor: the indices (on the CPU or on t's device) are checked on
/// the host, then dim `d` is moved first and the rows are gathered with the embedding
/// kernels, whose backward is a deterministic scatter-add (repeated positions accumulate).
// t: [..., n, ...] (CUDA), index: [k] -> [..., k, ...]
template <Element T, IndexElement I>
Tensor<T> cuda_index_select(const Tensor<T>& t, std::size_t d, const Tensor<I>& index) {
  constexpr std::string_view op = "index_select";
  CONDENSE_CHECK(index.device().is_cpu() || index.device() == t.device(), op, "index ", index.describe(),
                 " must be on the CPU or on the device of the input ", t.describe());
  const Tensor<I> host = index.cpu().contiguous();
  const std::int64_t extent = t.shape()[d], k = host.numel();
  for (std::int64_t i = 0; i < k; ++i)
    CONDENSE_CHECK(indexing_in_range(host.data()[i], extent), op, "index ", host.data()[i], " out of range for dim ", d,
                   " of extent ", extent, " (input shape ", t.shape(), ")");
  std::vector<std::int64_t> order{static_cast<std::int64_t>(d)};
  for (std::size_t e = 0; e < t.shape().size(); ++e)
    if (e != d) order.push_back(static_cast<std::int64_t>(e));
  std::vector<std::int64_t> inverse(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) inverse[static_cast<std::size_t>(order[i])] = static_cast<std::int64_t>(i);
  Shape moved = t.permute(order).shape();
  std::int64_t rest = 1;
  for (std::size_t e = 1; e < moved.size(); ++e) rest *= moved[e];
  // [n, rest] table, one row per position along d; the picked rows are [k, rest].
  const Tensor<T> table = t.permute(order).contiguous().reshape({extent, rest});
  const Tensor<T> picked = embedding(table, host);
  moved[0] = k;
  return picked.reshape(moved).permute(inverse).contiguous();
}

/// The launcher operands of a CUDA gather / scatter_add and the indexed dim among their
/// merged dims (see cuda_indexing_args).
template <std::size_t N>
struct CudaIndexingArgs {
  std::array<cuda::StridedArg, N> args;
  int dim = 0;
};

/// Launcher operands for tensors walked together over `shape` (the index's shape), each
/// with its own strides, indexed along dim d: the dims before d and the dims after it are
/// merged jointly on each side (cuda::coalesce_dims; d itself stays, whatever its extent),
/// so any rank runs while at most cuda::max_dims dims remain (throws naming `op` otherwise),
/// and the kernels split fewer coordinates per element.
template <Element... Ts>
CudaIndexingArgs<sizeof...(Ts)> cuda_indexing_args(std::string_view op, const Shape& shape, std::size_t d,
                                                   const Tensor<Ts>&... ts) {
  constexpr std::size_t n = sizeof...(Ts);
  const std::array<const Strides*, n> own{&ts.strides()...};
  CudaIndexingArgs<n> walk{{cuda_operand_of(ts)...}, 0};
  MergedDims<n> dims;
  // Appends dims [begin, end) of the walk, merged unless `keep` (the one indexed dim).
  const auto append = [&](std::size_t begin, std::size_t end, bool keep) {
    const auto from = static_cast<std::ptrdiff_t>(begin), to = static_cast<std::ptrdiff_t>(end);
    std::array<std::vector<std::int64_t>, n> strides;
    for (std::size_t k = 0; k < n; ++k) strides[k].assign(own[k]->begin() + from, own[k]->begin() + to);
    dims.append(std::vector<std::int64_t>(shape.begin() + from, shape.begin() + to), std::move(strides), !keep);
  };
  append(0, d, false);
  walk.dim = dims.ndim();
  append(d, d + 1, true);
  append(d + 1, shape.size(), false);
  dims.write(op, "CUDA indexing", shape, walk.args.data());
  return walk;
}

/// The index of a CUDA gather / scatter_add on `device`: on the CPU or that device, every
/// value checked on the host (the first bad one in row-major order is named, as on the
/// CPU), uploaded when it lives on the CPU. `what` names the indexed tensor in the message.
template <IndexElement I>
Tensor<I> checked_cuda_index(std::string_view op, const Tensor<I>& index, Device device, std::size_t d,
                             std::int64_t extent, std::string_view what, const Shape& indexed_shape) {
  CONDENSE_CHECK(index.device().is_cpu() || index.device() == device, op, "index ", index.describe(),
                 " must be on the CPU or on ", device);
  const Tensor<I> host = index.cpu().contiguous();
  for (std::int64_t i = 0; i < host.numel(); ++i)
    CONDENSE_CHECK(indexing_in_range(host.data()[i], extent), op, "index ", host.data()[i], " out of range for dim ", d,
                   " of extent ", extent, " (", what, " shape ", indexed_shape, ")");
  return index.device().is_cuda() ? index : host.to(device);
}

}  // namespace detail

/// Concatenates tensors along an existing dim (PyTorch's torch.cat). All tensors must have
/// the same rank (at least 1) and the same extents except along `dim`; any element type
/// (copied as stored). Gradients flow back (as slices) to the inputs that require grad.
// tensors[i]: [..., n_i, ...] -> [..., sum(n_i), ...]
template <Element T>
Tensor<T> cat(const std::vector<Tensor<T>>& tensors, std::int64_t dim = 0) {
  detail::indexing_check_list("cat", tensors);
  const Shape& first = tensors[0].shape();
  CONDENSE_CHECK(!first.empty(), "cat", "tensor 0 is zero-dimensional and cannot be concatenated (use stack)");
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    const Shape& s = tensors[i].shape();
    CONDENSE_CHECK(s.size() == first.size(), "cat", "tensor ", i, " has shape ", s, " of rank ", s.size(),
                   " but tensor 0 has shape ", first, " of rank ", first.size());
  }
  const std::size_t d = normalize_dim("cat", dim, first.size());
  Shape out_shape = first;
  out_shape[d] = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Shape& s = tensors[i].shape();
    for (std::size_t e = 0; e < s.size(); ++e)
      CONDENSE_CHECK(e == d || s[e] == first[e], "cat", "tensor ", i, " has shape ", s, " but tensor 0 has shape ", first,
                     ": extents must match in every dim except dim ", d);
    out_shape[d] += s[d];
  }
  Tensor<T> out = detail::cat_kernel(tensors, d, out_shape, tensors[0].device());
  if constexpr (DifferentiableElement<T>) {
    std::vector<std::int64_t> starts, lengths;
    std::int64_t at = 0;
    for (const auto& t : tensors) {
      starts.push_back(at);
      lengths.push_back(t.shape()[d]);
      at += t.shape()[d];
    }
    detail::indexing_record_list<T>("cat", out, tensors, [d, starts, lengths](const Tensor<T>& g, GradSink& s) {
      for (std::size_t i = 0; i < starts.size(); ++i)
        if (s.wants(i)) s.add(i, g.narrow(static_cast<std::int64_t>(d), starts[i], lengths[i]));
    });
  }
  return out;
}

/// cat over a braced list: cat({a, b, c}, 1).
template <Element T>
Tensor<T> cat(std::initializer_list<Tensor<T>> tensors, std::int64_t dim = 0) {
  return cat(std::vector<Tensor<T>>(tensors), dim);
}

/// Stacks tensors of one shape along a new dim `dim` (in [-rank-1, rank]; PyTorch's
/// torch.stack); any element type. Gradients flow back to the inputs that require grad.
// tensors[i]: [...] (n tensors) -> [..., n, ...] with n at `dim`
template <Element T>
Tensor<T> stack(const std::vector<Tensor<T>>& tensors, std::int64_t dim = 0) {
  detail::indexing_check_list("stack", tensors);
  const Shape& first = tensors[0].shape();
  for (std::size_t i = 1; i < tensors.size(); ++i)
    CONDENSE_CHECK(tensors[i].shape() == first, "stack", "tensor ", i, " has shape ", tensors[i].shape(),
                   " but tensor 0 has shape ", first, ": stack needs equal shapes");
  const std::size_t d = normalize_dim("stack", dim, first.size() + 1);
  std::vector<Tensor<T>> pieces;
  pieces.reserve(tensors.size());
  for (const auto& t : tensors) {
    Shape shape = t.shape();
    Strides strides = t.strides();
    shape.insert(d, 1);
    strides.insert(d, d < t.strides().size() ? t.strides()[d] * t.shape()[d] : 1);
    pieces.push_back(detail::restride(t, shape, strides, t.offset()));
  }
  Shape out_shape = first;
  out_shape.insert(d, static_cast<std::int64_t>(tensors.size()));
  Tensor<T> out = detail::cat_kernel(pieces, d, out_shape, tensors[0].device());
  if constexpr (DifferentiableElement<T>) {
    detail::indexing_record_list<T>("stack", out, tensors, [d, n = tensors.size()](const Tensor<T>& g, GradSink& s) {
      for (std::size_t i = 0; i < n; ++i)
        if (s.wants(i)) s.add(i, g.select(static_cast<std::int64_t>(d), static_cast<std::int64_t>(i)));
    });
  }
  return out;
}

/// stack over a braced list: stack({a, b}, 0).
template <Element T>
Tensor<T> stack(std::initializer_list<Tensor<T>> tensors, std::int64_t dim = 0) {
  return stack(std::vector<Tensor<T>>(tensors), dim);
}

/// Picks slices of `t` along `dim` at the positions in the 1-D `index` (repeats allowed;
/// each value in [0, t.size(dim))). Any element type (copied as stored); the gradient
/// index-adds back, so repeated positions accumulate (in float for the 16-bit floats,
/// rounded once).
// t: [..., n, ...], index: [k] -> [..., k, ...]
template <Element T, IndexElement I>
Tensor<T> index_select(const Tensor<T>& t, std::int64_t dim, const Tensor<I>& index) {
  CONDENSE_CHECK(t.defined() && index.defined(), "index_select", "undefined tensor argument");
  CONDENSE_CHECK(index.dim() == 1, "index_select", "index must be 1-D, got shape ", index.shape());
  const std::size_t d = normalize_dim("index_select", dim, t.shape().size());
  if (t.device().is_cuda()) return detail::cuda_index_select(t, d, index);
  detail::check_cpu("index_select", t);
  detail::check_cpu("index_select", index);
  Shape out_shape = t.shape();
  out_shape[d] = index.shape()[0];
  Tensor<T> out = Tensor<T>::empty(out_shape, t.device());
  const detail::IndexingDims g = detail::indexing_dims(out_shape, d);
  detail::IndexingAccess ia;  // the same index value along the whole row
  ia.k_stride = index.strides()[0];
  const std::int64_t extent = t.shape()[d];
  if (out.numel() > 0 &&
      !detail::gather_kernel(out.data(), t.data(), detail::indexing_access(t.shape(), t.strides(), d), extent,
                             index.data(), ia, g)) {
    fail("index_select", "index ", detail::indexing_first_bad(index.data(), ia, g, extent), " out of range for dim ", d,
         " of extent ", extent, " (input shape ", t.shape(), ")");
  }
  if (out.numel() == 0 && g.K > 0) {  // nothing copied, but the indices must still be valid
    for (std::int64_t k = 0; k < g.K; ++k) {
      const I j = index.data()[k * index.strides()[0]];
      CONDENSE_CHECK(detail::indexing_in_range(j, extent), "index_select", "index ", j, " out of range for dim ", d,
                     " of extent ", extent, " (input shape ", t.shape(), ")");
    }
  }
  if constexpr (DifferentiableElement<T>) {
    record<T>("index_select", out, {t}, [in_shape = t.shape(), d, index = index.detach(), ia, g](const Tensor<T>& grad, GradSink& s) {
      s.add(0, detail::grad_in_compute_type(grad, [&](const auto& gf) {
        using U = typename std::decay_t<decltype(gf)>::value_type;
        const Tensor<U> gc = gf.contiguous();
        Tensor<U> result = detail::zeros_on<U>(in_shape, gc.device());
        detail::scatter_add_kernel(result.data(), detail::indexing_access(gc.shape(), result.strides(), d), in_shape[d],
                                   index.data(), ia, gc.data(), detail::indexing_access(gc.shape(), gc.strides(), d), g);
        return result;
      }));
    });
  }
  return out;
}

/// PyTorch's gather: out[i][j][k] = t[index[i][j][k]][j][k] for dim 0 (t[i][index[i][j][k]][k]
/// for dim 1, ...). `index` has t's rank; along every other dim it may be shorter than t.
/// Any element type (copied as stored); the gradient scatter-adds back (repeated positions
/// accumulate, in float for the 16-bit floats, rounded once).
// t: [..., n, ...], index: [..., k, ...] (<= t outside dim) -> index.shape
template <Element T, IndexElement I>
Tensor<T> gather(const Tensor<T>& t, std::int64_t dim, const Tensor<I>& index) {
  CONDENSE_CHECK(t.defined() && index.defined(), "gather", "undefined tensor argument");
  const Shape& ts = t.shape();
  const Shape& is = index.shape();
  CONDENSE_CHECK(is.size() == ts.size(), "gather", "index of shape ", is, " must have the same rank as the input of shape ", ts);
  const std::size_t d = normalize_dim("gather", dim, ts.size());
  for (std::size_t e = 0; e < ts.size(); ++e)
    CONDENSE_CHECK(e == d || is[e] <= ts[e], "gather", "index of shape ", is, " is larger than the input of shape ", ts,
                   " in dim ", e, " (only dim ", d, " may be larger)");
  if (t.device().is_cuda()) {
    constexpr std::string_view op = "gather";
    const Tensor<I> idx = detail::checked_cuda_index(op, index, t.device(), d, ts[d], "input", ts);
    Tensor<T> out = Tensor<T>::empty(is, t.device());
    const auto walk = detail::cuda_indexing_args(op, is, d, out, t, idx);
    cuda::gather(walk.args[0], walk.args[1], walk.args[2], walk.dim, op);
    if constexpr (DifferentiableElement<T>) {
      record<T>(op, out, {t}, [in_shape = ts, d, idx](const Tensor<T>& grad, GradSink& s) {
        s.add(0, detail::grad_in_compute_type(grad, [&](const auto& gf) {
          using U = typename std::decay_t<decltype(gf)>::value_type;
          Tensor<U> result = detail::zeros_on<U>(in_shape, gf.device());
          const Shape& is = idx.shape();
          constexpr std::string_view backward_op = "gather backward";
          const auto walk = detail::cuda_indexing_args(backward_op, is, d, result, gf, idx);
          cuda::scatter_add(walk.args[0], walk.args[1], walk.args[2], walk.dim, backward_op);
          return result;
        }));
      });
    }
    return out;
  }
  detail::check_cpu("gather", t);
  detail::check_cpu("gather", index);
  Tensor<T> out = Tensor<T>::empty(is, t.device());
  const detail::IndexingDims g = detail::indexing_dims(is, d);
  const detail::IndexingAccess ia = detail::indexing_access(is, index.strides(), d);
  const std::int64_t extent = ts[d];
  if (out.numel() > 0 &&
      !detail::gather_kernel(out.data(), t.data(), detail::indexing_access(is, t.strides(), d), extent, index.data(), ia, g)) {
    fail("gather", "index ", detail::indexing_first_bad(index.data(), ia, g, extent), " out of range for dim ", d,
         " of extent ", extent, " (input shape ", ts, ")");
  }
  if constexpr (DifferentiableElement<T>) {
    record<T>("gather", out, {t}, [in_shape = ts, d, index = index.detach()](const Tensor<T>& grad, GradSink& s) {
      s.add(0, detail::grad_in_compute_type(grad, [&](const auto& gf) {
        using U = typename std::decay_t<decltype(gf)>::value_type;
        Tensor<U> result = detail::zeros_on<U>(in_shape, gf.device());
        detail::scatter_add_into(result, d, index, gf);
        return result;
      }));
    });
  }
  return out;
}

/// PyTorch's scatter_add: a copy of `base` with out[index[i][j][k]][j][k] += src[i][j][k] for
/// dim 0 (and so on), over the positions of `index`. index, src and base share one rank;
/// index is no larger than src in any dim and no larger than base outside `dim`; values in
/// [0, base.size(dim)). Differentiable with respect to base and src.
// base: [..., n, ...], index: [..., k, ...], src: >= index -> base.shape
template <ArithmeticElement T, IndexElement I>
Tensor<T> scatter_add(const Tensor<T>& base, std::int64_t dim, const Tensor<I>& index, const Tensor<T>& src) {
  CONDENSE_CHECK(base.defined() && index.defined() && src.defined(), "scatter_add", "undefined tensor argument");
  detail::check_same_device("scatter_add", base, src);
  const Shape& bs = base.shape();
  const Shape& is = index.shape();
  const Shape& ss = src.shape();
  CONDENSE_CHECK(is.size() == bs.size() && ss.size() == bs.size(), "scatter_add", "base ", bs, ", index ", is, " and src ",
                 ss, " must have the same rank");
  const std::size_t d = normalize_dim("scatter_add", dim, bs.size());
  for (std::size_t e = 0; e < bs.size(); ++e) {
    CONDENSE_CHECK(is[e] <= ss[e], "scatter_add", "index of shape ", is, " is larger than src of shape ", ss, " in dim ", e);
    CONDENSE_CHECK(e == d || is[e] <= bs[e], "scatter_add", "index of shape ", is, " is larger than base of shape ", bs,
                   " in dim ", e, " (only dim ", d, " may be larger)");
  }
  Tensor<T> out;
  if (base.device().is_cuda()) {
    constexpr std::string_view op = "scatter_add";
    const Tensor<I> idx = detail::checked_cuda_index(op, index, base.device(), d, bs[d], "base", bs);
    out = Tensor<T>::empty(bs, base.device());
    detail::copy_into(out, base.detach(), op);
    const auto walk = detail::cuda_indexing_args(op, is, d, out, src, idx);
    cuda::scatter_add(walk.args[0], walk.args[1], walk.args[2], walk.dim, op);
  } else {
    detail::check_cpu("scatter_add", base);
    detail::check_cpu("scatter_add", index);
    out = detail::indexing_copy(base);
    const detail::IndexingDims g = detail::indexing_dims(is, d);
    const detail::IndexingAccess ia = detail::indexing_access(is, index.strides(), d);
    const std::int64_t extent = bs[d];
    if (numel_of(is) > 0 &&
        !detail::scatter_add_kernel(out.data(), detail::indexing_access(is, out.strides(), d), extent, index.data(), ia,
                                    src.data(), detail::indexing_access(is, src.strides(), d), g)) {
      fail("scatter_add", "index ", detail::indexing_first_bad(index.data(), ia, g, extent), " out of range for dim ", d,
           " of extent ", extent, " (base shape ", bs, ")");
    }
  }
  if constexpr (FloatingElement<T>) {
    record<T>("scatter_add", out, {base, src}, [d, index = index.detach(), ss](const Tensor<T>& grad, GradSink& s) {
      if (s.wants(0)) s.add(0, grad);
      if (s.wants(1)) {
        Tensor<T> picked = gather(grad, static_cast<std::int64_t>(d), index);
        if (picked.shape() == ss) {
          s.add(1, picked);
        } else {  // src is larger than index: positions outside the index get no gradient
          Tensor<T> full = detail::zeros_on<T>(ss, grad.device());
          detail::copy_into(detail::restride(full, picked.shape(), full.strides(), 0), picked, "scatter_add backward");
          s.add(1, full);
        }
      }
    });
  }
  return out;
}

/// scatter_add of 16-bit tensors through float: base and src are widened, the float op adds
/// (and records its backward rule) and the result is rounded once, as are the gradients.
// base: [..., n, ...], index: [..., k, ...], src: >= index -> base.shape
template <HalfElement T, IndexElement I>
Tensor<T> scatter_add(const Tensor<T>& base, std::int64_t dim, const Tensor<I>& index, const Tensor<T>& src) {
  return detail::through_float(
      [&](const Tensor<float>& b, const Tensor<float>& s) { return scatter_add(b, dim, index, s); }, base, src);
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
