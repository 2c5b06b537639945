// CUDA kernels of the optimizers and of gradient clipping: the fused AdamW and SGD updates
// of one contiguous parameter tensor (grid-stride loops, one thread per element, the CPU
// loop's formulas in the same order), the one-pass AdamW of 16-bit parameters through float
// master weights, and the sum of squares behind the global gradient norm (per-block partial
// sums in double, then one block adding the partials in a fixed order, so the result depends
// on n alone and never on timing).
#include <cstdint>
#include <string_view>

#include "condense/backend/cuda/optim_kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

constexpr int update_threads = 256;

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

/// AdamW on T parameters with T moments (compute_t<T> arithmetic).
template <class T>
__global__ void adamw_kernel(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, std::int64_t n,
                             AdamWScalars<compute_t<T>> s) {
  using C = compute_t<T>;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    C p = load(param + i);
    C m = load(exp_avg + i);
    C v = load(exp_avg_sq + i);
    adamw_update(p, load(grad + i), m, v, s);
    exp_avg[i] = to_element<T>(m);
    exp_avg_sq[i] = to_element<T>(v);
    param[i] = to_element<T>(p);
  }
}

/// AdamW of 16-bit parameters through float master weights, in one pass: the 16-bit gradient
/// widened, the float master and moments updated as adamw_kernel<float> would, and the
/// master rounded into the 16-bit parameter.
template <class T>
__global__ void adamw_master_kernel(T* param, const T* grad, float* master, float* exp_avg, float* exp_avg_sq,
                                    std::int64_t n, AdamWScalars<float> s) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float p = master[i];
    float m = exp_avg[i];
    float v = exp_avg_sq[i];
    adamw_update(p, load(grad + i), m, v, s);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    master[i] = p;
    param[i] = to_element<T>(p);
  }
}

/// SGDStepArgs converted to the compute type C.
template <class C>
struct SGDScalars {
  C lr, weight_decay, momentum, keep;
  bool decay, use_momentum, first, nesterov;
};

/// g += wd p; b = first ? g : momentum b + keep g; p -= lr (nesterov ? g + momentum b : b)
/// (p -= lr g without momentum).
template <class T>
__global__ void sgd_kernel(T* param, const T* grad, T* buffer, std::int64_t n, SGDScalars<compute_t<T>> s) {
  using C = compute_t<T>;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
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

// ---- sum of squares --------------------------------------------------------------------

constexpr int sum_threads = 256;
/// Most blocks of the first pass (the partials the second pass adds).
constexpr unsigned max_sum_blocks = 1024;

/// Tree sum of one double per thread of a sum_threads block; thread 0 gets the total.
__device__ __forceinline__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int width = sum_threads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  return shared[0];
}

/// partial[block] = sum of x[i]^2 over the block's grid-stride elements, in double.
template <class T>
__global__ void sum_of_squares_partial(const T* x, std::int64_t n, double* partial) {
  __shared__ double shared[sum_threads];
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  double acc = 0.0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = static_cast<double>(load(x + i));
    acc += v * v;
  }
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

/// *out = sum of the `count` partials (one block).
__global__ void sum_partials(const double* partial, int count, double* out) {
  __shared__ double shared[sum_threads];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += sum_threads) acc += partial[i];
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) *out = total;
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

void check_count(std::int64_t n, std::string_view op) { CONDENSE_CHECK(n >= 0, op, "negative element count ", n); }

}  // namespace

void adamw_step(DType dtype, int device, void* param, const void* grad, void* exp_avg, void* exp_avg_sq, std::int64_t n,
                const AdamWStepArgs& args, std::string_view op) {
  check_count(n, op);
  if (n == 0) return;
  use_device(device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    adamw_kernel<T><<<grid_for(n, update_threads), update_threads, 0, stream_of(device)>>>(
        static_cast<T*>(param), static_cast<const T*>(grad), static_cast<T*>(exp_avg), static_cast<T*>(exp_avg_sq), n,
        adamw_scalars<compute_t<T>>(args));
  });
  check_launch(op);
}

void adamw_master_step(DType dtype, int device, void* param, const void* grad, float* master, float* exp_avg,
                       float* exp_avg_sq, std::int64_t n, const AdamWStepArgs& args, std::string_view op) {
  check_count(n, op);
  CONDENSE_CHECK(dtype == DType::BFloat16 || dtype == DType::Float16, op,
                 "the master-weight AdamW step takes bfloat16 or float16 parameters, got ", dtype_name(dtype));
  if (n == 0) return;
  use_device(device, op);
  dispatch_dtype<::condense::bfloat16, ::condense::float16>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    adamw_master_kernel<T><<<grid_for(n, update_threads), update_threads, 0, stream_of(device)>>>(
        static_cast<T*>(param), static_cast<const T*>(grad), master, exp_avg, exp_avg_sq, n,
        adamw_scalars<float>(args));
  });
  check_launch(op);
}

void sgd_step(DType dtype, int device, void* param, const void* grad, void* momentum_buffer, std::int64_t n,
              const SGDStepArgs& args, std::string_view op) {
  check_count(n, op);
  CONDENSE_CHECK(!args.use_momentum || momentum_buffer != nullptr || n == 0, op, "SGD with momentum needs a buffer");
  if (n == 0) return;
  use_device(device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const SGDScalars<C> s{static_cast<C>(args.lr), static_cast<C>(args.weight_decay), static_cast<C>(args.momentum),
                          static_cast<C>(args.keep), args.decay, args.use_momentum, args.first, args.nesterov};
    sgd_kernel<T><<<grid_for(n, update_threads), update_threads, 0, stream_of(device)>>>(
        static_cast<T*>(param), static_cast<const T*>(grad), static_cast<T*>(momentum_buffer), n, s);
  });
  check_launch(op);
}

void sum_of_squares(DType dtype, int device, const void* x, std::int64_t n, double* out, std::string_view op) {
  check_count(n, op);
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  const unsigned blocks = grid_for(n, sum_threads) < max_sum_blocks ? grid_for(n, sum_threads) : max_sum_blocks;
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x);
    if (blocks == 1) {
      sum_of_squares_partial<T><<<1, sum_threads, 0, stream>>>(in, n, out);
      check_launch(op);
      return;
    }
    const DeviceScratch partial(blocks * sizeof(double), device, op);
    double* partials = static_cast<double*>(partial.get());
    sum_of_squares_partial<T><<<blocks, sum_threads, 0, stream>>>(in, n, partials);
    check_launch(op);
    sum_partials<<<1, sum_threads, 0, stream>>>(partials, static_cast<int>(blocks), out);
    check_launch(op);
  });
}

}  // namespace condense::cuda
