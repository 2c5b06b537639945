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
template <ArithmeticElement T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::binary_map<T>("add", a, b, [](T x, T y) { return x + y; }, {cuda::BinaryOp::Add});
  if constexpr (FloatingElement<T>) {
    record<T>("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(g, sa));
      if (s.wants(1)) s.add(1, sum_to(g, sb));
    });
  }
  return out;
}

/// a - b with broadcasting.
// a: [...], b: [...] -> broadcast(a, b)
template <ArithmeticElement T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::binary_map<T>("sub", a, b, [](T x, T y) { return x - y; }, {cuda::BinaryOp::Sub});
  if constexpr (FloatingElement<T>) {
    record<T>("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(g, sa));
      if (s.wants(1)) s.add(1, sum_to(neg(g), sb));
    });
  }
  return out;
}

/// a * b with broadcasting.
// a: [...], b: [...] -> broadcast(a, b)
template <ArithmeticElement T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::binary_map<T>("mul", a, b, [](T x, T y) { return x * y; }, {cuda::BinaryOp::Mul});
  if constexpr (FloatingElement<T>) {
    record<T>("mul", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(mul(g, b), a.shape()));
      if (s.wants(1)) s.add(1, sum_to(mul(g, a), b.shape()));
    });
  }
  return out;
}

/// a / b with broadcasting (integer division truncates).
// a: [...], b: [...] -> broadcast(a, b)
template <ArithmeticElement T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
  if constexpr (!FloatingElement<T>) {
    for (const T y : b.to_vector()) CONDENSE_CHECK(y != 0, "div", "integer division by zero: ", a.describe(), " / ", b.describe());
  }
  Tensor<T> out = detail::binary_map<T>("div", a, b, [](T x, T y) { return x / y; }, {cuda::BinaryOp::Div});
  if constexpr (FloatingElement<T>) {
    record<T>("div", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(div(g, b), a.shape()));
      if (s.wants(1)) {
        const Tensor<T> gb = detail::binary_map<T>("div backward", mul(g, a), b, [](T ga, T y) { return -ga / (y * y); },
                                                             {cuda::BinaryOp::DivGradDenominator});
        s.add(1, sum_to(gb, b.shape()));
      }
    });
  }
  return out;
}

/// -a.
template <ArithmeticElement T>
Tensor<T> neg(const Tensor<T>& a) {
  Tensor<T> out = detail::unary_map("neg", a, [](T x) { return -x; }, {cuda::UnaryOp::Neg});
  if constexpr (FloatingElement<T>) {
    record<T>("neg", out, {a}, [](const Tensor<T>& g, GradSink& s) { s.add(0, neg(g)); });
  }
  return out;
}

/// a + scalar.
template <ArithmeticElement T>
Tensor<T> add(const Tensor<T>& a, T scalar) {
  Tensor<T> out = detail::unary_map("add", a, [scalar](T x) { return x + scalar; }, {cuda::UnaryOp::AddScalar, double(scalar)});
  if constexpr (FloatingElement<T>) {
    record<T>("add_scalar", out, {a}, [](const Tensor<T>& g, GradSink& s) { s.add(0, g); });
  }
  return out;
}

/// a * scalar.
template <ArithmeticElement T>
Tensor<T> mul(const Tensor<T>& a, T scalar) {
  Tensor<T> out = detail::unary_map("mul", a, [scalar](T x) { return x * scalar; }, {cuda::UnaryOp::MulScalar, double(scalar)});
  if constexpr (FloatingElement<T>) {
    record<T>("mul_scalar", out, {a}, [scalar](const Tensor<T>& g, GradSink& s) { s.add(0, mul(g, scalar)); });
  }
  return out;
}

/// scalar / a.
template <FloatingElement T>
Tensor<T> rdiv(T scalar, const Tensor<T>& a) {
  Tensor<T> out = detail::unary_map("rdiv", a, [scalar](T x) { return scalar / x; }, {cuda::UnaryOp::RDivScalar, double(scalar)});
  record<T>("rdiv", out, {a}, [scalar, a = a.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, detail::binary_map<T>("rdiv backward", g, a, [scalar](T gv, T x) { return -gv * scalar / (x * x); },
                                     {cuda::BinaryOp::RDivGrad, double(scalar)}));
  });
  return out;
}

// ---- operators -------------------------------------------------------------------------
template <ArithmeticElement T> Tensor<T> operator+(const Tensor<T>& a, const Tensor<T>& b) { return add(a, b); }
template <ArithmeticElement T> Tensor<T> operator-(const Tensor<T>& a, const Tensor<T>& b) { return sub(a, b); }
template <ArithmeticElement T> Tensor<T> operator*(const Tensor<T>& a, const Tensor<T>& b) { return mul(a, b); }
template <ArithmeticElement T> Tensor<T> operator/(const Tensor<T>& a, const Tensor<T>& b) { return div(a, b); }
template <ArithmeticElement T> Tensor<T> operator-(const Tensor<T>& a) { return neg(a); }
template <ArithmeticElement T> Tensor<T> operator+(const Tensor<T>& a, std::type_identity_t<T> s) { return add(a, s); }
template <ArithmeticElement T> Tensor<T> operator+(std::type_identity_t<T> s, const Tensor<T>& a) { return add(a, s); }
template <ArithmeticElement T> Tensor<T> operator-(const Tensor<T>& a, std::type_identity_t<T> s) { return add(a, static_cast<T>(-s)); }
template <ArithmeticElement T> Tensor<T> operator-(std::type_identity_t<T> s, const Tensor<T>& a) { return add(neg(a), s); }
template <ArithmeticElement T> Tensor<T> operator*(const Tensor<T>& a, std::type_identity_t<T> s) { return mul(a, s); }
template <ArithmeticElement T> Tensor<T> operator*(std::type_identity_t<T> s, const Tensor<T>& a) { return mul(a, s); }
template <FloatingElement T> Tensor<T> operator/(const Tensor<T>& a, std::type_identity_t<T> s) { return mul(a, T(1) / s); }
template <FloatingElement T> Tensor<T> operator/(std::type_identity_t<T> s, const Tensor<T>& a) { return rdiv(s, a); }

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
