// cross_entropy CUDA kernels, one block per row of logits (64 to 1024 threads by the
// number of classes). Forward: a single pass over the row in which every thread keeps a
// running max, its rescaled sum of exponentials (online log-sum-exp) and the plain sum
// (for label smoothing), then one warp-shuffle block reduction; thread 0 writes the row's
// log-sum-exp and loss. The Mean/Sum total is one block's fixed-order tree sum of the row
// losses in double. Backward: (softmax - target distribution) * scale in one sweep, the
// scale read from the incoming gradient on the device. Rows are read (and the gradient
// written) in 16-byte packs from the row's first 16-byte boundary, with a scalar head and
// tail. Accumulation in float for float and the 16-bit types, double for double.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "condense/backend/cuda/lookup_kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

constexpr int max_row_threads = 1024;
constexpr int total_threads = 1024;

/// Threads per row: about 8 classes per thread, between 64 and max_row_threads.
int row_threads(std::int64_t classes) {
  int threads = 64;
  while (threads < max_row_threads && static_cast<std::int64_t>(threads) * 8 < classes) threads *= 2;
  return threads;
}

/// Elements of T in a 16-byte pack.
template <class T>
constexpr int pack_width = 16 / static_cast<int>(sizeof(T));

/// Elements of the row at `x` before its first 16-byte boundary, at most n.
template <class T>
__device__ __forceinline__ std::int64_t aligned_head(const T* x, std::int64_t n) {
  const auto address = reinterpret_cast<std::uintptr_t>(x);
  const std::int64_t head = address % sizeof(T) != 0 ? n : static_cast<std::int64_t>((16 - address % 16) % 16 / sizeof(T));
  return head < n ? head : n;
}

/// Calls f(column, value) for the elements of row x[0, n) this thread owns.
template <class T, class F>
__device__ __forceinline__ void for_each_in_row(const T* x, std::int64_t n, F&& f) {
  constexpr int width = pack_width<T>;
  const std::int64_t head = aligned_head(x, n);
  for (std::int64_t c = threadIdx.x; c < head; c += blockDim.x) f(c, load(x + c));
  const std::int64_t packs = (n - head) / width;
  const uint4* p = reinterpret_cast<const uint4*>(x + head);
  for (std::int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const uint4 raw = p[i];
    T v[width];
    memcpy(static_cast<void*>(v), &raw, sizeof raw);
#pragma unroll
    for (int k = 0; k < width; ++k) f(head + i * width + k, load(v + k));
  }
  for (std::int64_t c = head + packs * width + threadIdx.x; c < n; c += blockDim.x) f(c, load(x + c));
}

/// y[c] = f(c, x[c]) for the elements of the rows [0, n) this thread owns (16-byte packs
/// when x and y share their alignment, one element at a time otherwise).
template <class T, class F>
__device__ __forceinline__ void map_row(const T* x, T* y, std::int64_t n, F&& f) {
  constexpr int width = pack_width<T>;
  const std::int64_t head = aligned_head(x, n);
  if (head != aligned_head(y, n)) {
    for (std::int64_t c = threadIdx.x; c < n; c += blockDim.x) y[c] = to_element<T>(f(c, load(x + c)));
    return;
  }
  for (std::int64_t c = threadIdx.x; c < head; c += blockDim.x) y[c] = to_element<T>(f(c, load(x + c)));
  const std::int64_t packs = (n - head) / width;
  const uint4* p = reinterpret_cast<const uint4*>(x + head);
  uint4* q = reinterpret_cast<uint4*>(y + head);
  for (std::int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const uint4 raw = p[i];
    T v[width];
    memcpy(static_cast<void*>(v), &raw, sizeof raw);
#pragma unroll
    for (int k = 0; k < width; ++k) v[k] = to_element<T>(f(head + i * width + k, load(v + k)));
    uint4 out;
    memcpy(&out, v, sizeof out);
    q[i] = out;
  }
  for (std::int64_t c = head + packs * width + threadIdx.x; c < n; c += blockDim.x) y[c] = to_element<T>(f(c, load(x + c)));
}

/// A (partial) row's max, sum of exp(x - max) and sum of x.
template <class A>
struct RowStats {
  A max;
  A sum_exp;
  A sum;
};

template <class A>
__device__ __forceinline__ RowStats<A> merge(const RowStats<A>& a, const RowStats<A>& b) {
  const A m = a.max > b.max ? a.max : b.max;
  RowStats<A> r;
  r.max = m;
  // A part whose max is the merged max needs no rescaling: that also keeps -inf - -inf and
  // +inf - +inf (NaN) out of the sum.
  r.sum_exp = a.sum_exp * (a.max == m ? A(1) : d_exp(a.max - m)) + b.sum_exp * (b.max == m ? A(1) : d_exp(b.max - m));
  r.sum = a.sum + b.sum;
  return r;
}

