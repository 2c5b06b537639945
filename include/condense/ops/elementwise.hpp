// Elementwise arithmetic with NumPy broadcasting: add, sub, mul, div (tensor-tensor and
// tensor-scalar), neg, and the C++ operators. Also the shared CPU loops (unary_map,
// binary_map) that other elementwise ops build on: a contiguous fast path and a strided
// broadcast path, both split across threads.
#pragma once

#include <cstdint>
#include <string_view>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cpu/strided.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/reduce.hpp"

namespace condense {
namespace detail {

/// Elements per thread chunk for cheap elementwise loops.
inline constexpr std::int64_t elementwise_grain = 1 << 15;

/// Checks that an elementwise op can run on `t` (CPU kernels in this build).
template <Element T>
void check_cpu(std::string_view op, const Tensor<T>& t) {
  CONDENSE_CHECK(t.defined(), op, "undefined tensor argument");
  CONDENSE_CHECK(t.device().is_cpu(), op, "no CUDA kernel for ", t.describe(), " yet; move the tensor to the CPU");
}

/// Checks that two tensors share a device.
template <Element A, Element B>
void check_same_device(std::string_view op, const Tensor<A>& a, const Tensor<B>& b) {
  CONDENSE_CHECK(a.device() == b.device(), op, "tensors on different devices: ", a.describe(), " and ", b.describe());
}

/// out[i] = f(a[i]) into a new contiguous tensor. `f` is called with T and returns T.
template <Element T, class F>
Tensor<T> unary_map(std::string_view op, const Tensor<T>& a, F f) {
  check_cpu(op, a);
  Tensor<T> out = Tensor<T>::empty(a.shape(), a.device());
  T* o = out.data();
  if (a.is_contiguous()) {
    const T* x = a.data();
    cpu::parallel_for(0, a.numel(), elementwise_grain, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) o[i] = f(x[i]);
    });
    return out;
  }
  cpu::StridedLayout<2> layout(a.shape(), {&out.strides(), &a.strides()});
  const T* x = a.data();
  cpu::for_each_row(layout, [&](const std::array<std::int64_t, 2>& off, std::int64_t n, const std::array<std::int64_t, 2>& st) {
    for (std::int64_t i = 0; i < n; ++i) o[off[0] + i] = f(x[off[1] + i * st[1]]);
  });
  return out;
}

/// out = f(a, b) with broadcasting into a new contiguous tensor. `f(T, T) -> R`.
template <Element R, Element T, class F>
Tensor<R> binary_map(std::string_view op, const Tensor<T>& a, const Tensor<T>& b, F f) {
  check_cpu(op, a);
  check_cpu(op, b);
  const Shape shape = broadcast_shapes(op, a.shape(), b.shape());
  Tensor<R> out = Tensor<R>::empty(shape, a.device());
  R* o = out.data();
  const T* x = a.data();
  const T* y = b.data();
  if (a.shape() == shape && b.shape() == shape && a.is_contiguous() && b.is_contiguous()) {
    cpu::parallel_for(0, out.numel(), elementwise_grain, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) o[i] = f(x[i], y[i]);
    });
    return out;
  }
  const Tensor<T> ea = a.detach().expand(shape), eb = b.detach().expand(shape);
  cpu::StridedLayout<3> layout(shape, {&out.strides(), &ea.strides(), &eb.strides()});
  cpu::for_each_row(layout, [&](const std::array<std::int64_t, 3>& off, std::int64_t n, const std::array<std::int64_t, 3>& st) {
    R* po = o + off[0];
    const T* pa = x + off[1];
    const T* pb = y + off[2];
    if (st[1] == 1 && st[2] == 1) {
      for (std::int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
    } else if (st[1] == 1 && st[2] == 0) {
      const T vb = *pb;
      for (std::int64_t i = 0; i < n; ++i) po[i] = f(pa[i], vb);
    } else if (st[1] == 0 && st[2] == 1) {
      const T va = *pa;
      for (std::int64_t i = 0; i < n; ++i) po[i] = f(va, pb[i]);
    } else {
      for (std::int64_t i = 0; i < n; ++i) po[i] = f(pa[i * st[1]], pb[i * st[2]]);
    }
  });
  return out;
}

/// `f`, a generic callable over compute_type_t<T>, as a callable over T: the 16-bit floats
/// are widened to float, f runs in float and its result is rounded once (as in the CUDA
/// kernels); other types pass through unchanged.
template <Element T, class F>
auto in_compute_type(F f) {
  if constexpr (HalfElement<T>) {
    return [f](auto... x) { return convert_element<T>(f(static_cast<float>(x)...)); };
  } else {
    return f;
  }
}

/// `value` in the type T computes in (float for the 16-bit floats).
template <Element T>
compute_type_t<T> to_compute(T value) {
  return static_cast<compute_type_t<T>>(value);
}

