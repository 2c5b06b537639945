// The kernels of optim.cu (which launches them; tests/emulation runs them on the CPU):
// multi-tensor AdamW (also through float master weights for 16-bit parameters) and SGD
// updates, the per-chunk sums of squares behind the gradient norm and their per-tensor
// sums, and the scaling of gradient lists; with the plans that pack tensors into launches
// (detail/tensor_list.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "condense/backend/cuda/optim_kernels.hpp"
#include "detail/common.cuh"
#include "detail/tensor_list.cuh"

namespace condense::cuda::optim_detail {

using namespace condense::cuda::detail;

/// AdamWStepArgs converted to the compute type C.
template <class C>
struct AdamWScalars {
  bool apply_decay;
  C decay, step_size, bias2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps;
};

/// One element's AdamW update in the compute type C:
/// p *= decay; m += (1 - b1) (g - m); v = b2 v + (1 - b2) g^2; p -= step (m / (sqrt(v) / sqrt(bias2) + eps)).
/// Shared by both kernels below, so the fused master-weight update does float AdamW's arithmetic.
template <class C>
__device__ __forceinline__ void adamw_update(C& p, C g, C& m, C& v, const AdamWScalars<C>& s) {
  if (s.apply_decay) p *= s.decay;
  m += s.one_minus_beta1 * (g - m);
  v = s.beta2 * v + s.one_minus_beta2 * (g * g);
  p -= s.step_size * (m / (d_sqrt(v) / s.bias2_sqrt + s.eps));
}

/// One parameter tensor of a multi-tensor AdamW launch, with its update's scalars.
template <class C>
struct AdamWSlot {
  void* param;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  float* master;
  std::int64_t n;
  AdamWScalars<C> s;
};

/// Tensors and blocks per AdamW launch: 2048 blocks of 256 threads fill a large GPU.
constexpr int adamw_list_tensors = 64, adamw_list_blocks = 2048;
template <class C>
using AdamWLaunch = ListLaunch<adamw_list_tensors, adamw_list_blocks, AdamWSlot<C>>;
static_assert(sizeof(AdamWLaunch<double>) <= max_list_parameter_bytes, "kernel parameters too large");

/// AdamW on each block's chunk of a T parameter with T moments (compute_t<T> arithmetic);
/// with Master, on 16-bit parameters through float master weights and moments: the 16-bit
/// gradient widened, the float master and moments updated as the float kernel would, and the
/// master rounded into the parameter.
template <class T, bool Master>
__global__ void __launch_bounds__(list_threads) adamw_list_kernel(AdamWLaunch<compute_t<T>> batch) {
  using C = compute_t<T>;
  using State = std::conditional_t<Master, float, T>;
  const AdamWSlot<C>& t = batch.tensor[batch.tensor_of[blockIdx.x]];
  const std::int32_t chunk = batch.chunk_of[blockIdx.x];
  T* param = static_cast<T*>(t.param);
  const T* grad = static_cast<const T*>(t.grad);
  State* exp_avg = static_cast<State*>(t.exp_avg);
  State* exp_avg_sq = static_cast<State*>(t.exp_avg_sq);
  for (std::int64_t i = chunk_begin(chunk) + threadIdx.x; i < chunk_end(chunk, t.n); i += blockDim.x) {
    C p = Master ? static_cast<C>(t.master[i]) : static_cast<C>(load(param + i));
    C m = static_cast<C>(load(exp_avg + i));
    C v = static_cast<C>(load(exp_avg_sq + i));
    adamw_update(p, static_cast<C>(load(grad + i)), m, v, t.s);
    exp_avg[i] = to_element<State>(m);
    exp_avg_sq[i] = to_element<State>(v);
    if constexpr (Master) t.master[i] = p;
    param[i] = to_element<T>(p);
  }
}

/// SGDStepArgs converted to the compute type C.
template <class C>
struct SGDScalars {
  C lr, weight_decay, momentum, keep;
  bool decay, use_momentum, first, nesterov;
};

/// One parameter tensor of a multi-tensor SGD launch, with its update's scalars.
template <class C>
struct SGDSlot {
  void* param;
  const void* grad;
  void* buffer;
  std::int64_t n;
  SGDScalars<C> s;
};
constexpr int sgd_list_tensors = 64, sgd_list_blocks = 2048;
template <class C>
using SGDLaunch = ListLaunch<sgd_list_tensors, sgd_list_blocks, SGDSlot<C>>;
static_assert(sizeof(SGDLaunch<double>) <= max_list_parameter_bytes, "kernel parameters too large");

/// On each block's chunk of a parameter: g += wd p; b = first ? g : momentum b + keep g;
/// p -= lr (nesterov ? g + momentum b : b) (p -= lr g without momentum).
template <class T>
__global__ void __launch_bounds__(list_threads) sgd_list_kernel(SGDLaunch<compute_t<T>> batch) {
  using C = compute_t<T>;
  const SGDSlot<C>& t = batch.tensor[batch.tensor_of[blockIdx.x]];
  const SGDScalars<C>& s = t.s;
  const std::int32_t chunk = batch.chunk_of[blockIdx.x];
  T* param = static_cast<T*>(t.param);
  const T* grad = static_cast<const T*>(t.grad);
  T* buffer = static_cast<T*>(t.buffer);
  for (std::int64_t i = chunk_begin(chunk) + threadIdx.x; i < chunk_end(chunk, t.n); i += blockDim.x) {
    C p = load(param + i);
    C g = load(grad + i);
    if (s.decay) g = g + s.weight_decay * p;
    if (!s.use_momentum) {
      p -= s.lr * g;
    } else {
      const C b = s.first ? g : s.momentum * load(buffer + i) + s.keep * g;
      buffer[i] = to_element<T>(b);
      if (s.nesterov) {
        p -= s.lr * (g + s.momentum * b);
      } else {
        p -= s.lr * b;
      }
    }
    param[i] = to_element<T>(p);
  }
}

// ---- sum of squares and scaling of gradient lists ------------------------------------

/// One tensor of a sum-of-squares launch: its partials start at partial[first_partial].
struct SquaresSlot {
  const void* x;
  std::int64_t n;
  std::int64_t first_partial;
};
constexpr int squares_list_tensors = 128, squares_list_blocks = 2048;
using SquaresLaunch = ListLaunch<squares_list_tensors, squares_list_blocks, SquaresSlot>;
static_assert(sizeof(SquaresLaunch) <= max_list_parameter_bytes, "kernel parameters too large");

/// Tree sum of one double per thread of a list_threads block; thread 0 gets the total.
__device__ __forceinline__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int width = list_threads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  return shared[0];
}

