// Matrix products: matmul (PyTorch semantics: dot, vector-matrix, matrix-vector, matrix-matrix
// and batched products with broadcast batch dims), bmm and linear, with their backward rules.
// All of them run through one batched CPU kernel (detail::matmul_into) on top of cpu::gemm
// (Eigen): transposed views go to Eigen as column-major maps without a copy, batch dims that
// line up with the rows or with the contraction are folded into a single large GEMM, and other
// batches of small products are split across threads with one single-threaded GEMM each.
#pragma once

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <omp.h>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/gemm.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"
#include "condense/ops/reduce.hpp"
#include "condense/ops/views.hpp"

namespace condense {
namespace detail {

/// The matrix held in the last two dims of `t`, at its first batch entry.
template <Element T>
cpu::MatrixRef<T> trailing_matrix(const Tensor<T>& t) {
  const std::size_t r = t.shape().size();
  return {t.data(), t.shape()[r - 2], t.shape()[r - 1], t.strides()[r - 2], t.strides()[r - 1]};
}

/// `t` when its last two dims can be mapped by Eigen as they are (row- or column-major),
/// otherwise a contiguous copy. `t` must not require grad (pass a detached view).
template <ArithmeticElement T>
Tensor<T> gemm_operand(const Tensor<T>& t) {
  if (cpu::gemm_compatible(trailing_matrix(t))) return t;
  return contiguous(t.detach());
}

/// The batch dims of `shape` (all but the last two).
inline Shape batch_dims(const Shape& shape) { return Shape(shape.begin(), shape.end() - 2); }

/// Strides of `t`'s batch dims aligned to the right of `batch`: 0 where `t` lacks the dim or
/// has extent 1 there (broadcast).
template <Element T>
std::vector<std::int64_t> aligned_batch_strides(const Tensor<T>& t, const Shape& batch) {
  const std::size_t tb = t.shape().size() - 2;
  const std::size_t lead = batch.size() - tb;
  std::vector<std::int64_t> out(batch.size(), 0);
  for (std::size_t d = 0; d < tb; ++d)
    if (t.shape()[d] != 1) out[lead + d] = t.strides()[d];
  return out;
}

/// Merges (extent, stride) dims, outermost first, into one dim of extent prod(extents).
/// Returns false when the strides are not uniform. Extent-1 dims are ignored; a result of
/// extent 1 gets stride 1.
inline bool collapse_dims(const std::vector<std::pair<std::int64_t, std::int64_t>>& dims, std::int64_t* extent,
                          std::int64_t* stride) {
  std::int64_t e = 1, s = 1;
  bool any = false;
  for (std::size_t i = dims.size(); i-- > 0;) {
    const auto [de, ds] = dims[i];
    if (de == 1) continue;
    if (!any) {
      s = ds;
      any = true;
    } else if (ds != s * e) {
      return false;
    }
    e *= de;
  }
  *extent = e;
  *stride = s;
  return true;
}

/// Whether to split a batch of `count` products of `work` multiply-adds each across threads
/// (one single-threaded GEMM per product) rather than run them in turn with a threaded GEMM.
inline bool split_batch_across_threads(std::int64_t count, double work) {
  const std::int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || count < 2) return false;
  const bool balanced = count % threads == 0 || count >= 4 * threads;
  return balanced || work < double(1 << 21);
}

/// One cuBLAS strided-batched GEMM c (+)= a @ b with c's batch dims not reduced and K > 0.
/// Operands whose last two dims are neither row- nor column-major, or whose batch dims do
/// not collapse to one uniform stride, are copied contiguous first. U is the operands'
/// element type: T, or bfloat16 for a float c (allow_bf16_matmul()).
template <Element U, DifferentiableElement T>
void cuda_gemm_into(const Tensor<U>& a_in, const Tensor<U>& b_in, const Tensor<T>& c, const Shape& batch, bool accumulate) {
  constexpr std::string_view op = "matmul";
  const std::int64_t M = c.size(-2), N = c.size(-1), K = a_in.size(-1);
  const auto sc = aligned_batch_strides(c, batch);
  // Last two dims that cuBLAS can read (row- or column-major with a leading dimension).
  const auto ready = [&](const Tensor<U>& t) {
    const std::size_t r = t.shape().size();
    std::int64_t ld = 0;
    return cpu::gemm_layout(t.shape()[r - 2], t.shape()[r - 1], t.strides()[r - 2], t.strides()[r - 1], &ld) !=
                   cpu::GemmLayout::Unsupported
               ? t
               : contiguous(t.detach());
  };
  // The batch stride of t when its batch dims collapse to one, else a copy that does.
  const auto batched = [&](Tensor<U> t, std::int64_t rows, std::int64_t cols, std::int64_t* stride) {
    const auto strides = aligned_batch_strides(t, batch);
    std::vector<std::pair<std::int64_t, std::int64_t>> dims;
    for (std::size_t d = 0; d < batch.size(); ++d) dims.emplace_back(batch[d], strides[d]);
    std::int64_t extent = 0;
    if (collapse_dims(dims, &extent, stride)) return t;
    Shape full = batch;
    full.push_back(rows);
    full.push_back(cols);
    Tensor<U> dense = contiguous(t.detach().reshape(t.shape()).expand(full));
    *stride = rows * cols;
    return dense;
  };
  std::int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  const Tensor<U> a = batched(ready(a_in), M, K, &stride_a);
  const Tensor<U> b = batched(ready(b_in), K, N, &stride_b);
  {
    std::vector<std::pair<std::int64_t, std::int64_t>> dims;
    for (std::size_t d = 0; d < batch.size(); ++d) dims.emplace_back(batch[d], sc[d]);
    std::int64_t extent = 0;
    CONDENSE_CHECK(collapse_dims(dims, &extent, &stride_c), op, "output of shape ", c.shape(), " is not contiguous");
  }
  // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS's A is our b, its B our a.
  const auto describe = [](const Tensor<U>& t, bool* transpose, std::int64_t* ld) {
    const std::size_t r = t.shape().size();
    const auto layout = cpu::gemm_layout(t.shape()[r - 2], t.shape()[r - 1], t.strides()[r - 2], t.strides()[r - 1], ld);
    *transpose = layout == cpu::GemmLayout::ColMajor;
  };
  cuda::GemmArgs g;
  g.dtype = dtype_of<T>;
  g.bf16_inputs = !std::is_same_v<U, T>;
  g.device = c.device().index;
  g.m = N;
  g.n = M;
  g.k = K;
  g.batch = numel_of(batch);
  g.a = b.data();
  describe(b, &g.transpose_a, &g.lda);
  g.stride_a = stride_b;
  g.b = a.data();
  describe(a, &g.transpose_b, &g.ldb);
  g.stride_b = stride_a;
  g.c = c.data();
  g.ldc = std::max<std::int64_t>(N, 1);
  g.stride_c = stride_c;
  g.beta = accumulate ? 1.0 : 0.0;
  cuda::gemm(g, op);
}

/// The operands of c (+)= sum over the batch of a @ b as one product with the batch folded
/// into the contraction: a as [M, batch*K] and b as [batch*K, N] (views where the batch dims
/// collapse onto K's stride, else copies laid out so they do; not recording).
// a: [batch..., M, K], b: [batch..., K, N] -> [M, batch*K], [batch*K, N]
template <Element T>
std::pair<Tensor<T>, Tensor<T>> batch_folded_into_contraction(const Tensor<T>& a, const Tensor<T>& b, const Shape& batch) {
  const std::int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  Shape full_a = batch, full_b = batch;
  full_a.push_back(M);
  full_a.push_back(K);
  full_b.push_back(K);
  full_b.push_back(N);
  // The stride of t's dim `d` counted from the end (-1: the last).
  const auto stride = [](const Tensor<T>& t, int d) { return t.strides()[t.shape().size() - static_cast<std::size_t>(-d)]; };
  // Dims (extent, stride) of `t`'s batch followed by its dim `inner`, collapsed to one.
  const auto fold = [&](const Tensor<T>& t, int inner, std::int64_t* extent, std::int64_t* folded_stride) {
    const auto strides = aligned_batch_strides(t, batch);
    std::vector<std::pair<std::int64_t, std::int64_t>> dims;
    for (std::size_t d = 0; d < batch.size(); ++d) dims.emplace_back(batch[d], strides[d]);
    dims.emplace_back(t.size(inner), stride(t, inner));
    return collapse_dims(dims, extent, folded_stride);
  };
  std::int64_t ka = 0, sa = 0, kb = 0, sb = 0;
  Tensor<T> fa = a.detach();
  if (!fold(fa, -1, &ka, &sa)) {
    // [batch..., K, M] contiguous, seen as [batch..., M, K]: the batch and K collapse (stride M).
    fa = contiguous(fa.expand(full_a).transpose(-1, -2)).transpose(-1, -2);
    CONDENSE_CHECK(fold(fa, -1, &ka, &sa), "matmul", "cannot fold the batch of ", a.describe(), " into its columns");
  }
  Tensor<T> fb = b.detach();
  if (!fold(fb, -2, &kb, &sb)) {
    fb = contiguous(fb.expand(full_b));  // [batch..., K, N]: the batch and K collapse (stride N)
    CONDENSE_CHECK(fold(fb, -2, &kb, &sb), "matmul", "cannot fold the batch of ", b.describe(), " into its rows");
  }
  return {Tensor<T>::from_storage(fa.storage(), Shape{M, ka}, Strides{stride(fa, -2), sa}, fa.offset()),
          Tensor<T>::from_storage(fb.storage(), Shape{kb, N}, Strides{sb, stride(fb, -1)}, fb.offset())};
}

/// The CUDA form of matmul_into (same contract): one cuBLAS strided-batched GEMM
/// (cuda_gemm_into), with float operands rounded to bfloat16 first when
/// cuda::allow_bf16_matmul(). 16-bit operands give a 16-bit product (fp32 accumulation,
/// one rounding). A c broadcast over the whole batch (a weight gradient) is one GEMM with the
/// batch folded into the contraction; a c broadcast over some batch dims only gets the full
/// product summed down (computed in float for 16-bit operands, so still one rounding).
template <NumericElement T>
void cuda_matmul_into(const Tensor<T>& a_in, const Tensor<T>& b_in, const Tensor<T>& c, const Shape& batch, bool accumulate) {
  constexpr std::string_view op = "matmul";
  if constexpr (!DifferentiableElement<T>) {
    fail(op, "no CUDA kernel for ", a_in.describe(), " @ ", b_in.describe(), " (integer products run on the CPU)");
  } else {
    const std::int64_t M = c.size(-2), N = c.size(-1), K = a_in.size(-1);
    const auto sc = aligned_batch_strides(c, batch);
    bool reduced = false, kept = false;
    for (std::size_t d = 0; d < batch.size(); ++d) {
      reduced = reduced || (batch[d] != 1 && sc[d] == 0);
      kept = kept || (batch[d] != 1 && sc[d] != 0);
    }
    // The folded depth must fit cuBLAS's int (beyond it: the summed-product path below).
    const bool foldable = static_cast<double>(numel_of(batch)) * static_cast<double>(K) <= double(INT_MAX);
    if (reduced && !kept && foldable) {
      const auto [fa, fb] = batch_folded_into_contraction(a_in, b_in, batch);
      const std::size_t rank = c.shape().size();
      const Tensor<T> c2 =
          Tensor<T>::from_storage(c.storage(), Shape{M, N}, Strides{c.strides()[rank - 2], c.strides()[rank - 1]}, c.offset());
      cuda_matmul_into(fa, fb, c2, Shape{}, accumulate);
      return;
    }
    if (reduced) {
      Shape full = batch;
      full.push_back(M);
      full.push_back(N);
      using Wide = compute_type_t<T>;
      const Tensor<Wide> product = Tensor<Wide>::empty(full, c.device());
      if constexpr (std::is_same_v<Wide, T>) {
        cuda_matmul_into(a_in, b_in, product, batch, false);
      } else if (K == 0) {
        cuda_fill(op, product, 0.0);
      } else {  // float GEMMs of the widened operands (exact copies), never rounded to bfloat16
        cuda_gemm_into(cast<Wide>(a_in.detach()), cast<Wide>(b_in.detach()), product, batch, false);
      }
      const Tensor<Wide> summed = sum_to(product, c.shape());
      if (accumulate) {
        cuda_copy_into(op, c, add(cast<Wide>(c.detach()), summed));
      } else {
        cuda_copy_into(op, c, summed);
      }
      return;
    }
    if (K == 0) {
      if (!accumulate) cuda_fill(op, c, 0.0);
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (cuda::allow_bf16_matmul()) {
        cuda_gemm_into(a_in.detach().template cast<bfloat16>(), b_in.detach().template cast<bfloat16>(), c, batch,
                       accumulate);
        return;
      }
    }
    cuda_gemm_into(a_in, b_in, c, batch, accumulate);
  }
}

/// The CPU form of matmul_into (below; same contract), on Eigen GEMMs.
template <ArithmeticElement T>
void cpu_matmul_into(const Tensor<T>& a_in, const Tensor<T>& b_in, const Tensor<T>& c, const Shape& batch, bool accumulate) {
  const Tensor<T> a = gemm_operand(a_in), b = gemm_operand(b_in);
  const cpu::MatrixRef<const T> ma = trailing_matrix(a), mb = trailing_matrix(b);
  const cpu::MatrixRef<T> mc = trailing_matrix(c);
  const std::int64_t M = mc.rows, N = mc.cols, K = ma.cols;
  const auto sa = aligned_batch_strides(a, batch), sb = aligned_batch_strides(b, batch), sc = aligned_batch_strides(c, batch);

  // Batch dims c keeps (parallel, independent products) and dims it is broadcast over (summed).
  struct Dim {
    std::int64_t extent, a, b, c;
  };
  std::vector<Dim> kept, reduced;
  std::int64_t kept_count = 1, reduced_count = 1;
  for (std::size_t d = 0; d < batch.size(); ++d) {
    if (batch[d] == 1) continue;
    if (sc[d] == 0) {
      reduced.push_back({batch[d], sa[d], sb[d], 0});
      reduced_count *= batch[d];
    } else {
      kept.push_back({batch[d], sa[d], sb[d], sc[d]});
      kept_count *= batch[d];
    }
  }
  if (K == 0 || reduced_count == 0) {  // empty sums
    if (!accumulate) std::fill(c.data(), c.data() + c.numel(), T(0));
    return;
  }
  if (kept_count == 1 && reduced_count == 1) {
    cpu::gemm(ma, mb, mc, accumulate);
    return;
  }

  // Distinct c matrices side by side on separate threads, one single-threaded GEMM each?
  const double work = double(M) * double(N) * double(K) * double(reduced_count);
  const bool split = split_batch_across_threads(kept_count, work);

  // b shared by every batch entry: fold a's batch dims into its rows -> one [batch*M, K] GEMM.
  // Measured on 2 threads: the fold wins when each product is a thin GEMM (few rows) or large
  // enough for Eigen's own threading to pay; in between, independent per-entry GEMMs on the
  // threads beat one threaded GEMM (up to 1.5x for [64, 256, 64] @ [64, 256]).
  const bool prefer_fold = !split || M < 32 || double(M) * double(N) * double(K) >= double(1 << 27);
  if (prefer_fold && reduced.empty() && std::all_of(kept.begin(), kept.end(), [](const Dim& d) { return d.b == 0; })) {
    std::vector<std::pair<std::int64_t, std::int64_t>> rows_a, rows_c;
    for (const Dim& d : kept) {
      rows_a.emplace_back(d.extent, d.a);
      rows_c.emplace_back(d.extent, d.c);
    }
    rows_a.emplace_back(M, ma.row_stride);
    rows_c.emplace_back(M, mc.row_stride);
    std::int64_t ra = 0, rsa = 0, rc = 0, rsc = 0;
    if (collapse_dims(rows_a, &ra, &rsa) && collapse_dims(rows_c, &rc, &rsc)) {
      const cpu::MatrixRef<const T> fa{ma.data, ra, K, rsa, ma.col_stride};
      const cpu::MatrixRef<T> fc{mc.data, rc, N, rsc, mc.col_stride};
      if (cpu::gemm_compatible(fa) && cpu::gemm_compatible(fc)) {
        cpu::gemm(fa, mb, fc, accumulate);
        return;
      }
    }
  }
  // One c matrix summed over the whole batch: fold the batch into the contraction -> one GEMM
  // with depth batch*K (e.g. the weight gradient of x @ W for x [B, T, D]).
  if (kept.empty()) {
    std::vector<std::pair<std::int64_t, std::int64_t>> cols_a, rows_b;
    for (const Dim& d : reduced) {
      cols_a.emplace_back(d.extent, d.a);
      rows_b.emplace_back(d.extent, d.b);
    }
    cols_a.emplace_back(K, ma.col_stride);
    rows_b.emplace_back(K, mb.row_stride);
    std::int64_t ka = 0, csa = 0, kb = 0, rsb = 0;
    if (collapse_dims(cols_a, &ka, &csa) && collapse_dims(rows_b, &kb, &rsb)) {
      const cpu::MatrixRef<const T> fa{ma.data, M, ka, ma.row_stride, csa};
      const cpu::MatrixRef<const T> fb{mb.data, kb, N, rsb, mb.col_stride};
      if (cpu::gemm_compatible(fa) && cpu::gemm_compatible(fb)) {
        cpu::gemm(fa, fb, mc, accumulate);
        return;
      }
    }
  }

  // General case: one GEMM per batch entry; entries that share a c matrix run in turn on one
  // thread (accumulating), distinct c matrices may run on different threads.
  const auto offsets = [](const std::vector<Dim>& dims, std::int64_t index) {
    std::array<std::int64_t, 3> off{0, 0, 0};
    for (std::size_t d = dims.size(); d-- > 0;) {
      const std::int64_t i = index % dims[d].extent;
      index /= dims[d].extent;
      off[0] += i * dims[d].a;
      off[1] += i * dims[d].b;
      off[2] += i * dims[d].c;
    }
    return off;
  };
  const auto run = [&](std::int64_t k0, std::int64_t k1) {
    for (std::int64_t k = k0; k < k1; ++k) {
      const auto ko = offsets(kept, k);
      const cpu::MatrixRef<T> ck{mc.data + ko[2], M, N, mc.row_stride, mc.col_stride};
      for (std::int64_t r = 0; r < reduced_count; ++r) {
        const auto ro = offsets(reduced, r);
        const cpu::MatrixRef<const T> ak{ma.data + ko[0] + ro[0], M, K, ma.row_stride, ma.col_stride};
        const cpu::MatrixRef<const T> bk{mb.data + ko[1] + ro[1], K, N, mb.row_stride, mb.col_stride};
        cpu::gemm(ak, bk, ck, accumulate || r > 0);
      }
    }
  };
  if (split) {
    // Inside the parallel region Eigen sees omp_get_num_threads() > 1 and does not spawn threads.
    cpu::parallel_for(0, kept_count, 1, run);
  } else {
    run(0, kept_count);
  }
}

/// c (+)= a @ b over batch dims. a: [..., M, K], b: [..., K, N], c: [..., M, N] contiguous.
/// `batch` is the broadcast of a's and b's batch dims; c's batch dims must broadcast to it, and
/// the products of all batch entries that fall on one c entry are summed into it (the backward
/// of broadcasting). Adds to c's contents when `accumulate`, overwrites them otherwise.
/// a and b may be any views (broadcast batch dims are not copied); they must not require grad.
/// 16-bit operands only on CUDA (the CPU ops take them through float).
template <NumericElement T>
void matmul_into(const Tensor<T>& a_in, const Tensor<T>& b_in, const Tensor<T>& c, const Shape& batch, bool accumulate) {
  CONDENSE_CHECK(c.is_contiguous(), "matmul", "output buffer of shape ", c.shape(), " must be contiguous");
  if (c.numel() == 0) return;
  if (c.device().is_cuda()) {
    cuda_matmul_into(a_in, b_in, c, batch, accumulate);
  } else if constexpr (ArithmeticElement<T>) {
    cpu_matmul_into(a_in, b_in, c, batch, accumulate);
  } else {
    fail("matmul", "no CPU GEMM for ", a_in.describe(), " @ ", b_in.describe(), " (16-bit products run through float)");
  }
}

/// A contiguous tensor with `shape` over the storage of contiguous `t` (no autograd).
template <Element T>
Tensor<T> reshaped_storage(const Tensor<T>& t, const Shape& shape) {
  return Tensor<T>::from_storage(t.storage(), shape, contiguous_strides(shape), t.offset());
}

/// Shared forward and backward of matmul and bmm (`op` names errors and the graph node).
template <NumericElement T>
Tensor<T> matmul_impl(std::string_view op, const Tensor<T>& a, const Tensor<T>& b) {
  CONDENSE_CHECK(a.defined() && b.defined(), op, "undefined tensor argument");
  check_same_device(op, a, b);
  CONDENSE_CHECK(a.dim() >= 1 && b.dim() >= 1, op, "both arguments need at least one dimension, got ", a.shape(), " @ ",
                 b.shape());
  // 1-D operands are promoted: a [K] -> [1, K], b [K] -> [K, 1]; the unit dims are dropped after.
  const Tensor<T> a2 = a.dim() == 1 ? a.detach().unsqueeze(0) : a.detach();
  const Tensor<T> b2 = b.dim() == 1 ? b.detach().unsqueeze(1) : b.detach();
  const std::int64_t M = a2.size(-2), K = a2.size(-1), N = b2.size(-1);
  CONDENSE_CHECK(K == b2.size(-2), op, "inner dimensions differ: ", a.shape(), " @ ", b.shape());
  const Shape ba = batch_dims(a2.shape()), bb = batch_dims(b2.shape());
  const std::size_t rank = std::max(ba.size(), bb.size());
  Shape batch{std::vector<std::int64_t>(rank, 1)};
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t da = i < rank - ba.size() ? 1 : ba[i - (rank - ba.size())];
    const std::int64_t db = i < rank - bb.size() ? 1 : bb[i - (rank - bb.size())];
    CONDENSE_CHECK(da == db || da == 1 || db == 1, op, "batch dimensions cannot be broadcast: ", a.shape(), " @ ",
                   b.shape());
    batch[i] = da == 1 ? db : da;
  }
  Shape full = batch, shape = batch;
  full.push_back(M);
  full.push_back(N);
  if (a.dim() > 1) shape.push_back(M);
  if (b.dim() > 1) shape.push_back(N);