template <class A>
__device__ __forceinline__ RowStats<A> warp_merge(RowStats<A> v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    RowStats<A> other;
    other.max = __shfl_xor_sync(0xffffffffu, v.max, offset);
    other.sum_exp = __shfl_xor_sync(0xffffffffu, v.sum_exp, offset);
    other.sum = __shfl_xor_sync(0xffffffffu, v.sum, offset);
    v = merge(v, other);
  }
  return v;
}

/// The stats of the whole row from every thread's part; every thread gets the result.
template <class A>
__device__ __forceinline__ RowStats<A> block_merge(RowStats<A> v, RowStats<A>* scratch) {
  v = warp_merge(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  if (lane < warps) {
    v = scratch[lane];
  } else {
    v.max = -INFINITY;
    v.sum_exp = 0;
    v.sum = 0;
  }
  v = warp_merge(v);
  __syncthreads();  // scratch is reused by the next row
  return v;
}

/// Per row: lse = max + log(sum exp(x - max)), loss = keep (lse - x[t]) + smoothing
/// (lse - sum(x) / C); both 0 for an ignored target. L: the element type of the row losses.
template <class T, class I, class A, class L>
__global__ void __launch_bounds__(max_row_threads) cross_entropy_rows(const T* logits, const I* targets, std::int64_t rows, std::int64_t classes,
                                   std::int64_t ignore_index, A keep, A smoothing, A* lse, L* row_losses) {
  __shared__ RowStats<A> scratch[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const auto target = static_cast<std::int64_t>(targets[r]);
    if (target == ignore_index) {  // the same for every thread of the block
      if (threadIdx.x == 0) {
        lse[r] = A(0);
        row_losses[r] = to_element<L>(A(0));
      }
      continue;
    }
    const T* x = logits + r * classes;
    RowStats<A> stats;
    stats.max = -INFINITY;
    stats.sum_exp = 0;
    stats.sum = 0;
    for_each_in_row(x, classes, [&](std::int64_t, A v) {
      if (v > stats.max) {
        stats.sum_exp = stats.sum_exp * d_exp(stats.max - v) + A(1);
        stats.max = v;
      } else if (v == stats.max) {  // exp(0), also for a second +inf (inf - inf is NaN)
        stats.sum_exp += A(1);
      } else {  // NaN reaches the sum
        stats.sum_exp += d_exp(v - stats.max);
      }
      stats.sum += v;
    });
    stats = block_merge(stats, scratch);
    if (threadIdx.x == 0) {
      const A row_lse = stats.max + d_log(stats.sum_exp);
      A loss = keep * (row_lse - static_cast<A>(load(x + target)));
      if (smoothing > A(0)) loss += smoothing * (row_lse - stats.sum / static_cast<A>(classes));
      lse[r] = row_lse;
      row_losses[r] = to_element<L>(loss);
    }
  }
}

/// total = sum of the row losses (in double, a fixed-order tree), / count when `mean`.
template <class T, class A>
__global__ void __launch_bounds__(total_threads) cross_entropy_sum(T* total, const A* row_losses, std::int64_t rows, bool mean, std::int64_t count) {
  __shared__ double partial[total_threads];
  double s = 0;
  for (std::int64_t r = threadIdx.x; r < rows; r += blockDim.x) s += static_cast<double>(row_losses[r]);
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    double value = partial[0];
    if (mean) value = count > 0 ? value / static_cast<double>(count) : 0.0;
    *total = to_element<T>(value);
  }
}

/// Per row: grad = (exp(x - lse) - spread - (c == t ? keep : 0)) * scale, zeros for an
/// ignored target; scale = grad_loss[per_row ? r : 0] * grad_scale.
template <class T, class I, class A>
__global__ void __launch_bounds__(max_row_threads) cross_entropy_grad(T* grad, const T* logits, const I* targets, const A* lse, const T* grad_loss,
                                   bool per_row, A grad_scale, std::int64_t rows, std::int64_t classes,
                                   std::int64_t ignore_index, A keep, A spread) {
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* d = grad + r * classes;
    const auto target = static_cast<std::int64_t>(targets[r]);
    if (target == ignore_index) {
      for (std::int64_t c = threadIdx.x; c < classes; c += blockDim.x) d[c] = to_element<T>(A(0));
      continue;
    }
    const A scale = static_cast<A>(load(grad_loss + (per_row ? r : 0))) * grad_scale;
    const A row_lse = lse[r];
    map_row(logits + r * classes, d, classes, [&](std::int64_t c, A v) {
      return (d_exp(v - row_lse) - spread - (c == target ? keep : A(0))) * scale;
    });
  }
}

