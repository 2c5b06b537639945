// Activation functions: tanh, sigmoid, relu, gelu (erf or tanh approximation) and silu,
// each with its backward rule beside it. Forward passes and the backward passes that need
// transcendental functions run vectorised kernels on contiguous blocks (detail::math_map /
// math_map2 from ops/unary.hpp): Eigen's array functions (tanh, erf; everything in double)
// and, for float on AVX-512, kernels built on the exp of ops/unary.hpp (sigmoid, silu and
// the gelu/silu backward passes). Every backward rule is one fused pass over (grad, saved
// tensor), and results do not depend on layout or thread count.
//
// Numerics: sigmoid uses exp(-|x|), so it never overflows (sigmoid(-100) is ~0, not NaN,
// sigmoid(+inf) = 1); tanh saturates to +-1 (tanh(50) = 1). gelu(-inf) and silu(-inf) are
// NaN (-inf * 0), as in PyTorch; gelu(+inf) = silu(+inf) = +inf.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/reduce.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"
#include "condense/ops/unary.hpp"

// GCC 12 reports a false -Wmaybe-uninitialized inside its own AVX-512 intrinsics
// (_mm512_undefined_ps, GCC bug 105593) wherever Eigen's packet math is inlined; the
// pragma covers the kernels and ops of this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace condense {

/// Which formula gelu uses: the exact x * Phi(x) with erf (PyTorch's default,
/// approximate='none') or the tanh approximation (approximate='tanh').
enum class GeluApproximation { Erf, Tanh };

namespace detail {

/// sqrt(1/2), for Phi(x) = (1 + erf(x / sqrt 2)) / 2.
inline constexpr double gelu_sqrt1_2 = 0.70710678118654752440;
/// 1 / sqrt(2 pi), for phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
inline constexpr double gelu_inv_sqrt_2pi = 0.39894228040143267794;
/// sqrt(2 / pi) and the cubic coefficient of the tanh approximation.
inline constexpr double gelu_tanh_k0 = 0.79788456080286535588;
inline constexpr double gelu_tanh_k1 = 0.044715;

/// sigmoid(x) = 1 / (1 + e^-x) as an Eigen functor with a packet path (Eigen's exp, one
/// division and a blend), computed from e = exp(-|x|) in [0, 1] so nothing overflows:
/// x >= 0 -> 1 / (1 + e), x < 0 -> e / (1 + e). NaN stays NaN.
template <FloatingElement T>
struct SigmoidOp {
  T operator()(const T& x) const {
    const T e = cpu::ExpFlushOp<T>{}(-std::abs(x));
    const T r = T(1) / (T(1) + e);
    return x >= T(0) ? r : e * r;
  }
  template <class Packet>
  Packet packetOp(const Packet& x) const {
    namespace ei = Eigen::internal;
    const Packet e = cpu::ExpFlushOp<T>{}.packetOp(ei::pnegate(ei::pabs(x)));
    const Packet one = ei::pset1<Packet>(T(1));
    const Packet r = ei::pdiv(one, ei::padd(one, e));
    return ei::pselect(ei::pcmp_le(ei::pzero(x), x), r, ei::pmul(e, r));
  }
};

/// o[i] = sigmoid(x[i]) (see SigmoidOp).
template <FloatingElement T>
void sigmoid_kernel(const T* x, T* o, std::int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    avx512::map(x, o, n, [](__m512 v) { return avx512::sigmoid(v); });
    return;
  }
#endif
  MathMap<T>(o, n) = ConstMathMap<T>(x, n).unaryExpr(SigmoidOp<T>{});
}

/// o[i] = x[i] * sigmoid(x[i]).
template <FloatingElement T>
void silu_kernel(const T* x, T* o, std::int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    avx512::map(x, o, n, [](__m512 v) { return _mm512_mul_ps(v, avx512::sigmoid(v)); });
    return;
  }
#endif
  const ConstMathMap<T> X(x, n);
  MathMap<T>(o, n) = X * X.unaryExpr(SigmoidOp<T>{});
}

