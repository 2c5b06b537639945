// The CUDA launchers of the lookup ops: the embedding gather and its deterministic
// scatter-add backward, and cross_entropy's fused log-softmax + negative log-likelihood
// (per-row loss and log-sum-exp, the reduced total, the gradient). Plain C++ declarations on
// raw device pointers: no CUDA header reaches a CPU translation unit. The definitions live
// in kernels/embedding.cu and kernels/cross_entropy.cu; in a build without CUDA each
// launcher throws condense::Error naming the op.
#pragma once

#include <cstdint>
#include <string_view>
#include <type_traits>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"

namespace condense::cuda {

/// Element type of the per-row statistics and partial sums the lookup kernels keep for
/// element type T: double for double, float for float and the 16-bit types.
template <class T>
using lookup_stat_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

/// Most occurrences of one id one work item of the embedding backward sums; rows hit more
/// often are summed in chunks of this many into partial rows, then the partials in order.
inline constexpr std::int64_t embedding_grad_chunk = 32;

/// The work of the embedding backward kernels, one device buffer of int64 built on the host
/// from the sorted ids (detail::embedding_grad_plan in ops/embedding.hpp), laid out as:
///   positions sorted by id, stably       [positions]
///   items: destination, begin, end       [items x 3]   destination >= 0: a table row;
///                                                      < 0: partial row -1 - destination
///   heavy rows: row, first partial, count [heavy_rows x 3]
/// An item sums the gradient rows of the sorted positions [begin, end) in order.
struct EmbeddingGradWork {
  const std::int64_t* plan = nullptr;  ///< device buffer of the layout above
  std::int64_t positions = 0;          ///< ids looked up in the forward pass
  std::int64_t items = 0;
  std::int64_t heavy_rows = 0;
  void* partials = nullptr;            ///< device workspace [partial_rows, dim] of lookup_stat_t
  std::int64_t partial_rows = 0;
};

/// Arguments of the cross_entropy kernels (all device pointers, contiguous).
struct CrossEntropyArgs {
  DType dtype = DType::Float32;         ///< of the logits (and losses, gradients)
  DType target_dtype = DType::Int64;    ///< int32 or int64
  int device = 0;
  std::int64_t rows = 0, classes = 0;   ///< logits [rows, classes], targets [rows]
  std::int64_t ignore_index = -100;     ///< targets equal to it count for nothing
  std::int64_t count = 0;               ///< targets not equal to ignore_index
  double label_smoothing = 0.0;
  const void* logits = nullptr;
  const void* targets = nullptr;
  void* lse = nullptr;                  ///< [rows] of lookup_stat_t: written forward, read backward
};

#if CONDENSE_WITH_CUDA
/// out[i] = table[ids[i]] for i < n: rows of `row_bytes` bytes copied from the contiguous
/// table to the contiguous out; ids (int32 or int64, device memory) must be valid rows.
void embedding_gather(void* out, const void* table, std::int64_t row_bytes, const void* ids, DType id_dtype,
                      std::int64_t n, int device, std::string_view op);
/// grad_table [rows, dim] (uninitialised) = the rows of grad_out [positions, dim] summed by
/// id as `work` describes; rows that no item reaches (no id, the padding row) get zero.
void embedding_grad(void* grad_table, const void* grad_out, DType dtype, std::int64_t rows, std::int64_t dim,
                    const EmbeddingGradWork& work, int device, std::string_view op);
/// Writes args.lse and the loss of each row into `row_losses` ([rows], of args.dtype, or of
/// lookup_stat_t when `stat_losses`); rows whose target is ignored get 0 for both.
void cross_entropy_forward(const CrossEntropyArgs& args, void* row_losses, bool stat_losses, std::string_view op);
/// total (a scalar of args.dtype) = the sum of `stat_losses` ([rows] of lookup_stat_t),
/// divided by args.count when `mean` (0 when the count is 0). Deterministic.
void cross_entropy_total(const CrossEntropyArgs& args, void* total, const void* stat_losses, bool mean,
                         std::string_view op);
/// grad_logits [rows, classes] = (softmax - target distribution) * scale per row, zero rows
/// for ignored targets; scale = grad_loss[r] * grad_scale when `per_row`, else
/// grad_loss[0] * grad_scale (grad_loss stays on the device).
void cross_entropy_backward(const CrossEntropyArgs& args, void* grad_logits, const void* grad_loss, bool per_row,
                            double grad_scale, std::string_view op);
#else
inline void embedding_gather(void*, const void*, std::int64_t, const void*, DType, std::int64_t, int,
                             std::string_view op) {
  throw_no_cuda(op);
}
inline void embedding_grad(void*, const void*, DType, std::int64_t, std::int64_t, const EmbeddingGradWork&, int,
                           std::string_view op) {
  throw_no_cuda(op);
}
inline void cross_entropy_forward(const CrossEntropyArgs&, void*, bool, std::string_view op) { throw_no_cuda(op); }
inline void cross_entropy_total(const CrossEntropyArgs&, void*, const void*, bool, std::string_view op) {
  throw_no_cuda(op);
}
inline void cross_entropy_backward(const CrossEntropyArgs&, void*, const void*, bool, double, std::string_view op) {
  throw_no_cuda(op);
}
#endif

}  // namespace condense::cuda