void check_args(const CrossEntropyArgs& args, std::string_view op) {
  CONDENSE_CHECK(args.rows >= 0 && args.classes >= 1, op, "CUDA cross_entropy of ", args.rows, " rows of ",
                 args.classes, " classes");
  CONDENSE_CHECK(args.label_smoothing >= 0.0 && args.label_smoothing <= 1.0, op, "label_smoothing must be in [0, 1], got ",
                 args.label_smoothing);
  CONDENSE_CHECK(args.rows == 0 || (args.logits && args.targets && args.lse), op,
                 "CUDA cross_entropy without logits, targets or row statistics");
}

unsigned row_blocks(std::int64_t rows) { return capped_blocks(rows); }

/// Calls f(T{}, I{}) for the logits' and the targets' element types.
template <class F>
void dispatch_types(const CrossEntropyArgs& args, std::string_view op, F&& f) {
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(args.dtype, op, [&](auto value_tag) {
    dispatch_dtype<std::int32_t, std::int64_t>(args.target_dtype, op, [&](auto target_tag) { f(value_tag, target_tag); });
  });
}

}  // namespace

void cross_entropy_forward(const CrossEntropyArgs& args, void* row_losses, bool stat_losses, std::string_view op) {
  check_args(args, op);
  if (args.rows == 0) return;
  CONDENSE_CHECK(row_losses != nullptr, op, "CUDA cross_entropy without an output for the row losses");
  use_device(args.device, op);
  const cudaStream_t stream = stream_of(args.device);
  const int threads = row_threads(args.classes);
  dispatch_types(args, op, [&](auto value_tag, auto target_tag) {
    using T = decltype(value_tag);
    using I = decltype(target_tag);
    using A = compute_t<T>;
    const auto keep = static_cast<A>(1.0 - args.label_smoothing);
    const auto smoothing = static_cast<A>(args.label_smoothing);
    const T* x = static_cast<const T*>(args.logits);
    const I* t = static_cast<const I*>(args.targets);
    A* lse = static_cast<A*>(args.lse);
    if (stat_losses) {
      detail::launch_kernel(cross_entropy_rows<T, I, A, A>, row_blocks(args.rows), threads, 0, stream, x, t, args.rows,
                            args.classes, args.ignore_index, keep, smoothing, lse, static_cast<A*>(row_losses));
    } else {
      detail::launch_kernel(cross_entropy_rows<T, I, A, T>, row_blocks(args.rows), threads, 0, stream, x, t, args.rows,
                            args.classes, args.ignore_index, keep, smoothing, lse, static_cast<T*>(row_losses));
    }
  });
  check_launch(op);
}

void cross_entropy_total(const CrossEntropyArgs& args, void* total, const void* stat_losses, bool mean,
                         std::string_view op) {
  check_args(args, op);
  CONDENSE_CHECK(total != nullptr && (args.rows == 0 || stat_losses != nullptr), op,
                 "CUDA cross_entropy total without its operands");
  use_device(args.device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(args.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    detail::launch_kernel(cross_entropy_sum<T, A>, 1, total_threads, 0, stream_of(args.device), static_cast<T*>(total),
                          static_cast<const A*>(stat_losses), args.rows, mean, args.count);
  });
  check_launch(op);
}

void cross_entropy_backward(const CrossEntropyArgs& args, void* grad_logits, const void* grad_loss, bool per_row,
                            double grad_scale, std::string_view op) {
  check_args(args, op);
  if (args.rows == 0) return;
  CONDENSE_CHECK(grad_logits != nullptr && grad_loss != nullptr, op, "CUDA cross_entropy backward without its operands");
  use_device(args.device, op);
  const cudaStream_t stream = stream_of(args.device);
  const int threads = row_threads(args.classes);
  dispatch_types(args, op, [&](auto value_tag, auto target_tag) {
    using T = decltype(value_tag);
    using I = decltype(target_tag);
    using A = compute_t<T>;
    const auto keep = static_cast<A>(1.0 - args.label_smoothing);
    const auto spread = static_cast<A>(args.label_smoothing / static_cast<double>(args.classes));
    detail::launch_kernel(cross_entropy_grad<T, I, A>, row_blocks(args.rows), threads, 0, stream,
                          static_cast<T*>(grad_logits), static_cast<const T*>(args.logits),
                          static_cast<const I*>(args.targets), static_cast<const A*>(args.lse),
                          static_cast<const T*>(grad_loss), per_row, static_cast<A>(grad_scale), args.rows,
                          args.classes, args.ignore_index, keep, spread);
  });
  check_launch(op);
}

}  // namespace condense::cuda