/// o[i] = g[i] * silu'(x[i]) = g * s * (1 + x * (1 - s)), s = sigmoid(x).
template <FloatingElement T>
void silu_backward_kernel(const T* g, const T* x, T* o, std::int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    avx512::map2(g, x, o, n, [](__m512 gv, __m512 xv) {
      const __m512 s = avx512::sigmoid(xv);
      const __m512 one = _mm512_set1_ps(1.0f);
      return _mm512_mul_ps(_mm512_mul_ps(gv, s), _mm512_fmadd_ps(xv, _mm512_sub_ps(one, s), one));
    });
    return;
  }
#endif
  const ConstMathMap<T> X(x, n), G(g, n);
  MathMap<T> S(o, n);  // o holds sigmoid(x), then the result (elementwise, so no aliasing issue)
  S = X.unaryExpr(SigmoidOp<T>{});
  S = G * S * (T(1) + X * (T(1) - S));
}

/// o[i] = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2.
template <FloatingElement T>
void gelu_erf_kernel(const T* x, T* o, std::int64_t n) {
  const ConstMathMap<T> X(x, n);
  MathMap<T>(o, n) = T(0.5) * X * (T(1) + (X * T(gelu_sqrt1_2)).erf());
}

/// o[i] = g * (Phi(x) + x phi(x)).
template <FloatingElement T>
void gelu_erf_backward_kernel(const T* g, const T* x, T* o, std::int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    // One pass; erf is Eigen's packet erf (what .erf() uses), exp the AVX-512 kernel.
    avx512::map2(g, x, o, n, [](__m512 gv, __m512 xv) {
      const __m512 half = _mm512_set1_ps(0.5f);
      const __m512 cdf = _mm512_fmadd_ps(half, Eigen::internal::perf(_mm512_mul_ps(xv, _mm512_set1_ps(float(gelu_sqrt1_2)))), half);
      const __m512 pdf = _mm512_mul_ps(avx512::exp(_mm512_mul_ps(_mm512_mul_ps(xv, xv), _mm512_set1_ps(-0.5f))),
                                       _mm512_set1_ps(float(gelu_inv_sqrt_2pi)));
      return _mm512_mul_ps(gv, _mm512_fmadd_ps(xv, pdf, cdf));
    });
    return;
  }
#endif
  const ConstMathMap<T> X(x, n), G(g, n);
  MathMap<T> O(o, n);
  O = cpu::vexp(T(-0.5) * X.square());  // sqrt(2 pi) phi(x)
  O = G * (T(0.5) * (T(1) + (X * T(gelu_sqrt1_2)).erf()) + X * O * T(gelu_inv_sqrt_2pi));
}

/// o[i] = x (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3).
template <FloatingElement T>
void gelu_tanh_kernel(const T* x, T* o, std::int64_t n) {
  const ConstMathMap<T> X(x, n);
  MathMap<T>(o, n) = T(0.5) * X * (T(1) + (T(gelu_tanh_k0) * (X + T(gelu_tanh_k1) * X.cube())).tanh());
}

/// o[i] = g * ((1 + t) / 2 + x (1 - t^2) u'(x) / 2), t = tanh(u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
template <FloatingElement T>
void gelu_tanh_backward_kernel(const T* g, const T* x, T* o, std::int64_t n) {
  const ConstMathMap<T> X(x, n), G(g, n);
  MathMap<T> O(o, n);
  O = (T(gelu_tanh_k0) * (X + T(gelu_tanh_k1) * X.cube())).tanh();
  O = G * (T(0.5) * (T(1) + O) +
           T(0.5 * gelu_tanh_k0) * X * (T(1) - O.square()) * (T(1) + T(3 * gelu_tanh_k1) * X.square()));
}

}  // namespace detail

