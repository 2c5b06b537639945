// softmax and log_softmax along one dim, fused and numerically stable: per row one max
// pass, one exp-sum pass and one normalise pass, with vectorised exp (Eigen arrays) and
// rows split across threads. Backward rules use only the saved output:
//   softmax:     dx = y * (g - sum(g * y))
//   log_softmax: dx = g - exp(y) * sum(g)
// Layout: the input is seen as contiguous [outer, n, inner] around the dim (strided inputs
// are copied once). dim = last (inner = 1) runs row by row; inner >= 16 runs blocks of
// inner positions side by side (vectorised across them); 1 < inner < 16 is transposed to
// rows, computed, and transposed back.
// Rows of all -inf: softmax gives zeros (not NaN) and a zero gradient; log_softmax gives
// -inf, and its gradient there is g (the formula above with exp(-inf) = 0). A NaN in a
// row makes the whole row NaN; a +inf makes it NaN (as in PyTorch).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>

#include <Eigen/Core>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cpu/reduce.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"

// GCC 12 reports false -Wmaybe-uninitialized warnings from inside Eigen's AVX-512 exp when
// it is inlined into the kernels below; silence that one warning for this code only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace condense {
namespace detail {

/// Extents of a contiguous tensor seen as [outer, n, inner] around the softmax dim.
struct SoftmaxGeometry {
  std::int64_t outer = 1, n = 1, inner = 1;
};

/// Width of the inner blocks the strided kernels process side by side.
inline constexpr std::int64_t softmax_block = 256;

/// Rows per thread chunk so that a chunk holds about 16K elements.
inline std::int64_t softmax_row_grain(std::int64_t n) { return std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(n, 1)); }

/// Forward over `rows` contiguous rows of `n`: y = softmax(x) or log_softmax(x) per row.
template <FloatingElement T>
void softmax_rows(const T* x, T* y, std::int64_t rows, std::int64_t n, bool log) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  cpu::parallel_for(0, rows, softmax_row_grain(n), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const cpu::ConstArrayMap<T> X(x + r * n, n);
      cpu::ArrayMap<T> Y(y + r * n, n);
      const T m = cpu::max_contiguous(x + r * n, n);
      if (m == -inf) {  // every entry is -inf
        if (log) Y.setConstant(-inf);
        else Y.setZero();
        continue;
      }
      Y = cpu::vexp(X - m);
      const T s = cpu::sum_contiguous(y + r * n, n);
      if (log) Y = (X - m) - std::log(s);  // X - m is exact; keeps precision for large |x|
      else Y *= T(1) / s;
    }
  });
}

/// Backward over contiguous rows from the saved output y and the output gradient g.
template <FloatingElement T>
void softmax_rows_backward(const T* y, const T* g, T* gx, std::int64_t rows, std::int64_t n, bool log) {
  cpu::parallel_for(0, rows, softmax_row_grain(n), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const cpu::ConstArrayMap<T> Y(y + r * n, n), G(g + r * n, n);
      cpu::ArrayMap<T> GX(gx + r * n, n);
      if (log) {
        const T s = cpu::sum_contiguous(g + r * n, n);
        GX = G - cpu::vexp(Y) * s;
      } else {
        const T dot = cpu::dot_contiguous(g + r * n, y + r * n, n);
        GX = Y * (G - dot);
      }
    }
  });
}

/// Calls fn(base, i0, i1) for every (outer index, block [i0, i1) of inner positions), with
/// base the element offset of that outer slice; split across threads.
template <class Fn>
void softmax_for_each_block(const SoftmaxGeometry& g, Fn&& fn) {
  const std::int64_t blocks = (g.inner + softmax_block - 1) / softmax_block;
  const std::int64_t grain = std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(1, g.n * std::min(g.inner, softmax_block)));
  cpu::parallel_for(0, g.outer * blocks, grain, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t o = t / blocks, b = t % blocks;
      const std::int64_t i0 = b * softmax_block;
      fn(o * g.n * g.inner, i0, std::min(g.inner, i0 + softmax_block));
    }
  });
}

