// Conversions: to(Device) (host <-> CUDA copies, any view) and cast<U>() between element
// types. Both are differentiable for float/double tensors.
#pragma once

#include <cstdint>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense {
namespace detail {

/// Copies a (possibly strided) tensor to `device` without recording.
template <Element T>
Tensor<T> copy_to_device(const Tensor<T>& t, Device device) {
  const std::size_t bytes = static_cast<std::size_t>(t.numel()) * sizeof(T);
  if (t.device().is_cpu()) {
    const Tensor<T> src = t.is_contiguous() ? t : Tensor<T>(t.detach()).contiguous();
    Tensor<T> out = Tensor<T>::empty(t.shape(), device);
    if (bytes) cuda::copy(out.data(), src.data(), bytes, cuda::CopyKind::HostToDevice, device.index, "to");
    return out;
  }
  if (device.is_cpu()) {
    if (t.is_contiguous()) {
      Tensor<T> out = Tensor<T>::empty(t.shape(), device);
      if (bytes) cuda::copy(out.data(), t.data(), bytes, cuda::CopyKind::DeviceToHost, t.device().index, "to");
      return out;
    }
    // A strided device view: made contiguous on the device first.
    const Tensor<T> dense = Tensor<T>::empty(t.shape(), t.device());
    cuda_copy_into("to", dense, t);
    return copy_to_device(dense, device);
  }
  return copy_to_device(copy_to_device(t, Device::cpu()), device);  // between two GPUs
}

}  // namespace detail

/// `t` on `device` (t itself when already there). Differentiable.
template <Element T>
Tensor<T> to(const Tensor<T>& t, Device device) {
  if (t.device() == device) return t;
  Tensor<T> out = detail::copy_to_device(t.detach(), device);
  if constexpr (DifferentiableElement<T>) {
    record<T>("to", out, {t}, [src = t.device()](const Tensor<T>& g, GradSink& s) { s.add(0, to(g, src)); });
  }
  return out;
}

/// Elementwise conversion to element type U. Differentiable between the floating types
/// (float, double, bfloat16, float16): the gradient is converted back.
// t: [...] -> [...]
template <Element U, Element T>
Tensor<U> cast(const Tensor<T>& t) {
  if constexpr (std::is_same_v<U, T>) {
    return t;
  } else {
    Tensor<U> out = Tensor<U>::empty(t.shape(), t.device());
    if (t.device().is_cuda()) {
      detail::cuda_copy_into("cast", out, t.detach());
    } else {
      const Tensor<T> src = t.detach().contiguous();
      const T* in = src.data();
      U* o = out.data();
      cpu::parallel_for(0, out.numel(), 65536, [&](std::int64_t i0, std::int64_t i1) {
        for (std::int64_t i = i0; i < i1; ++i) o[i] = convert_element<U>(in[i]);
      });
    }
    if constexpr (DifferentiableElement<T> && DifferentiableElement<U>) {
      record<U>("cast", out, {t}, [](const Tensor<U>& g, GradSink& s) { s.add(0, cast<T>(g)); });
    }
    return out;
  }
}

namespace detail {

/// A 16-bit tensor widened to float for through_float; an undefined tensor (an absent
/// optional argument) stays undefined.
template <HalfElement T>
Tensor<float> widen_to_float(const Tensor<T>& t) {
  return t.defined() ? cast<float>(t) : Tensor<float>();
}

/// `f`, an op on float tensors, applied to 16-bit tensors: each is widened to float, f runs
/// on them (recording its own backward rule) and the result is rounded once to T. Autograd
/// follows the casts, so the gradients are also computed in float and rounded once. The ops
/// without a direct 16-bit kernel take the 16-bit floats this way, on either device.
// t, more...: 16-bit tensors -> f's output rounded to T
template <class F, HalfElement T, class... More>
Tensor<T> through_float(F f, const Tensor<T>& t, const More&... more) {
  return cast<T>(f(widen_to_float(t), widen_to_float(more)...));
}

}  // namespace detail

template <Element T> Tensor<T> Tensor<T>::to(Device device) const { return condense::to(*this, device); }
template <Element T> template <Element U> Tensor<U> Tensor<T>::cast() const { return condense::cast<U>(*this); }

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