/// Elementwise hyperbolic tangent (saturates to +-1).
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> tanh(const Tensor<T>& t) {
  Tensor<T> out = detail::math_map("tanh", t, [](const T* x, T* o, std::int64_t n) {
    detail::MathMap<T>(o, n) = detail::ConstMathMap<T>(x, n).tanh();
  }, {cuda::UnaryOp::Tanh});
  // d tanh(x) = (1 - y^2) dx: reuse the output.
  record<T>("tanh", out, {t}, [y = out.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, detail::binary_map<T>("tanh backward", g, y, [](T gv, T yv) { return gv * (T(1) - yv * yv); },
                                   {cuda::BinaryOp::TanhGrad}));
  });
  return out;
}

/// Elementwise logistic sigmoid 1 / (1 + e^-x), overflow-free for any input.
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> sigmoid(const Tensor<T>& t) {
  Tensor<T> out = detail::math_map("sigmoid", t, [](const T* x, T* o, std::int64_t n) { detail::sigmoid_kernel(x, o, n); },
                                     {cuda::UnaryOp::Sigmoid});
  // d sigmoid(x) = y (1 - y) dx: reuse the output.
  record<T>("sigmoid", out, {t}, [y = out.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, detail::binary_map<T>("sigmoid backward", g, y, [](T gv, T yv) { return gv * yv * (T(1) - yv); },
                                   {cuda::BinaryOp::SigmoidGrad}));
  });
  return out;
}

/// Elementwise max(x, 0) (NaN stays NaN). Gradient: 1 where x > 0, else 0 (0 at x = 0).
/// Integer tensors are supported (no gradient).
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> relu(const Tensor<T>& t) {
  Tensor<T> out = detail::unary_map("relu", t, [](T x) { return x < T(0) ? T(0) : x; }, {cuda::UnaryOp::Relu});
  if constexpr (FloatingElement<T>) {
    // y > 0 exactly where x > 0: the output is the only tensor kept.
    record<T>("relu", out, {t}, [y = out.detach()](const Tensor<T>& g, GradSink& s) {
      s.add(0, detail::binary_map<T>("relu backward", g, y, [](T gv, T yv) { return yv > T(0) ? gv : T(0); },
                                     {cuda::BinaryOp::ReluGrad}));
    });
  }
  return out;
}

/// Elementwise GELU: x * Phi(x) with the exact erf form (default, like PyTorch) or the tanh
/// approximation x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). The backward pass uses the
/// exact derivative of the chosen formula.
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> gelu(const Tensor<T>& t, GeluApproximation approximation = GeluApproximation::Erf) {
  Tensor<T> out;
  if (approximation == GeluApproximation::Erf) {
    out = detail::math_map("gelu", t, [](const T* x, T* o, std::int64_t n) { detail::gelu_erf_kernel(x, o, n); },
                           {cuda::UnaryOp::GeluErf});
  } else {
    out = detail::math_map("gelu", t, [](const T* x, T* o, std::int64_t n) { detail::gelu_tanh_kernel(x, o, n); },
                           {cuda::UnaryOp::GeluTanh});
  }
  record<T>("gelu", out, {t}, [x = t.detach(), approximation](const Tensor<T>& g, GradSink& s) {
    if (approximation == GeluApproximation::Erf) {
      s.add(0, detail::math_map2("gelu backward", g, x, [](const T* gv, const T* xv, T* o, std::int64_t n) {
              detail::gelu_erf_backward_kernel(gv, xv, o, n);
            }, {cuda::BinaryOp::GeluErfGrad}));
    } else {
      s.add(0, detail::math_map2("gelu backward", g, x, [](const T* gv, const T* xv, T* o, std::int64_t n) {
              detail::gelu_tanh_backward_kernel(gv, xv, o, n);
            }, {cuda::BinaryOp::GeluTanhGrad}));
    }
  });
  return out;
}

/// Elementwise SiLU (swish): x * sigmoid(x).
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> silu(const Tensor<T>& t) {
  Tensor<T> out = detail::math_map("silu", t, [](const T* x, T* o, std::int64_t n) { detail::silu_kernel(x, o, n); },
                                  {cuda::UnaryOp::Silu});
  // d silu(x) = s (1 + x (1 - s)) dx, s = sigmoid(x), recomputed from x in the same pass.
  record<T>("silu", out, {t}, [x = t.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, detail::math_map2("silu backward", g, x, [](const T* gv, const T* xv, T* o, std::int64_t n) {
            detail::silu_backward_kernel(gv, xv, o, n);
          }, {cuda::BinaryOp::SiluGrad}));
  });
  return out;
}