/// Forward along the middle dim of contiguous [outer, n, inner], vectorised across inner.
template <FloatingElement T>
void softmax_strided(const T* x, T* y, const SoftmaxGeometry& geo, bool log) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  const std::int64_t inner = geo.inner, n = geo.n;
  softmax_for_each_block(geo, [&](std::int64_t base, std::int64_t i0, std::int64_t i1) {
    const std::int64_t w = i1 - i0;
    T mbuf[softmax_block], sbuf[softmax_block];
    T* m = mbuf;
    T* s = sbuf;
    for (std::int64_t i = 0; i < w; ++i) m[i] = -inf;
    for (std::int64_t k = 0; k < n; ++k) {
      const T* xk = x + base + k * inner + i0;
      for (std::int64_t i = 0; i < w; ++i) m[i] = (xk[i] > m[i] || xk[i] != xk[i]) ? xk[i] : m[i];
    }
    // A column of all -inf shifts by 0 so that exp(-inf - 0) = 0 instead of NaN.
    for (std::int64_t i = 0; i < w; ++i) m[i] = m[i] == -inf ? T(0) : m[i];
    cpu::ArrayMap<T> M(m, w), S(s, w);
    S.setZero();
    for (std::int64_t k = 0; k < n; ++k) {
      const cpu::ConstArrayMap<T> Xk(x + base + k * inner + i0, w);
      if (log) {
        S += cpu::vexp(Xk - M);
      } else {
        cpu::ArrayMap<T> Yk(y + base + k * inner + i0, w);
        Yk = cpu::vexp(Xk - M);
        S += Yk;
      }
    }
    if (log) {
      // y = (x - m) - log(S); +inf in place of log(S) where the column is all -inf (S = 0).
      for (std::int64_t i = 0; i < w; ++i) s[i] = s[i] == T(0) ? inf : std::log(s[i]);
      for (std::int64_t k = 0; k < n; ++k) {
        const T* xk = x + base + k * inner + i0;
        T* yk = y + base + k * inner + i0;
        for (std::int64_t i = 0; i < w; ++i) yk[i] = (xk[i] - m[i]) - s[i];
      }
    } else {
      for (std::int64_t i = 0; i < w; ++i) s[i] = s[i] == T(0) ? T(0) : T(1) / s[i];
      for (std::int64_t k = 0; k < n; ++k) {
        T* yk = y + base + k * inner + i0;
        for (std::int64_t i = 0; i < w; ++i) yk[i] *= s[i];
      }
    }
  });
}

/// Backward along the middle dim of contiguous [outer, n, inner], vectorised across inner.
template <FloatingElement T>
void softmax_strided_backward(const T* y, const T* g, T* gx, const SoftmaxGeometry& geo, bool log) {
  const std::int64_t inner = geo.inner, n = geo.n;
  softmax_for_each_block(geo, [&](std::int64_t base, std::int64_t i0, std::int64_t i1) {
    const std::int64_t w = i1 - i0;
    T sbuf[softmax_block];
    T* s = sbuf;
    for (std::int64_t i = 0; i < w; ++i) s[i] = T(0);
    for (std::int64_t k = 0; k < n; ++k) {
      const T* gk = g + base + k * inner + i0;
      const T* yk = y + base + k * inner + i0;
      if (log) {
        for (std::int64_t i = 0; i < w; ++i) s[i] += gk[i];
      } else {
        for (std::int64_t i = 0; i < w; ++i) s[i] += gk[i] * yk[i];
      }
    }
    const cpu::ConstArrayMap<T> S(s, w);
    for (std::int64_t k = 0; k < n; ++k) {
      const std::int64_t at = base + k * inner + i0;
      const cpu::ConstArrayMap<T> Yk(y + at, w), Gk(g + at, w);
      cpu::ArrayMap<T> GXk(gx + at, w);
      if (log) GXk = Gk - cpu::vexp(Yk) * S;
      else GXk = Yk * (Gk - S);
    }
  });
}

