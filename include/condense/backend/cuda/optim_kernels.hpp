// The CUDA launchers of the optimizers, of gradient clipping and of dropout: fused AdamW
// and SGD updates over a list of contiguous parameter tensors (AdamW also through float
// master weights), a deterministic sum of squares in double of each tensor
// of a list (the global gradient norm) and the scaling of a list of tensors (clipping), and
// the dropout mask / scale forward and backward. The list launchers queue a few kernels for
// all the tensors instead of one or two per tensor. Plain C++ declarations on raw device
// pointers: the definitions live in kernels/optim.cu and kernels/dropout.cu; in a build
// without CUDA each launcher throws condense::Error naming the op. Also holds the dropout bit
// generator (splitmix64 of key and element index), shared by the CPU loop of
// ops/dropout.hpp and the CUDA kernel so both draw the same mask.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "condense/backend/cuda/kernels.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/config.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"

namespace condense::detail {

/// 64 random bits for element `i` under `key` (the splitmix64 output function); host and device.
CONDENSE_HD inline std::uint64_t dropout_bits(std::uint64_t key, std::uint64_t i) {
  std::uint64_t z = key + (i + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// Whether dropout keeps element `i` under `key`: its 53-bit uniform is at or above
/// `threshold` (from dropout_threshold); host and device.
CONDENSE_HD inline bool dropout_keep(std::uint64_t key, std::uint64_t i, std::uint64_t threshold) {
  return (dropout_bits(key, i) >> 11) >= threshold;
}

/// Integer threshold on 53-bit uniforms u: u * 2^-53 < p  <=>  u < ceil(p * 2^53).
inline std::uint64_t dropout_threshold(double p) { return static_cast<std::uint64_t>(std::ceil(std::ldexp(p, 53))); }

}  // namespace condense::detail

namespace condense::cuda {

/// The host-side scalars of one AdamW update of a parameter tensor (see optim/adamw.hpp);
/// the kernel converts each to the compute type, as the CPU loop converts them to T.
struct AdamWStepArgs {
  double decay = 1;            ///< p *= decay first (1: no decay), 1 - lr * weight_decay
  double step_size = 0;        ///< lr / (1 - beta1^t)
  double bias2_sqrt = 1;       ///< sqrt(1 - beta2^t)
  double one_minus_beta1 = 0;  ///< 1 - beta1
  double beta2 = 0;            ///< beta2
  double one_minus_beta2 = 0;  ///< 1 - beta2
  double eps = 0;              ///< added to the denominator
};

/// One parameter tensor of a multi-tensor AdamW update: `n` contiguous elements of param,
/// grad and the moments on one device (the moments and `master` in float for
/// adamw_master_step_list), and the scalars of its update.
struct AdamWListEntry {
  void* param = nullptr;
  const void* grad = nullptr;
  void* exp_avg = nullptr;
  void* exp_avg_sq = nullptr;
  float* master = nullptr;  ///< float master weights (adamw_master_step_list only)
  std::int64_t n = 0;
  AdamWStepArgs args;
};

/// The host-side scalars and switches of one SGD update of a parameter tensor (see
/// optim/sgd.hpp).
struct SGDStepArgs {
  double lr = 0;              ///< learning rate
  double weight_decay = 0;    ///< L2 penalty: g += weight_decay * p (when `decay`)
  double momentum = 0;        ///< momentum factor (when `use_momentum`)
  double keep = 1;            ///< 1 - dampening
  bool decay = false;         ///< weight_decay != 0
  bool use_momentum = false;  ///< momentum != 0: the buffer exists and is updated
  bool first = false;         ///< the parameter's first update: the buffer is set to g
  bool nesterov = false;      ///< p -= lr * (g + momentum * b) instead of lr * b
};

/// One parameter tensor of a multi-tensor SGD update: `n` contiguous elements of param, grad
/// and (with momentum) the momentum buffer on one device, and the switches of its update.
struct SGDListEntry {
  void* param = nullptr;
  const void* grad = nullptr;
  void* momentum_buffer = nullptr;  ///< null without momentum
  std::int64_t n = 0;
  SGDStepArgs args;
};

#if CONDENSE_WITH_CUDA
/// One fused AdamW update of each of `count` parameter tensors of element type `dtype` on
/// `device` (param, exp_avg and exp_avg_sq updated in place from grad), in a few launches for
/// all of them. Float and double; the 16-bit types compute in float.
void adamw_step_list(DType dtype, int device, const AdamWListEntry* entries, std::size_t count, std::string_view op);
/// adamw_step_list for 16-bit parameters (`dtype` bfloat16 or float16) through float master
/// weights: grad is widened, master, exp_avg and exp_avg_sq (float) are updated as the float
/// update does, and param becomes the master rounded, in one pass.
void adamw_master_step_list(DType dtype, int device, const AdamWListEntry* entries, std::size_t count,
                            std::string_view op);
/// One fused SGD update of each of `count` parameter tensors: param (and momentum_buffer,
/// which may be null when args.use_momentum is false) updated in place from grad, in a few
/// launches for all of them.
void sgd_step_list(DType dtype, int device, const SGDListEntry* entries, std::size_t count, std::string_view op);
/// out[i] (device memory, `count` doubles) = the sum of xs[i][k]^2 over the ns[i] contiguous
/// elements of tensor i, accumulated in double in an order fixed by ns[i] alone (the same
/// bits on every run), for all the tensors in a few launches.
void sum_of_squares_list(DType dtype, int device, const void* const* xs, const std::int64_t* ns, std::size_t count,
                         double* out, std::string_view op);
/// dsts[i][k] = srcs[i][k] * coef over the ns[i] contiguous elements of each of `count` tensors,
/// with coef in the compute type (float for float and the 16-bit types), in a few launches.
void scale_list(DType dtype, int device, void* const* dsts, const void* const* srcs, const std::int64_t* ns,
                std::size_t count, double coef, std::string_view op);
/// Dropout forward: for the row-major index i of `x` (any view of out's sizes),
/// mask[i] = dropout_keep(key, i, threshold) and out[i] = x[i] * mask[i] * scale. `out` is
/// contiguous and `mask` a contiguous array of out.numel() bools, both on out's device.
void dropout_forward(const StridedArg& out, void* mask, const StridedArg& x, std::uint64_t key, std::uint64_t threshold,
                     double scale, std::string_view op);
/// Dropout backward: grad_in[i] = grad_out[i] * mask[i] * scale; grad_in contiguous,
/// grad_out any view of its sizes, mask the forward's.
void dropout_backward(const StridedArg& grad_in, const void* mask, const StridedArg& grad_out, double scale,
                      std::string_view op);
#else
inline void adamw_step_list(DType, int, const AdamWListEntry*, std::size_t, std::string_view op) { throw_no_cuda(op); }
inline void adamw_master_step_list(DType, int, const AdamWListEntry*, std::size_t, std::string_view op) {
  throw_no_cuda(op);
}
inline void sgd_step_list(DType, int, const SGDListEntry*, std::size_t, std::string_view op) { throw_no_cuda(op); }
inline void sum_of_squares_list(DType, int, const void* const*, const std::int64_t*, std::size_t, double*,
                                std::string_view op) {
  throw_no_cuda(op);
}
inline void scale_list(DType, int, void* const*, const void* const*, const std::int64_t*, std::size_t, double,
                       std::string_view op) {
  throw_no_cuda(op);
}
inline void dropout_forward(const StridedArg&, void*, const StridedArg&, std::uint64_t, std::uint64_t, double,
                            std::string_view op) {
  throw_no_cuda(op);
}
inline void dropout_backward(const StridedArg&, const void*, const StridedArg&, double, std::string_view op) {
  throw_no_cuda(op);
}
#endif

}  // namespace condense::cuda
