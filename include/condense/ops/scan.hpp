// Scans along one dim: cumsum and cumprod, with backward rules, on the CPU and CUDA. Inputs
// are viewed as contiguous [outer, n, inner] (the scan dim in the middle, any dim allowed;
// strided inputs are copied once); the CPU kernels run parallel over outer x blocks of
// inner, with the inner block as the vectorised loop when the scan dim is not the last one.
// cumprod's backward divides by nothing, so inputs holding exact zeros get exact gradients.
// The 16-bit floats (bfloat16, float16) run through the float op: the running sum or
// product is kept in float and each output (and each gradient) is rounded once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/kernels.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"

namespace condense {
namespace detail {

/// Extents of a contiguous tensor seen as [outer, n, inner] around dim `d`.
struct ScanGeometry {
  std::int64_t outer = 1, n = 1, inner = 1;
};

/// Splits `shape` around dim `d`.
inline ScanGeometry scan_geometry(const Shape& shape, std::size_t d) {
  ScanGeometry g;
  for (std::size_t i = 0; i < d; ++i) g.outer *= shape[i];
  g.n = shape[d];
  for (std::size_t i = d + 1; i < shape.size(); ++i) g.inner *= shape[i];
  return g;
}

/// Width of the inner blocks a scan task owns (a stack array of this many accumulators).
inline constexpr std::int64_t scan_block = 256;

/// Calls fn(base, i0, i1) for every (outer index, block of inner positions [i0, i1)), where
/// base = outer index * n * inner is the element offset of that outer slice; split across threads.
template <class Fn>
void for_each_scan_block(const ScanGeometry& g, Fn&& fn) {
  const std::int64_t blocks = (g.inner + scan_block - 1) / scan_block;
  const std::int64_t tasks = g.outer * blocks;
  const std::int64_t work_per_task = std::max<std::int64_t>(1, g.n * std::min(g.inner, scan_block));
  const std::int64_t grain = std::max<std::int64_t>(1, 32768 / work_per_task);
  cpu::parallel_for(0, tasks, grain, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t o = t / blocks, b = t % blocks;
      const std::int64_t i0 = b * scan_block, i1 = std::min(g.inner, i0 + scan_block);
      fn(o * g.n * g.inner, i0, i1);
    }
  });
}

/// Inclusive scan of contiguous `in` into `out` along the middle dim of `g` with `op`
/// (running sum or product); `reverse` scans from the end.
template <class T, class Op>
void scan_kernel(const T* in, T* out, const ScanGeometry& g, bool reverse, Op op) {
  if (g.n == 0) return;
  const std::int64_t inner = g.inner, n = g.n;
  for_each_scan_block(g, [&](std::int64_t base, std::int64_t i0, std::int64_t i1) {
    if (inner == 1) {
      const T* x = in + base;
      T* y = out + base;
      if (!reverse) {
        T acc = x[0];
        y[0] = acc;
        for (std::int64_t k = 1; k < n; ++k) y[k] = acc = op(acc, x[k]);
      } else {
        T acc = x[n - 1];
        y[n - 1] = acc;
        for (std::int64_t k = n - 1; k-- > 0;) y[k] = acc = op(acc, x[k]);
      }
      return;
    }
    const std::int64_t first = reverse ? n - 1 : 0;
    const std::int64_t step = reverse ? -1 : 1;
    const T* x0 = in + base + first * inner;
    T* y0 = out + base + first * inner;
    for (std::int64_t i = i0; i < i1; ++i) y0[i] = x0[i];
    for (std::int64_t c = 1; c < n; ++c) {
      const std::int64_t k = first + c * step;
      const T* x = in + base + k * inner;
      const T* prev = out + base + (k - step) * inner;
      T* y = out + base + k * inner;
      for (std::int64_t i = i0; i < i1; ++i) y[i] = op(prev[i], x[i]);
    }
  });
}

/// Gradient of cumprod without division: with y = cumprod(x) and
/// S_j = sum_{k >= j} g_k * x_{j+1} * ... * x_k (so S_{n-1} = g_{n-1}, S_j = g_j + x_{j+1} S_{j+1}),
/// dL/dx_j = y_{j-1} * S_j (y_{-1} = 1). O(n) per line and exact when x holds zeros.
template <class T>
void cumprod_backward_kernel(const T* x, const T* y, const T* g, T* grad, const ScanGeometry& geo) {
  if (geo.n == 0) return;
  const std::int64_t inner = geo.inner, n = geo.n;
  for_each_scan_block(geo, [&](std::int64_t base, std::int64_t i0, std::int64_t i1) {
    T s[scan_block];
    const std::int64_t width = i1 - i0;
    const std::int64_t last = base + (n - 1) * inner + i0;
    for (std::int64_t i = 0; i < width; ++i) s[i] = g[last + i];
    for (std::int64_t k = n - 1;; --k) {
      const std::int64_t at = base + k * inner + i0;
      if (k == 0) {
        for (std::int64_t i = 0; i < width; ++i) grad[at + i] = s[i];
        break;
      }
      const std::int64_t before = at - inner;
      for (std::int64_t i = 0; i < width; ++i) {
        grad[at + i] = y[before + i] * s[i];
        s[i] = g[before + i] + x[at + i] * s[i];
      }
    }
  });
}