/// Runs the forward kernel on contiguous `x` along dim `d` into a new contiguous tensor.
template <FloatingElement T>
Tensor<T> softmax_forward(const Tensor<T>& x, std::size_t d, bool log) {
  SoftmaxGeometry geo;
  for (std::size_t i = 0; i < d; ++i) geo.outer *= x.shape()[i];
  geo.n = x.shape()[d];
  for (std::size_t i = d + 1; i < x.shape().size(); ++i) geo.inner *= x.shape()[i];
  Tensor<T> y = Tensor<T>::empty(x.shape(), x.device());
  if (x.numel() == 0) return y;
  if (geo.inner == 1) {
    softmax_rows(x.data(), y.data(), geo.outer, geo.n, log);
  } else if (geo.inner >= 16) {
    softmax_strided(x.data(), y.data(), geo, log);
  } else {
    const Tensor<T> xt = x.view({geo.outer, geo.n, geo.inner}).transpose(1, 2).contiguous();
    Tensor<T> yt = Tensor<T>::empty(xt.shape(), x.device());
    softmax_rows(xt.data(), yt.data(), geo.outer * geo.inner, geo.n, log);
    y = yt.transpose(1, 2).contiguous().view(x.shape());
  }
  return y;
}

/// Runs the backward kernel on contiguous `y`, `g` along dim `d` into a new contiguous tensor.
template <FloatingElement T>
Tensor<T> softmax_backward(const Tensor<T>& y, const Tensor<T>& g, std::size_t d, bool log) {
  SoftmaxGeometry geo;
  for (std::size_t i = 0; i < d; ++i) geo.outer *= y.shape()[i];
  geo.n = y.shape()[d];
  for (std::size_t i = d + 1; i < y.shape().size(); ++i) geo.inner *= y.shape()[i];
  Tensor<T> gx = Tensor<T>::empty(y.shape(), y.device());
  if (y.numel() == 0) return gx;
  if (geo.inner == 1) {
    softmax_rows_backward(y.data(), g.data(), gx.data(), geo.outer, geo.n, log);
  } else if (geo.inner >= 16) {
    softmax_strided_backward(y.data(), g.data(), gx.data(), geo, log);
  } else {
    const Shape s3{geo.outer, geo.n, geo.inner};
    const Tensor<T> yt = y.view(s3).transpose(1, 2).contiguous();
    const Tensor<T> gt = g.view(s3).transpose(1, 2).contiguous();
    Tensor<T> gxt = Tensor<T>::empty(yt.shape(), y.device());
    softmax_rows_backward(yt.data(), gt.data(), gxt.data(), geo.outer * geo.inner, geo.n, log);
    gx = gxt.transpose(1, 2).contiguous().view(y.shape());
  }
  return gx;
}

