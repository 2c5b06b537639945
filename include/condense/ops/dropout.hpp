// Inverted dropout: zeroes each element with probability p and scales the kept ones by
// 1 / (1 - p). The keep mask comes from a Generator: one 64-bit key is drawn per call and
// element i (row-major) is kept when splitmix64(key, i) lands above p, so a seed fixes the
// mask independently of the thread count. The mask is saved as a Tensor<bool> for backward.
// A CUDA tensor draws the same mask on its device (the bit generator is shared with the
// kernel, backend/cuda/optim_kernels.hpp), so a key gives equal masks on CPU and GPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/optim_kernels.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/random.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"

namespace condense {
namespace detail {

/// Dropout of a CUDA tensor with the mask of `key` (drawn on the device, saved as a
/// Tensor<bool> there for backward); `scale` is 1 / (1 - p) in the compute type (float for
/// 16-bit tensors, whose kept values are scaled in float and rounded once).
// x: [...] -> [...]
template <DifferentiableElement T>
Tensor<T> cuda_dropout(const Tensor<T>& x, std::uint64_t key, std::uint64_t threshold, compute_type_t<T> scale) {
  const Tensor<T> xd = x.detach();
  Tensor<bool> mask = Tensor<bool>::empty(x.shape(), x.device());
  Tensor<T> out = Tensor<T>::empty(x.shape(), x.device());
  const auto [out_arg, x_arg] = cuda_args("dropout", x.shape(), out, xd);
  cuda::dropout_forward(out_arg, mask.data(), x_arg, key, threshold, static_cast<double>(scale), "dropout");
  record<T>("dropout", out, {x}, [mask, scale](const Tensor<T>& grad, GradSink& s) {
    CONDENSE_CHECK(grad.device() == mask.device() && grad.shape() == mask.shape(), "dropout",
                   "backward got the gradient ", grad.describe(), " for a mask ", mask.describe());
    Tensor<T> dx = Tensor<T>::empty(grad.shape(), grad.device());
    const auto [dx_arg, grad_arg] = cuda_args("dropout", grad.shape(), dx, grad);
    cuda::dropout_backward(dx_arg, mask.data(), grad_arg, static_cast<double>(scale), "dropout");
    s.add(0, dx);
  });
  return out;
}

/// Checks dropout's arguments; true when dropout returns `x` itself (evaluation, or p == 0).
template <Element T>
bool dropout_returns_input(const Tensor<T>& x, double p, bool training) {
  CONDENSE_CHECK(x.defined(), "dropout", "undefined tensor argument");
  CONDENSE_CHECK(p >= 0.0 && p < 1.0, "dropout", "probability p must be in [0, 1), got ", p);
  return !training || p == 0.0;
}

}  // namespace detail

/// Inverted dropout: during training each element is zeroed with probability `p` (drawn
/// from `gen`; the same generator state gives the same mask) and the kept ones are scaled
/// by 1 / (1 - p). With p == 0 or `training` false, returns `x` itself. p must be in [0, 1).
// x: [...] -> [...]
template <FloatingElement T>
Tensor<T> dropout(const Tensor<T>& x, double p, Generator& gen, bool training = true) {
  if (detail::dropout_returns_input(x, p, training)) return x;
  const std::uint64_t key = gen.next_u64();
  const std::uint64_t threshold = detail::dropout_threshold(p);
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  if (x.device().is_cuda()) return detail::cuda_dropout(x, key, threshold, scale);
  detail::check_cpu("dropout", x);
  const Tensor<T> xc = x.detach().contiguous();
  Tensor<bool> mask = Tensor<bool>::empty(x.shape());
  Tensor<T> out = Tensor<T>::empty(x.shape());
  {
    const T* px = xc.data();
    auto* pm = reinterpret_cast<std::uint8_t*>(mask.data());  // bytes: GCC does not vectorise bool loads/stores
    T* po = out.data();
    cpu::parallel_for(0, out.numel(), detail::elementwise_grain, [=](std::int64_t i0, std::int64_t i1) {
      // Locals, not closure members (byte stores may alias the closure), and two loops per
      // block (GCC vectorises each alone, not the mix of 64-bit, 8-bit and T lanes).
      const std::uint64_t k = key, th = threshold;
      const T sc = scale;
      const T* xs = px;
      std::uint8_t* ms = pm;
      T* os = po;
      constexpr std::int64_t block = 4096;
      for (std::int64_t b0 = i0; b0 < i1; b0 += block) {
        const std::int64_t b1 = std::min(i1, b0 + block);
#pragma omp simd
        for (std::int64_t i = b0; i < b1; ++i)
          ms[i] = static_cast<std::uint8_t>(detail::dropout_keep(k, static_cast<std::uint64_t>(i), th));
#pragma omp simd
        for (std::int64_t i = b0; i < b1; ++i) os[i] = xs[i] * static_cast<T>(ms[i]) * sc;  // NaN stays NaN, as x * mask
      }
    });
  }
  record<T>("dropout", out, {x}, [mask, scale](const Tensor<T>& grad, GradSink& s) {
    const Tensor<T> g = grad.contiguous();
    Tensor<T> dx = Tensor<T>::empty(g.shape());
    const T* pg = g.data();
    const auto* pm = reinterpret_cast<const std::uint8_t*>(mask.data());
    T* pd = dx.data();
    cpu::parallel_for(0, dx.numel(), detail::elementwise_grain, [=](std::int64_t i0, std::int64_t i1) {
#pragma omp simd
      for (std::int64_t i = i0; i < i1; ++i) pd[i] = pg[i] * static_cast<T>(pm[i]) * scale;
    });
    s.add(0, dx);
  });
  return out;
}

/// dropout of a 16-bit tensor: the float op's mask for the same generator state, the kept
/// values scaled in float and rounded once. A CUDA tensor runs the dropout kernel on its
/// 16-bit values directly; the CPU goes through float (detail::through_float).
// x: [...] -> [...]
template <HalfElement T>
Tensor<T> dropout(const Tensor<T>& x, double p, Generator& gen, bool training = true) {
  if (detail::dropout_returns_input(x, p, training)) return x;
  if (x.device().is_cuda()) {
    const std::uint64_t key = gen.next_u64();
    return detail::cuda_dropout(x, key, detail::dropout_threshold(p), static_cast<float>(1.0 / (1.0 - p)));
  }
  return detail::through_float([&](const Tensor<float>& xf) { return dropout(xf, p, gen, training); }, x);
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