  const Tensor<T> out2 = Tensor<T>::empty(full, a.device());
  matmul_into(a2, b2, out2, batch, false);
  Tensor<T> out = reshaped_storage(out2, shape);
  if constexpr (DifferentiableElement<T>) {
    record<T>(op, out, {a, b},
              [a2, b2, batch, a_shape = a.shape(), b_shape = b.shape()](const Tensor<T>& g, GradSink& s) {
                // Restore the promoted unit dims on the gradient (views, no copy).
                Tensor<T> g2 = g;
                if (a_shape.size() == 1) g2 = g2.unsqueeze(static_cast<std::int64_t>(batch.size()));
                if (b_shape.size() == 1) g2 = g2.unsqueeze(-1);
                if (s.wants(0)) {  // dA = dC @ B^T, summed over a's broadcast batch dims
                  const Tensor<T> ga = Tensor<T>::empty(a2.shape(), g.device());
                  matmul_into(g2, b2.transpose(-1, -2), ga, batch, false);
                  s.add(0, reshaped_storage(ga, a_shape));
                }
                if (s.wants(1)) {  // dB = A^T @ dC, summed over b's broadcast batch dims
                  const Tensor<T> gb = Tensor<T>::empty(b2.shape(), g.device());
                  matmul_into(a2.transpose(-1, -2), g2, gb, batch, false);
                  s.add(1, reshaped_storage(gb, b_shape));
                }
              });
  }
  return out;
}