// ---- the 16-bit floats -------------------------------------------------------------------
// bfloat16 and float16 tensors: on CUDA, relu, gelu and silu run the elementwise kernels on
// the 16-bit values directly (each element computed in float, rounded once; gelu's and silu's
// backward read the input x, which is exact in 16 bits). tanh and sigmoid, whose backward
// rules read the output (1 - y^2 and y (1 - y) would cancel badly with y rounded to 16
// bits near +-1), and every activation on the CPU, go through the float ops
// (detail::through_float): value and gradient computed in float and rounded once.

namespace detail {

/// An activation of a 16-bit CUDA tensor in one pass each way: `forward` maps t, `backward`
/// maps (grad, t) to the input gradient.
// t: [...] (CUDA) -> [...]
template <HalfElement T>
Tensor<T> cuda_half_activation(std::string_view op, std::string_view backward_op, const Tensor<T>& t,
                               cuda::UnaryKernel forward, cuda::BinaryKernel backward) {
  Tensor<T> out = cuda_unary_map(op, t, forward);
  record<T>(op, out, {t}, [x = t.detach(), backward_op, backward](const Tensor<T>& g, GradSink& s) {
    s.add(0, cuda_binary_map(backward_op, g, x, backward));
  });
  return out;
}

}  // namespace detail

/// tanh of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> tanh(const Tensor<T>& t) {
  return detail::through_float([](const Tensor<float>& x) { return tanh(x); }, t);
}

/// sigmoid of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> sigmoid(const Tensor<T>& t) {
  return detail::through_float([](const Tensor<float>& x) { return sigmoid(x); }, t);
}

/// relu of a 16-bit tensor (exact; directly on CUDA).
template <HalfElement T>
Tensor<T> relu(const Tensor<T>& t) {
  if (t.defined() && t.device().is_cuda()) {
    // The gradient test reads x: x > 0 exactly where the output is > 0.
    return detail::cuda_half_activation("relu", "relu backward", t, {cuda::UnaryOp::Relu}, {cuda::BinaryOp::ReluGrad});
  }
  return detail::through_float([](const Tensor<float>& x) { return relu(x); }, t);
}

/// GELU of a 16-bit tensor (computed in float; directly on CUDA).
template <HalfElement T>
Tensor<T> gelu(const Tensor<T>& t, GeluApproximation approximation = GeluApproximation::Erf) {
  if (t.defined() && t.device().is_cuda()) {
    const bool erf = approximation == GeluApproximation::Erf;
    return detail::cuda_half_activation("gelu", "gelu backward", t,
                                        {erf ? cuda::UnaryOp::GeluErf : cuda::UnaryOp::GeluTanh},
                                        {erf ? cuda::BinaryOp::GeluErfGrad : cuda::BinaryOp::GeluTanhGrad});
  }
  return detail::through_float([approximation](const Tensor<float>& x) { return gelu(x, approximation); }, t);
}

/// SiLU of a 16-bit tensor (computed in float; directly on CUDA).
template <HalfElement T>
Tensor<T> silu(const Tensor<T>& t) {
  if (t.defined() && t.device().is_cuda())
    return detail::cuda_half_activation("silu", "silu backward", t, {cuda::UnaryOp::Silu}, {cuda::BinaryOp::SiluGrad});
  return detail::through_float([](const Tensor<float>& x) { return silu(x); }, t);
}

}  // namespace condense

/// SigmoidOp's packet path is used where Eigen has a vectorised exp for the scalar.
template <class T>
struct Eigen::internal::functor_traits<condense::detail::SigmoidOp<T>> {
  enum { Cost = 30 * Eigen::NumTraits<T>::MulCost, PacketAccess = Eigen::internal::packet_traits<T>::HasExp };
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