/// partial[first_partial + chunk] = the sum of x[i]^2 over the block's chunk, in double.
template <class T>
__global__ void __launch_bounds__(list_threads) sum_of_squares_chunks(SquaresLaunch batch, double* partial) {
  __shared__ double shared[list_threads];
  const SquaresSlot& t = batch.tensor[batch.tensor_of[blockIdx.x]];
  const std::int32_t chunk = batch.chunk_of[blockIdx.x];
  const T* x = static_cast<const T*>(t.x);
  double acc = 0.0;
  for (std::int64_t i = chunk_begin(chunk) + threadIdx.x; i < chunk_end(chunk, t.n); i += blockDim.x) {
    const double v = static_cast<double>(load(x + i));
    acc += v * v;
  }
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[t.first_partial + chunk] = total;
}

/// Tensors per launch of sum_tensor_partials.
constexpr int partial_sums_per_launch = 128;

/// Where each tensor's partials are, for one launch of sum_tensor_partials.
struct PartialRanges {
  std::int64_t first[partial_sums_per_launch];
  std::int32_t count[partial_sums_per_launch];
};

/// out[blockIdx.x] = the sum of tensor blockIdx.x's partials, in order (one block each).
__global__ void __launch_bounds__(list_threads) sum_tensor_partials(const double* partial, PartialRanges ranges, double* out) {
  __shared__ double shared[list_threads];
  const double* p = partial + ranges.first[blockIdx.x];
  double acc = 0.0;
  for (int i = threadIdx.x; i < ranges.count[blockIdx.x]; i += blockDim.x) acc += p[i];
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

/// One tensor of a scaling launch: dst = src * coef over n elements.
struct ScaleSlot {
  void* dst;
  const void* src;
  std::int64_t n;
};
constexpr int scale_list_tensors = 128, scale_list_blocks = 2048;
using ScaleLaunch = ListLaunch<scale_list_tensors, scale_list_blocks, ScaleSlot>;
static_assert(sizeof(ScaleLaunch) <= max_list_parameter_bytes, "kernel parameters too large");

/// dst = src * coef over each block's chunk, in compute_t<T> (as the MulScalar map).
template <class T>
__global__ void __launch_bounds__(list_threads) scale_chunks(ScaleLaunch batch, compute_t<T> coef) {
  const ScaleSlot& t = batch.tensor[batch.tensor_of[blockIdx.x]];
  const std::int32_t chunk = batch.chunk_of[blockIdx.x];
  T* dst = static_cast<T*>(t.dst);
  const T* src = static_cast<const T*>(t.src);
  for (std::int64_t i = chunk_begin(chunk) + threadIdx.x; i < chunk_end(chunk, t.n); i += blockDim.x) dst[i] = to_element<T>(load(src + i) * coef);
}

/// The host scalars of one AdamW update converted to the compute type C (as the CPU loop
/// converts them to T).
template <class C>
AdamWScalars<C> adamw_scalars(const AdamWStepArgs& args) {
  return {static_cast<C>(args.decay) != C(1),  static_cast<C>(args.decay),
          static_cast<C>(args.step_size),      static_cast<C>(args.bias2_sqrt),
          static_cast<C>(args.one_minus_beta1), static_cast<C>(args.beta2),
          static_cast<C>(args.one_minus_beta2), static_cast<C>(args.eps)};
}

// ---- launch plans: the slots and blocks of each multi-tensor launch --------------------

/// Calls launch(batch, blocks) for each multi-tensor AdamW launch over `entries`.
template <class T, class Launch>
void for_each_adamw_launch(const AdamWListEntry* entries, std::size_t count, Launch launch) {
  using C = compute_t<T>;
  for_each_list_launch<adamw_list_tensors, adamw_list_blocks, AdamWSlot<C>>(
      count, [&](std::size_t i) { return entries[i].n; },
      [&](std::size_t i, AdamWSlot<C>& slot) {
        const AdamWListEntry& e = entries[i];
        slot = {e.param, e.grad, e.exp_avg, e.exp_avg_sq, e.master, e.n, adamw_scalars<C>(e.args)};
      },
      launch);
}

/// Calls launch(batch, blocks) for each multi-tensor SGD launch over `entries`.
template <class T, class Launch>
void for_each_sgd_launch(const SGDListEntry* entries, std::size_t count, Launch launch) {
  using C = compute_t<T>;
  for_each_list_launch<sgd_list_tensors, sgd_list_blocks, SGDSlot<C>>(
      count, [&](std::size_t i) { return entries[i].n; },
      [&](std::size_t i, SGDSlot<C>& slot) {
        const SGDListEntry& e = entries[i];
        const SGDStepArgs& a = e.args;
        slot = {e.param, e.grad, e.momentum_buffer, e.n,
                SGDScalars<C>{static_cast<C>(a.lr), static_cast<C>(a.weight_decay), static_cast<C>(a.momentum),
                              static_cast<C>(a.keep), a.decay, a.use_momentum, a.first, a.nesterov}};
      },
      launch);
}

/// Where each tensor's sum-of-squares partials go: first[i] (an empty tensor has none; its
/// sum is 0); returns the partials in all.
inline std::int64_t partial_layout(const std::int64_t* ns, std::size_t count, std::vector<std::int64_t>& first) {
  first.resize(count);
  std::int64_t at = 0;
  for (std::size_t i = 0; i < count; ++i) {
    first[i] = at;
    at += list_chunks(ns[i]);
  }
  return at;
}

/// Calls launch(batch, blocks) for each launch of sum_of_squares_chunks.
template <class Launch>
void for_each_squares_launch(const void* const* xs, const std::int64_t* ns, std::size_t count,
                             const std::vector<std::int64_t>& first, Launch launch) {
  for_each_list_launch<squares_list_tensors, squares_list_blocks, SquaresSlot>(
      count, [&](std::size_t i) { return ns[i]; }, [&](std::size_t i, SquaresSlot& slot) { slot = {xs[i], ns[i], first[i]}; },
      launch);
}

/// Calls launch(ranges, tensors, begin) for each launch of sum_tensor_partials (tensors
/// begin .. begin + tensors - 1, one block each).
template <class Launch>
void for_each_partial_sums_launch(const std::int64_t* ns, std::size_t count, const std::vector<std::int64_t>& first,
                                  Launch launch) {
  for (std::size_t begin = 0; begin < count; begin += partial_sums_per_launch) {
    const std::size_t tensors = count - begin < partial_sums_per_launch ? count - begin : partial_sums_per_launch;
    PartialRanges ranges{};
    for (std::size_t j = 0; j < tensors; ++j) {
      ranges.first[j] = first[begin + j];
      ranges.count[j] = static_cast<std::int32_t>(list_chunks(ns[begin + j]));
    }
    launch(ranges, tensors, begin);
  }
}

/// Calls launch(batch, blocks) for each launch of scale_chunks.
template <class Launch>
void for_each_scale_launch(void* const* dsts, const void* const* srcs, const std::int64_t* ns, std::size_t count, Launch launch) {
  for_each_list_launch<scale_list_tensors, scale_list_blocks, ScaleSlot>(
      count, [&](std::size_t i) { return ns[i]; }, [&](std::size_t i, ScaleSlot& slot) { slot = {dsts[i], srcs[i], ns[i]}; },
      launch);
}

}  // namespace condense::cuda::optim_detail