/// bmm: matmul_impl on two 3-D tensors of equal batch size.
template <NumericElement T>
Tensor<T> bmm_impl(const Tensor<T>& a, const Tensor<T>& b) {
  CONDENSE_CHECK(a.defined() && b.defined(), "bmm", "undefined tensor argument");
  CONDENSE_CHECK(a.dim() == 3 && b.dim() == 3, "bmm", "expected 3-D tensors, got ", a.shape(), " @ ", b.shape());
  CONDENSE_CHECK(a.size(0) == b.size(0), "bmm", "batch sizes differ: ", a.shape(), " @ ", b.shape());
  return detail::matmul_impl("bmm", a, b);
}

}  // namespace detail

/// Matrix product with PyTorch's matmul semantics: 1-D @ 1-D is a dot product (0-D result);
/// a 1-D first argument is a row vector and a 1-D second argument a column vector (their unit
/// dim is dropped from the result); with more dims the leading (batch) dims broadcast.
/// Transposed views are multiplied without a copy. Differentiable for float and double.
// a: [K] or [..., M, K], b: [K] or [..., K, N] -> [broadcast(...), M, N] without the 1-D unit dims
template <ArithmeticElement T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::matmul_impl("matmul", a, b);
}

/// Batched matrix product without broadcasting: both arguments 3-D with equal batch size.
// a: [B, M, K], b: [B, K, N] -> [B, M, N]
template <ArithmeticElement T>
Tensor<T> bmm(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::bmm_impl(a, b);
}

