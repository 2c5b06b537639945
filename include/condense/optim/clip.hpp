// Gradient clipping by global norm: grad_norm (the L2 norm of all gradients together,
// accumulated in double) and clip_grad_norm, which rescales the gradients when that norm
// exceeds a bound, as torch.nn.utils.clip_grad_norm_ does. Gradients on a CUDA device are
// reduced and scaled on that device, a few multi-tensor launches for all of them; only one
// double per gradient comes back to the host.
// 16-bit gradients are summed in double and scaled in float (one rounding).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "condense/autograd/grad_mode.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/optim_kernels.hpp"
#include "condense/core/error.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/elementwise.hpp"
#include "condense/optim/optimizer.hpp"

namespace condense::optim {

/// Added to the norm in the clipping factor max_norm / (norm + clip_epsilon), as in PyTorch.
inline constexpr double clip_epsilon = 1e-6;

namespace detail {

/// Sum of squares, in double, of the defined gradients of `params`; also reports the index
/// (in `params`) of the first gradient whose own sum is not finite, or -1. Each gradient is
/// reduced on its own device (CPU or CUDA); the per-gradient sums are added on the host in
/// the parameters' order.
template <DifferentiableElement T>
double grad_sum_of_squares(std::string_view op, const NamedTensors<T>& params, std::int64_t* first_bad) {
  std::vector<Tensor<T>> grads;
  std::vector<std::size_t> owners;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    CONDENSE_CHECK(p.defined(), op, "parameter '", name, "' is an undefined tensor");
    Tensor<T> g = p.grad();
    if (!g.defined()) continue;
    grads.push_back(g.is_contiguous() ? g : g.contiguous());
    owners.push_back(i);
  }
  std::vector<double> per_grad(grads.size(), 0.0);
  // CUDA gradients: the sums of every gradient of a device in a few launches, into a double
  // array read back once.
  std::map<int, std::vector<std::size_t>> on_device;
  for (std::size_t s = 0; s < grads.size(); ++s)
    if (grads[s].device().is_cuda()) on_device[grads[s].device().index].push_back(s);
  for (const auto& [device, slots] : on_device) {
    const Tensor<double> sums =
        Tensor<double>::empty(Shape{static_cast<std::int64_t>(slots.size())}, Device::cuda(device));
    std::vector<const void*> data;
    std::vector<std::int64_t> counts;
    for (const std::size_t slot : slots) {
      data.push_back(grads[slot].data());
      counts.push_back(grads[slot].numel());
    }
    cuda::sum_of_squares_list(dtype_of<T>, device, data.data(), counts.data(), slots.size(), sums.data(), op);
    const std::vector<double> host = sums.to_vector();
    for (std::size_t j = 0; j < slots.size(); ++j) per_grad[slots[j]] = host[j];
  }
  std::vector<UpdateChunk> chunks;
  for (std::size_t s = 0; s < grads.size(); ++s) {
    if (!grads[s].device().is_cpu()) continue;
    for (std::int64_t b = 0; b < grads[s].numel(); b += update_chunk)
      chunks.push_back({s, b, std::min(grads[s].numel(), b + update_chunk)});
  }
  std::vector<double> partial(chunks.size(), 0.0);
  cpu::parallel_for(0, static_cast<std::int64_t>(chunks.size()), 4, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      const auto& ch = chunks[c];
      const T* g = grads[ch.slot].data();
      double acc = 0.0;
      // A SIMD reduction (the lane order is fixed at compile time, so results are repeatable).
#pragma omp simd reduction(+ : acc)
      for (std::int64_t i = ch.begin; i < ch.end; ++i) {
        const double x = convert_element<double>(g[i]);
        acc += x * x;
      }
      partial[c] = acc;
    }
  });
  // Fixed summation order: the result does not depend on the number of threads.
  double total = 0.0;
  for (std::size_t c = 0; c < chunks.size(); ++c) per_grad[chunks[c].slot] += partial[c];
  *first_bad = -1;
  for (std::size_t s = 0; s < grads.size(); ++s) {
    if (*first_bad < 0 && !std::isfinite(per_grad[s])) *first_bad = static_cast<std::int64_t>(owners[s]);
    total += per_grad[s];
  }
  return total;
}

/// A new CPU tensor g * coef for a CPU gradient g (g is never scaled in place; CUDA gradients
/// go through cuda::scale_list). 16-bit gradients are multiplied in float and rounded once.
template <DifferentiableElement T>
Tensor<T> scaled_gradient(const Tensor<T>& g, double coef) {
  if constexpr (HalfElement<T>) {
    return mul(g, static_cast<float>(coef));
  } else {
    const T c = static_cast<T>(coef);
    const Tensor<T> src_tensor = g.is_contiguous() ? g : g.contiguous();
    Tensor<T> scaled = Tensor<T>::empty(g.shape());
    const T* src = src_tensor.data();
    T* dst = scaled.data();
    cpu::parallel_for(0, g.numel(), 65536, [&](std::int64_t i0, std::int64_t i1) {
      using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
      Eigen::Map<Arr>(dst + i0, i1 - i0) = Eigen::Map<const Arr>(src + i0, i1 - i0) * c;
    });
    return scaled;
  }
}