/// unary_map on the CPU; the CUDA kernel `kernel` for CUDA tensors.
template <Element T, class F>
Tensor<T> unary_map(std::string_view op, const Tensor<T>& a, F f, cuda::UnaryKernel kernel) {
  if (a.defined() && a.device().is_cuda()) return cuda_unary_map(op, a, kernel);
  return unary_map(op, a, f);
}

/// binary_map on the CPU; the CUDA kernel `kernel` for CUDA tensors.
template <Element T, class F>
Tensor<T> binary_map(std::string_view op, const Tensor<T>& a, const Tensor<T>& b, F f, cuda::BinaryKernel kernel) {
  if ((a.defined() && a.device().is_cuda()) || (b.defined() && b.device().is_cuda()))
    return cuda_binary_map(op, a, b, kernel);
  return binary_map<T>(op, a, b, f);
}

}  // namespace detail

/// a + b with broadcasting.
// a: [...], b: [...] -> broadcast(a, b)
template <NumericElement T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out =
      detail::binary_map<T>("add", a, b, detail::in_compute_type<T>([](auto x, auto y) { return x + y; }), {cuda::BinaryOp::Add});
  if constexpr (DifferentiableElement<T>) {
    record<T>("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(g, sa));
      if (s.wants(1)) s.add(1, sum_to(g, sb));
    });
  }
  return out;
}

/// a - b with broadcasting.
// a: [...], b: [...] -> broadcast(a, b)
template <NumericElement T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out =
      detail::binary_map<T>("sub", a, b, detail::in_compute_type<T>([](auto x, auto y) { return x - y; }), {cuda::BinaryOp::Sub});
  if constexpr (DifferentiableElement<T>) {
    record<T>("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(g, sa));
      if (s.wants(1)) s.add(1, sum_to(neg(g), sb));
    });
  }
  return out;
}

/// a * b with broadcasting.
// a: [...], b: [...] -> broadcast(a, b)
template <NumericElement T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out =
      detail::binary_map<T>("mul", a, b, detail::in_compute_type<T>([](auto x, auto y) { return x * y; }), {cuda::BinaryOp::Mul});
  if constexpr (DifferentiableElement<T>) {
    record<T>("mul", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(mul(g, b), a.shape()));
      if (s.wants(1)) s.add(1, sum_to(mul(g, a), b.shape()));
    });
  }
  return out;
}

/// a / b with broadcasting (integer division truncates).
// a: [...], b: [...] -> broadcast(a, b)
template <NumericElement T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
  if constexpr (!DifferentiableElement<T>) {
    for (const T y : b.to_vector()) CONDENSE_CHECK(y != 0, "div", "integer division by zero: ", a.describe(), " / ", b.describe());
  }
  Tensor<T> out =
      detail::binary_map<T>("div", a, b, detail::in_compute_type<T>([](auto x, auto y) { return x / y; }), {cuda::BinaryOp::Div});
  if constexpr (DifferentiableElement<T>) {
    record<T>("div", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(div(g, b), a.shape()));
      if (s.wants(1)) {
        const Tensor<T> gb =
            detail::binary_map<T>("div backward", mul(g, a), b, detail::in_compute_type<T>([](auto ga, auto y) { return -ga / (y * y); }),
                                  {cuda::BinaryOp::DivGradDenominator});
        s.add(1, sum_to(gb, b.shape()));
      }
    });
  }
  return out;
}

/// -a.
template <NumericElement T>
Tensor<T> neg(const Tensor<T>& a) {
  Tensor<T> out = detail::unary_map("neg", a, detail::in_compute_type<T>([](auto x) { return -x; }), {cuda::UnaryOp::Neg});
  if constexpr (DifferentiableElement<T>) {
    record<T>("neg", out, {a}, [](const Tensor<T>& g, GradSink& s) { s.add(0, neg(g)); });
  }
  return out;
}

namespace detail {

/// a + s, with s in the compute type (so a 16-bit tensor can take a float scalar unrounded).
template <NumericElement T>
Tensor<T> add_scalar(const Tensor<T>& a, compute_type_t<T> s) {
  Tensor<T> out = unary_map("add", a, in_compute_type<T>([s](auto x) { return x + s; }), {cuda::UnaryOp::AddScalar, s});
  if constexpr (DifferentiableElement<T>) {
    record<T>("add_scalar", out, {a}, [](const Tensor<T>& g, GradSink& sink) { sink.add(0, g); });
  }
  return out;
}

/// a * s, with s in the compute type.
template <NumericElement T>
Tensor<T> mul_scalar(const Tensor<T>& a, compute_type_t<T> s) {
  Tensor<T> out = unary_map("mul", a, in_compute_type<T>([s](auto x) { return x * s; }), {cuda::UnaryOp::MulScalar, s});
  if constexpr (DifferentiableElement<T>) {
    record<T>("mul_scalar", out, {a}, [s](const Tensor<T>& g, GradSink& sink) { sink.add(0, mul_scalar(g, s)); });
  }
  return out;
}

}  // namespace detail