namespace detail {

/// linear on CPU tensors of the arithmetic types and on CUDA tensors of every float type.
template <NumericElement T>
Tensor<T> linear_impl(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias) {
  CONDENSE_CHECK(x.defined() && weight.defined(), "linear", "undefined tensor argument");
  detail::check_same_device("linear", x, weight);
  CONDENSE_CHECK(x.dim() >= 1, "linear", "input needs at least one dimension, got ", x.shape());
  CONDENSE_CHECK(weight.dim() == 2, "linear", "weight must be 2-D [out, in], got ", weight.shape());
  CONDENSE_CHECK(x.size(-1) == weight.size(1), "linear", "input ", x.shape(), " has ", x.size(-1),
                 " features but weight ", weight.shape(), " expects ", weight.size(1));
  const std::int64_t out_features = weight.size(0);
  if (bias.defined()) {
    detail::check_same_device("linear", x, bias);
    CONDENSE_CHECK(bias.dim() == 1 && bias.size(0) == out_features, "linear", "bias ", bias.shape(),
                   " does not match weight ", weight.shape(), ": expected (", out_features, ")");
  }
  const Tensor<T> x2 = x.dim() == 1 ? x.detach().unsqueeze(0) : x.detach();
  const Tensor<T> w = weight.detach();
  const Shape batch = detail::batch_dims(x2.shape());
  Shape full = batch, shape = batch;
  full.push_back(x2.size(-2));
  full.push_back(out_features);
  if (x.dim() > 1) shape.push_back(x2.size(-2));
  shape.push_back(out_features);

  const Tensor<T> out2 = Tensor<T>::empty(full, x.device());
  if (bias.defined() && x.device().is_cuda()) {  // start from the bias in every row
    detail::cuda_copy_into("linear", out2, bias.detach().expand(full));
  } else if (bias.defined()) {  // start from the bias in every row, then accumulate the product onto it
    const std::vector<T> bv = bias.to_vector();
    T* o = out2.data();
    const std::int64_t rows = out_features == 0 ? 0 : out2.numel() / out_features;
    cpu::parallel_for(0, rows, std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(out_features, 1)),
                      [&](std::int64_t r0, std::int64_t r1) {
                        for (std::int64_t r = r0; r < r1; ++r) std::copy(bv.begin(), bv.end(), o + r * out_features);
                      });
  }
  detail::matmul_into(x2, w.transpose(0, 1), out2, batch, bias.defined());
  Tensor<T> out = detail::reshaped_storage(out2, shape);
  if constexpr (DifferentiableElement<T>) {
    record<T>("linear", out, {x, weight, bias},
              [x2, w, batch, x_shape = x.shape(), out_features](const Tensor<T>& g, GradSink& s) {
                const Tensor<T> g2 = x_shape.size() == 1 ? g.unsqueeze(0) : g;
                if (s.wants(0)) {  // dx = dy @ weight
                  const Tensor<T> gx = Tensor<T>::empty(x2.shape(), g.device());
                  detail::matmul_into(g2, w, gx, batch, false);
                  s.add(0, detail::reshaped_storage(gx, x_shape));
                }
                if (s.wants(1)) {  // dweight = dy^T @ x, summed over the batch (one GEMM when it folds)
                  const Tensor<T> gw = Tensor<T>::empty(w.shape(), g.device());
                  detail::matmul_into(g2.transpose(-1, -2), x2, gw, batch, false);
                  s.add(1, gw);
                }
                if (s.wants(2)) s.add(2, sum_to(g, Shape{out_features}));  // dbias = dy summed over rows
              });
  }
  return out;
}

}  // namespace detail