/// The CUDA launchers' description of contiguous `t` seen as `g`.
template <Element T>
cuda::LineGeometry cuda_lines(const Tensor<T>& t, const ScanGeometry& g) {
  cuda::LineGeometry l;
  l.dtype = dtype_of<T>;
  l.device = t.device().index;
  l.outer = g.outer;
  l.n = g.n;
  l.inner = g.inner;
  return l;
}

/// a + b (or a * b) for the scans: integers wrap around (two's complement, as the CUDA
/// kernels do) instead of overflowing, which C++ leaves undefined for signed types.
template <ArithmeticElement T, bool Product>
T scan_combine(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(Product ? static_cast<U>(a) * static_cast<U>(b) : static_cast<U>(a) + static_cast<U>(b));
  } else {
    return Product ? a * b : a + b;
  }
}

/// Inclusive running sum (or product) of contiguous `in` into `out` (same shape and device)
/// along the middle dim of `g`, on the CPU or the GPU; `reverse` scans from the end.
template <ArithmeticElement T>
void run_scan(std::string_view op, bool product, bool reverse, const Tensor<T>& in, const Tensor<T>& out,
              const ScanGeometry& g) {
  if (in.device().is_cuda()) {
    cuda::scan(product ? cuda::ScanOp::Prod : cuda::ScanOp::Sum, reverse, out.data(), in.data(), cuda_lines(in, g), op);
  } else if (product) {
    scan_kernel(in.data(), out.data(), g, reverse, [](T a, T b) { return scan_combine<T, true>(a, b); });
  } else {
    scan_kernel(in.data(), out.data(), g, reverse, [](T a, T b) { return scan_combine<T, false>(a, b); });
  }
}

/// Shared front of cumsum/cumprod: validates, resolves the dim and returns the input as a
/// contiguous detached tensor (a scalar is treated as shape (1)).
template <ArithmeticElement T>
Tensor<T> scan_input(std::string_view op, const Tensor<T>& t, std::int64_t dim, std::size_t& d) {
  CONDENSE_CHECK(t.defined(), op, "undefined tensor argument");
  if (t.dim() == 0) {
    d = normalize_dim(op, dim, 1);
    return t.detach().reshape({1});
  }
  d = normalize_dim(op, dim, t.shape().size());
  return t.detach().contiguous();
}

}  // namespace detail

/// Running sum along `dim`: out[..., k, ...] = sum_{j <= k} t[..., j, ...]. Integer inputs
/// keep their type (int32 may overflow where PyTorch would promote to int64).
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> cumsum(const Tensor<T>& t, std::int64_t dim) {
  std::size_t d = 0;
  const Tensor<T> x = detail::scan_input("cumsum", t, dim, d);
  Tensor<T> out = Tensor<T>::empty(t.shape(), t.device());
  detail::run_scan("cumsum", false, false, x, out, detail::scan_geometry(x.shape(), d));
  if constexpr (FloatingElement<T>) {
    record<T>("cumsum", out, {t}, [d, shape = t.shape()](const Tensor<T>& g, GradSink& s) {
      // d/dx_j sum_k g_k y_k = sum_{k >= j} g_k: a reversed running sum of g.
      const Tensor<T> gc = g.contiguous().reshape(shape.empty() ? Shape{1} : shape);
      Tensor<T> grad = Tensor<T>::empty(shape, g.device());
      detail::run_scan("cumsum backward", false, true, gc, grad, detail::scan_geometry(gc.shape(), d));
      s.add(0, grad);
    });
  }
  return out;
}

/// Running product along `dim`: out[..., k, ...] = prod_{j <= k} t[..., j, ...]. The backward
/// is division-free (O(n) per line) and exact when the input holds zeros.
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> cumprod(const Tensor<T>& t, std::int64_t dim) {
  std::size_t d = 0;
  const Tensor<T> x = detail::scan_input("cumprod", t, dim, d);
  Tensor<T> out = Tensor<T>::empty(t.shape(), t.device());
  detail::run_scan("cumprod", true, false, x, out, detail::scan_geometry(x.shape(), d));
  if constexpr (FloatingElement<T>) {
    record<T>("cumprod", out, {t}, [d, x, y = out.detach()](const Tensor<T>& g, GradSink& s) {
      const Tensor<T> gc = g.contiguous();
      Tensor<T> grad = Tensor<T>::empty(g.shape(), g.device());
      const detail::ScanGeometry geo = detail::scan_geometry(x.shape(), d);
      if (x.device().is_cuda()) {
        cuda::cumprod_backward(grad.data(), x.data(), y.data(), gc.data(), detail::cuda_lines(x, geo), "cumprod backward");
      } else {
        detail::cumprod_backward_kernel(x.data(), y.data(), gc.data(), grad.data(), geo);
      }
      s.add(0, grad);
    });
  }
  return out;
}

/// Running sum of a 16-bit tensor along `dim`, through float: accumulated in float, each
/// output rounded once; the gradient (a reversed running sum) likewise.
// t: [...] -> [...]
template <HalfElement T>
Tensor<T> cumsum(const Tensor<T>& t, std::int64_t dim) {
  return detail::through_float([dim](const Tensor<float>& x) { return cumsum(x, dim); }, t);
}

/// Running product of a 16-bit tensor along `dim`, through float: accumulated in float, each
/// output rounded once; the gradient is the float gradient rounded once.
// t: [...] -> [...]
template <HalfElement T>
Tensor<T> cumprod(const Tensor<T>& t, std::int64_t dim) {
  return detail::through_float([dim](const Tensor<float>& x) { return cumprod(x, dim); }, t);
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