/// a + scalar.
template <NumericElement T>
Tensor<T> add(const Tensor<T>& a, T scalar) {
  return detail::add_scalar(a, detail::to_compute(scalar));
}

/// a * scalar.
template <NumericElement T>
Tensor<T> mul(const Tensor<T>& a, T scalar) {
  return detail::mul_scalar(a, detail::to_compute(scalar));
}

/// a + scalar for a 16-bit tensor and a float scalar (kept in float, not rounded first).
template <HalfElement T>
Tensor<T> add(const Tensor<T>& a, float scalar) {
  return detail::add_scalar(a, scalar);
}

/// a * scalar for a 16-bit tensor and a float scalar (kept in float, not rounded first).
template <HalfElement T>
Tensor<T> mul(const Tensor<T>& a, float scalar) {
  return detail::mul_scalar(a, scalar);
}

namespace detail {

/// s / a, with s in the compute type.
template <DifferentiableElement T>
Tensor<T> rdiv_scalar(compute_type_t<T> s, const Tensor<T>& a) {
  Tensor<T> out = unary_map("rdiv", a, in_compute_type<T>([s](auto x) { return s / x; }), {cuda::UnaryOp::RDivScalar, s});
  record<T>("rdiv", out, {a}, [s, a = a.detach()](const Tensor<T>& g, GradSink& sink) {
    sink.add(0, binary_map<T>("rdiv backward", g, a, in_compute_type<T>([s](auto gv, auto x) { return -gv * s / (x * x); }),
                              {cuda::BinaryOp::RDivGrad, s}));
  });
  return out;
}

}  // namespace detail

/// scalar / a.
template <DifferentiableElement T>
Tensor<T> rdiv(T scalar, const Tensor<T>& a) {
  return detail::rdiv_scalar(detail::to_compute(scalar), a);
}

// ---- operators -------------------------------------------------------------------------
template <NumericElement T> Tensor<T> operator+(const Tensor<T>& a, const Tensor<T>& b) { return add(a, b); }
template <NumericElement T> Tensor<T> operator-(const Tensor<T>& a, const Tensor<T>& b) { return sub(a, b); }
template <NumericElement T> Tensor<T> operator*(const Tensor<T>& a, const Tensor<T>& b) { return mul(a, b); }
template <NumericElement T> Tensor<T> operator/(const Tensor<T>& a, const Tensor<T>& b) { return div(a, b); }
template <NumericElement T> Tensor<T> operator-(const Tensor<T>& a) { return neg(a); }
template <NumericElement T> Tensor<T> operator+(const Tensor<T>& a, std::type_identity_t<T> s) { return add(a, s); }
template <NumericElement T> Tensor<T> operator+(std::type_identity_t<T> s, const Tensor<T>& a) { return add(a, s); }
template <NumericElement T> Tensor<T> operator-(const Tensor<T>& a, std::type_identity_t<T> s) { return detail::add_scalar(a, -detail::to_compute(s)); }
template <NumericElement T> Tensor<T> operator-(std::type_identity_t<T> s, const Tensor<T>& a) { return add(neg(a), s); }
template <NumericElement T> Tensor<T> operator*(const Tensor<T>& a, std::type_identity_t<T> s) { return mul(a, s); }
template <NumericElement T> Tensor<T> operator*(std::type_identity_t<T> s, const Tensor<T>& a) { return mul(a, s); }
template <DifferentiableElement T> Tensor<T> operator/(const Tensor<T>& a, std::type_identity_t<T> s) { return detail::mul_scalar(a, compute_type_t<T>(1) / detail::to_compute(s)); }
template <DifferentiableElement T> Tensor<T> operator/(std::type_identity_t<T> s, const Tensor<T>& a) { return rdiv(s, a); }
// The 16-bit floats with float scalars (the scalar stays in float).
template <HalfElement T> Tensor<T> operator+(const Tensor<T>& a, float s) { return detail::add_scalar(a, s); }
template <HalfElement T> Tensor<T> operator+(float s, const Tensor<T>& a) { return detail::add_scalar(a, s); }
template <HalfElement T> Tensor<T> operator-(const Tensor<T>& a, float s) { return detail::add_scalar(a, -s); }
template <HalfElement T> Tensor<T> operator-(float s, const Tensor<T>& a) { return detail::add_scalar(neg(a), s); }
template <HalfElement T> Tensor<T> operator*(const Tensor<T>& a, float s) { return detail::mul_scalar(a, s); }
template <HalfElement T> Tensor<T> operator*(float s, const Tensor<T>& a) { return detail::mul_scalar(a, s); }
template <HalfElement T> Tensor<T> operator/(const Tensor<T>& a, float s) { return detail::mul_scalar(a, 1.0f / s); }
template <HalfElement T> Tensor<T> operator/(float s, const Tensor<T>& a) { return detail::rdiv_scalar(s, a); }

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