/// Names tensors "0", "1", ... for the unnamed overloads.
template <DifferentiableElement T>
NamedTensors<T> index_named(const std::vector<Tensor<T>>& params) {
  NamedTensors<T> out;
  out.reserve(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) out.emplace_back("#" + std::to_string(i), params[i]);
  return out;
}

}  // namespace detail

/// The global L2 norm sqrt(sum over all gradients of sum g^2), accumulated in double, over the
/// parameters that have a gradient (others are skipped; no gradient at all gives 0).
template <DifferentiableElement T>
double grad_norm(const NamedTensors<T>& params) {
  std::int64_t bad = -1;
  return std::sqrt(detail::grad_sum_of_squares<T>("grad_norm", params, &bad));
}

/// grad_norm over unnamed tensors.
template <DifferentiableElement T>
double grad_norm(const std::vector<Tensor<T>>& params) {
  return grad_norm<T>(detail::index_named(params));
}

/// Clips the gradients to a global L2 norm of at most `max_norm` and returns the norm before
/// clipping. When norm > max_norm every gradient g is replaced (through set_grad) by a new
/// tensor g * max_norm / (norm + 1e-6); gradients are never scaled in place, since a stored
/// gradient may share memory with other tensors. Parameters without a gradient are skipped.
///
/// A non-finite norm (a NaN or infinite gradient value, or an overflow of the sum of squares)
/// leaves every gradient unchanged and is returned as it is, so the caller can skip the step
/// (`if (!std::isfinite(norm)) { opt.zero_grad(); continue; }`); with `error_if_nonfinite` it
/// throws instead, naming the first parameter whose gradient's sum of squares is not finite.
/// `max_norm` must be >= 0 (infinity: measure only, never clip). A gradient on a CUDA device is
/// measured and scaled there (the new gradient stays on its device).
template <DifferentiableElement T>
double clip_grad_norm(const NamedTensors<T>& params, double max_norm, bool error_if_nonfinite = false) {
  CONDENSE_CHECK(max_norm >= 0.0, "clip_grad_norm", "max_norm must be >= 0, got ", max_norm);
  std::int64_t bad = -1;
  const double norm = std::sqrt(detail::grad_sum_of_squares<T>("clip_grad_norm", params, &bad));
  if (!std::isfinite(norm)) {
    CONDENSE_CHECK(!error_if_nonfinite, "clip_grad_norm", "the total gradient norm is ", norm,
                   bad >= 0 ? "; first gradient with a non-finite sum of squares: '" +
                                  params[static_cast<std::size_t>(bad)].first + "'"
                            : std::string("; the sum of squares overflowed"));
    return norm;
  }
  const double coef = max_norm / (norm + clip_epsilon);
  if (coef >= 1.0) return norm;
  NoGradGuard no_grad;
  // CUDA gradients: scaled into new tensors, per device in a few launches for all of them.
  std::map<int, std::vector<std::pair<const Tensor<T>*, Tensor<T>>>> on_device;
  for (const auto& [name, p] : params) {
    const Tensor<T> g = p.grad();
    if (!g.defined()) continue;
    if (g.device().is_cuda()) {
      on_device[g.device().index].emplace_back(&p, g.is_contiguous() ? g : g.contiguous());
    } else {
      p.set_grad(detail::scaled_gradient(g, coef));
    }
  }
  for (const auto& [device, grads] : on_device) {
    std::vector<Tensor<T>> scaled;
    std::vector<void*> dsts;
    std::vector<const void*> srcs;
    std::vector<std::int64_t> counts;
    for (const auto& [param, g] : grads) {
      scaled.push_back(Tensor<T>::empty(g.shape(), g.device()));
      dsts.push_back(scaled.back().data());
      srcs.push_back(g.data());
      counts.push_back(g.numel());
    }
    cuda::scale_list(dtype_of<T>, device, dsts.data(), srcs.data(), counts.data(), grads.size(), coef, "clip_grad_norm");
    for (std::size_t j = 0; j < grads.size(); ++j) grads[j].first->set_grad(scaled[j]);
  }
  return norm;
}

/// clip_grad_norm over unnamed tensors (errors name them "#0", "#1", ... by position).
template <DifferentiableElement T>
double clip_grad_norm(const std::vector<Tensor<T>>& params, double max_norm, bool error_if_nonfinite = false) {
  return clip_grad_norm<T>(detail::index_named(params), max_norm, error_if_nonfinite);
}

}  // namespace condense::optim

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