/// softmax / log_softmax of a CUDA tensor with autograd: the dim is moved last and made
/// contiguous, one block per row computes it, and the result is a view back in t's dim order.
/// 16-bit tensors too (each row computed in float, every value rounded once).
template <DifferentiableElement T>
Tensor<T> cuda_softmax_op(std::string_view op, const Tensor<T>& t, std::int64_t dim, bool log) {
  // A scalar is a single row of one element (dim 0 or -1).
  const bool scalar = t.dim() == 0;
  const std::int64_t d = static_cast<std::int64_t>(normalize_dim(op, dim, scalar ? 1 : t.shape().size()));
  const Tensor<T> x = scalar ? t.detach().reshape({1}) : t.detach();
  const std::int64_t last = x.dim() - 1;
  const Tensor<T> x_rows = x.transpose(d, last).contiguous();
  const std::int64_t cols = x_rows.size(-1);
  const std::int64_t rows = cols == 0 ? 0 : x_rows.numel() / cols;
  const Tensor<T> y_rows = Tensor<T>::empty(x_rows.shape(), t.device());
  cuda::softmax_rows(log, cuda_arg(op, y_rows), cuda_arg(op, x_rows), rows, cols, op);
  Tensor<T> out = y_rows.transpose(d, last);
  if (scalar) out = out.reshape({});
  record<T>(op, out, {t}, [y_rows, d, last, rows, cols, log, scalar, op](const Tensor<T>& g, GradSink& s) {
    const Tensor<T> g_rows = (scalar ? g.reshape({1}) : g).transpose(d, last).contiguous();
    const Tensor<T> gx_rows = Tensor<T>::empty(y_rows.shape(), y_rows.device());
    cuda::softmax_rows_backward(log, cuda_arg(op, gx_rows), cuda_arg(op, y_rows), cuda_arg(op, g_rows), rows, cols, op);
    Tensor<T> gx = gx_rows.transpose(d, last);
    s.add(0, scalar ? gx.reshape({}) : gx);
  });
  return out;
}

/// softmax / log_softmax with autograd.
template <FloatingElement T>
Tensor<T> softmax_op(std::string_view op, const Tensor<T>& t, std::int64_t dim, bool log) {
  if (t.defined() && t.device().is_cuda()) return cuda_softmax_op(op, t, dim, log);
  check_cpu(op, t);
  // A scalar is a single row of one element (dim 0 or -1).
  const bool scalar = t.dim() == 0;
  const std::size_t d = normalize_dim(op, dim, scalar ? 1 : t.shape().size());
  const Tensor<T> x = scalar ? t.detach().reshape({1}) : t.detach().contiguous();
  Tensor<T> out = softmax_forward(x, d, log);
  if (scalar) out = out.view({});
  record<T>(op, out, {t}, [y = out.detach(), d, log, scalar](const Tensor<T>& g, GradSink& s) {
    const Tensor<T> gc = g.contiguous();
    const Tensor<T> gx = scalar ? softmax_backward(y.view({1}), gc.view({1}), d, log).view({})
                                : softmax_backward(y, gc, d, log);
    s.add(0, gx);
  });
  return out;
}

}  // namespace detail

/// exp(t) / sum(exp(t)) along `dim`, computed stably (the row max is subtracted first).
/// A row of all -inf gives zeros (and a zero gradient) instead of NaN.
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> softmax(const Tensor<T>& t, std::int64_t dim) {
  return detail::softmax_op("softmax", t, dim, false);
}

/// t - log(sum(exp(t))) along `dim`, computed stably. A row of all -inf gives -inf (its
/// gradient is the output gradient passed through).
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> log_softmax(const Tensor<T>& t, std::int64_t dim) {
  return detail::softmax_op("log_softmax", t, dim, true);
}

/// softmax of a 16-bit tensor: computed in float (value and gradient) and rounded once; on
/// CUDA by the row kernels on the 16-bit values directly.
// t: [...] -> [...]
template <HalfElement T>
Tensor<T> softmax(const Tensor<T>& t, std::int64_t dim) {
  if (t.defined() && t.device().is_cuda()) return detail::cuda_softmax_op("softmax", t, dim, false);
  return detail::through_float([dim](const Tensor<float>& x) { return softmax(x, dim); }, t);
}

/// log_softmax of a 16-bit tensor: computed in float (value and gradient) and rounded
/// once; on CUDA directly.
// t: [...] -> [...]
template <HalfElement T>
Tensor<T> log_softmax(const Tensor<T>& t, std::int64_t dim) {
  if (t.defined() && t.device().is_cuda()) return detail::cuda_softmax_op("log_softmax", t, dim, true);
  return detail::through_float([dim](const Tensor<float>& x) { return log_softmax(x, dim); }, t);
}

}  // namespace condense

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