/// Affine map x @ weight^T + bias with weight in PyTorch's [out, in] layout (the transpose is
/// never materialised). `bias` may be an undefined Tensor (no bias). Differentiable in x,
/// weight and bias for float and double.
// x: [..., in], weight: [out, in], bias: [out] or undefined -> [..., out]
template <ArithmeticElement T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias = Tensor<T>()) {
  return detail::linear_impl(x, weight, bias);
}

// ---- the 16-bit floats -------------------------------------------------------------------
// On CUDA, 16-bit operands go to cuBLAS as they are: 16-bit inputs and output, fp32
// accumulation, one rounding of each product (tensor cores). On the CPU they are multiplied
// as float and the product is rounded once (detail::through_float). Either way the
// gradients are products of the same kind.

/// matmul of 16-bit tensors (see the float overload for the shapes).
// a: [K] or [..., M, K], b: [K] or [..., K, N] -> [broadcast(...), M, N]
template <HalfElement T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
  if (a.defined() && a.device().is_cuda()) return detail::matmul_impl("matmul", a, b);
  return detail::through_float([](const Tensor<float>& af, const Tensor<float>& bf) { return matmul(af, bf); }, a, b);
}

/// bmm of 16-bit tensors.
// a: [B, M, K], b: [B, K, N] -> [B, M, N]
template <HalfElement T>
Tensor<T> bmm(const Tensor<T>& a, const Tensor<T>& b) {
  if (a.defined() && a.device().is_cuda()) return detail::bmm_impl(a, b);
  return detail::through_float([](const Tensor<float>& af, const Tensor<float>& bf) { return bmm(af, bf); }, a, b);
}

/// linear of 16-bit tensors (`bias` may be undefined).
// x: [..., in], weight: [out, in], bias: [out] or undefined -> [..., out]
template <HalfElement T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias = Tensor<T>()) {
  if (x.defined() && x.device().is_cuda()) return detail::linear_impl(x, weight, bias);
  return detail::through_float(
      [](const Tensor<float>& xf, const Tensor<float>& wf, const Tensor<float>& bf) { return linear(xf, wf, bf); }, x, weight,
      bias);
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
