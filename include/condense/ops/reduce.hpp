// Reductions over dims: sum, mean (and sum_to, which undoes broadcasting in backward
// rules), amax/amin, logsumexp — each takes a list of dims (negative allowed; empty = all
// dims) and keepdim — and the single-dim max/min (values and indices) and argmax/argmin.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/reduce.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense {
namespace detail {

/// Marks the reduced dims; an empty list means every dim.
inline std::vector<bool> reduce_mask(std::string_view op, const Shape& shape, const std::vector<std::int64_t>& dims) {
  std::vector<bool> mask(shape.size(), dims.empty());
  for (auto d : dims) {
    const std::size_t nd = normalize_dim(op, d, shape.size());
    CONDENSE_CHECK(!mask[nd], op, "dim ", nd, " listed twice for shape ", shape);
    mask[nd] = true;
  }
  return mask;
}

/// Shape after reducing `mask` dims (kept as 1 when keepdim).
inline Shape reduced_shape(const Shape& shape, const std::vector<bool>& mask, bool keepdim) {
  Shape out;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (!mask[d]) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

/// Runs a CPU reducer over the masked dims into a new tensor of the kept shape.
template <Element T, class Reducer>
Tensor<T> reduce_with(std::string_view op, const Tensor<T>& t, const std::vector<bool>& mask, bool keepdim,
                      const Reducer& reducer) {
  CONDENSE_CHECK(t.device().is_cpu(), op, "no kernel for ", t.describe(), " in this build (CPU only so far)");
  Tensor<T> out = Tensor<T>::empty(reduced_shape(t.shape(), mask, keepdim), t.device());
  if (t.numel() == 0) {
    for (std::int64_t i = 0; i < out.numel(); ++i) out.data()[i] = reducer.finish(reducer.init(), 0);
    return out;
  }
  cpu::reduce_dims(t.data(), t.shape(), t.strides(), mask, out.data(), reducer);
  return out;
}

/// reduce_with on the CPU; the CUDA reduction `cuda_op` for CUDA tensors.
template <Element T, class Reducer>
Tensor<T> reduce_with(std::string_view op, const Tensor<T>& t, const std::vector<bool>& mask, bool keepdim,
                      const Reducer& reducer, cuda::ReduceOp cuda_op) {
  if (t.defined() && t.device().is_cuda()) return cuda_reduce(op, t, mask, keepdim, cuda_op);
  return reduce_with(op, t, mask, keepdim, reducer);
}

/// The sum (or the mean) of `t` over the `mask` dims. The 16-bit floats accumulate in float
/// on either device and round once.
// t: [...] -> kept dims
template <NumericElement T>
Tensor<T> sum_over(std::string_view op, const Tensor<T>& t, const std::vector<bool>& mask, bool keepdim, bool mean) {
  const cuda::ReduceOp cuda_op = mean ? cuda::ReduceOp::Mean : cuda::ReduceOp::Sum;
  if constexpr (HalfElement<T>) {
    if (t.defined() && t.device().is_cuda()) return cuda_reduce(op, t, mask, keepdim, cuda_op);
    const Tensor<float> wide = t.detach().template cast<float>();
    return reduce_with(op, wide, mask, keepdim, cpu::SumReducer<float>{mean}).template cast<T>();
  } else {
    return reduce_with(op, t, mask, keepdim, cpu::SumReducer<T>{mean}, cuda_op);
  }
}

/// Expands a reduced gradient back over the reduced dims of `in_shape`.
template <Element T>
Tensor<T> expand_reduced(const Tensor<T>& g, const Shape& in_shape, const std::vector<bool>& mask) {
  return g.reshape(reduced_shape(in_shape, mask, true)).expand(in_shape);
}

}  // namespace detail

/// Sum over `dims` (all when empty).
// t: [...] -> kept dims (1 where reduced if keepdim)
template <NumericElement T>
Tensor<T> sum(const Tensor<T>& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  const auto mask = detail::reduce_mask("sum", t.shape(), dims);
  Tensor<T> out = detail::sum_over("sum", t, mask, keepdim, false);
  if constexpr (DifferentiableElement<T>) {
    record<T>("sum", out, {t}, [in_shape = t.shape(), mask](const Tensor<T>& g, GradSink& s) {
      s.add(0, detail::expand_reduced(g, in_shape, mask));
    });
  }
  return out;
}

/// Mean over `dims` (all when empty).
// t: [...] -> kept dims (1 where reduced if keepdim)
template <DifferentiableElement T>
Tensor<T> mean(const Tensor<T>& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  const auto mask = detail::reduce_mask("mean", t.shape(), dims);
  Tensor<T> out = detail::sum_over("mean", t, mask, keepdim, true);
  const std::int64_t count = out.numel() == 0 ? 0 : t.numel() / out.numel();
  record<T>("mean", out, {t}, [in_shape = t.shape(), mask, count](const Tensor<T>& g, GradSink& s) {
    using C = compute_type_t<T>;  // 1/count stays in float for the 16-bit types
    const Tensor<T> scaled = mul(g, count > 0 ? C(1) / static_cast<C>(count) : C(0));
    s.add(0, detail::expand_reduced(scaled, in_shape, mask));
  });
  return out;
}

/// Sums `g` down to `shape`, which must broadcast to g's shape (the backward of broadcasting).
// g: broadcast(shape) -> shape
template <NumericElement T>
Tensor<T> sum_to(const Tensor<T>& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const Shape& gs = g.shape();
  CONDENSE_CHECK(gs.size() >= shape.size(), "sum_to", "cannot reduce ", gs, " to ", shape);
  const std::size_t lead = gs.size() - shape.size();
  std::vector<bool> mask(gs.size(), false);
  for (std::size_t d = 0; d < gs.size(); ++d) {
    if (d < lead) { mask[d] = true; continue; }
    const std::int64_t want = shape[d - lead];
    CONDENSE_CHECK(want == gs[d] || want == 1, "sum_to", "cannot reduce ", gs, " to ", shape);
    mask[d] = want == 1 && gs[d] != 1;
  }
  Tensor<T> out = detail::sum_over("sum_to", g, mask, false, false).reshape(shape);
  if constexpr (DifferentiableElement<T>) {
    record<T>("sum_to", out, {g}, [gs](const Tensor<T>& grad, GradSink& s) { s.add(0, grad.expand(gs)); });
  }
  return out;
}

// ---- max / min / argmax / logsumexp ------------------------------------------------------

/// Values and positions returned by max(t, dim) and min(t, dim).
template <Element T>
struct MaxResult {
  Tensor<T> values;              ///< the extreme values
  Tensor<std::int64_t> indices;  ///< their positions along the reduced dim
};

namespace detail {

/// Throws unless `t` is a defined tensor.
template <Element T>
void check_reduce_input(std::string_view op, const Tensor<T>& t) {
  CONDENSE_CHECK(t.defined(), op, "undefined tensor argument");
}

/// Throws when one of the reduced dims has extent 0 (max/min/argmax have no identity).
inline void check_nonempty_reduction(std::string_view op, const Shape& shape, const std::vector<bool>& mask) {
  for (std::size_t d = 0; d < shape.size(); ++d)
    CONDENSE_CHECK(!mask[d] || shape[d] != 0, op, "cannot reduce over dim ", d, " of extent 0 in shape ", shape);
}

/// How to_rows() laid a tensor out: the permutation (kept dims, then reduced dims), the
/// permuted shape, and the [rows, cols] = [kept elements, reduced elements] view.
struct RowsLayout {
  std::vector<std::int64_t> order;
  Shape permuted;
  std::int64_t rows = 1, cols = 1;
};

/// A contiguous [rows, cols] tensor holding `t` with the `mask` dims moved last (no copy when
/// they already are and `t` is contiguous). Call on detached tensors.
template <Element T>
Tensor<T> to_rows(const Tensor<T>& t, const std::vector<bool>& mask, RowsLayout& layout) {
  layout = RowsLayout{};
  for (std::size_t d = 0; d < mask.size(); ++d)
    if (!mask[d]) layout.order.push_back(static_cast<std::int64_t>(d)), layout.rows *= t.shape()[d];
  for (std::size_t d = 0; d < mask.size(); ++d)
    if (mask[d]) layout.order.push_back(static_cast<std::int64_t>(d)), layout.cols *= t.shape()[d];
  const Tensor<T> permuted = t.permute(layout.order);
  layout.permuted = permuted.shape();
  return permuted.contiguous().view({layout.rows, layout.cols});
}

/// Inverse of to_rows(): a [rows, cols] tensor back in the original dim order (a view).
template <Element T>
Tensor<T> from_rows(const Tensor<T>& rows, const RowsLayout& layout) {
  std::vector<std::int64_t> inverse(layout.order.size());
  for (std::size_t i = 0; i < layout.order.size(); ++i) inverse[static_cast<std::size_t>(layout.order[i])] = static_cast<std::int64_t>(i);
  return rows.reshape(layout.permuted).permute(inverse);
}

/// amax/amin over the masked dims (kept shape, keepdim applied).
template <ArithmeticElement T, bool IsMax>
Tensor<T> extremum(std::string_view op, const Tensor<T>& t, const std::vector<std::int64_t>& dims, bool keepdim) {
  check_reduce_input(op, t);
  const auto mask = reduce_mask(op, t.shape(), dims);
  check_nonempty_reduction(op, t.shape(), mask);
  if (t.device().is_cuda()) {
    Tensor<T> out = cuda_reduce(op, t, mask, keepdim, IsMax ? cuda::ReduceOp::Max : cuda::ReduceOp::Min);
    if constexpr (FloatingElement<T>) {
      record<T>(op, out, {t}, [x = t.detach(), out = out.detach(), mask, op_name = std::string(op)](const Tensor<T>& g,
                                                                                                  GradSink& s) {
        // g split evenly among the inputs equal to their output (NaN matches NaN).
        RowsLayout layout;
        const Tensor<T> xr = to_rows(x, mask, layout);
        const Tensor<T> gc = g.contiguous(), vc = out.contiguous();
        Tensor<T> grad = Tensor<T>::empty({layout.rows, layout.cols}, x.device());
        cuda::row_backward(cuda::RowBackward::Extremum, cuda_arg(op_name, grad), cuda_arg(op_name, xr), cuda_arg(op_name, vc),
                           cuda_arg(op_name, gc), layout.rows, layout.cols, op_name);
        s.add(0, from_rows(grad, layout));
      });
    }
    return out;
  }
  Tensor<T> out = Tensor<T>::empty(reduced_shape(t.shape(), mask, keepdim), t.device());
  cpu::reduce_dims(t.data(), t.shape(), t.strides(), mask, out.data(), cpu::ExtremumReducer<T, IsMax>{});
  if constexpr (FloatingElement<T>) {
    record<T>(op, out, {t}, [x = t.detach(), out = out.detach(), mask](const Tensor<T>& g, GradSink& s) {
      // The gradient of each output is split evenly among the inputs equal to it (NaN
      // matches NaN), like PyTorch's amax/amin.
      RowsLayout layout;
      const Tensor<T> xr = to_rows(x, mask, layout);
      const Tensor<T> gc = g.contiguous();
      Tensor<T> grad = Tensor<T>::empty({layout.rows, layout.cols});
      const T* px = xr.data();
      const T* pv = out.data();
      const T* pg = gc.data();
      T* po = grad.data();
      const std::int64_t n = layout.cols;
      cpu::parallel_for(0, layout.rows, std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(n, 1)),
                        [&](std::int64_t r0, std::int64_t r1) {
                          for (std::int64_t r = r0; r < r1; ++r) {
                            const T v = pv[r];
                            const T* xrow = px + r * n;
                            T* orow = po + r * n;
                            std::int64_t count = 0;
                            for (std::int64_t j = 0; j < n; ++j) count += (xrow[j] == v || (xrow[j] != xrow[j] && v != v));
                            const T share = count > 0 ? pg[r] / static_cast<T>(count) : T(0);
                            for (std::int64_t j = 0; j < n; ++j)
                              orow[j] = (xrow[j] == v || (xrow[j] != xrow[j] && v != v)) ? share : T(0);
                          }
                        });
      s.add(0, from_rows(grad, layout));
    });
  }
  return out;
}

/// A zero tensor of `in_shape` with g[m] placed at position indices[m] along `dim` (g and
/// indices: the reduced shape, keepdim or not, same element order).
template <FloatingElement T>
Tensor<T> scatter_along_dim(const Tensor<T>& g, const Tensor<std::int64_t>& indices, const Shape& in_shape, std::size_t dim) {
  Tensor<T> out = Tensor<T>::from_storage(Storage::zeros(static_cast<std::size_t>(numel_of(in_shape)) * sizeof(T), Device::cpu()),
                                          in_shape, contiguous_strides(in_shape), 0);
  const Tensor<T> gc = g.contiguous();
  std::int64_t outer = 1, inner = 1;
  for (std::size_t d = 0; d < dim; ++d) outer *= in_shape[d];
  for (std::size_t d = dim + 1; d < in_shape.size(); ++d) inner *= in_shape[d];
  const std::int64_t n = in_shape[dim];
  const T* pg = gc.data();
  const std::int64_t* pi = indices.data();
  T* po = out.data();
  cpu::parallel_for(0, outer * inner, 32768, [&](std::int64_t m0, std::int64_t m1) {
    for (std::int64_t m = m0; m < m1; ++m) {
      const std::int64_t o = m / inner, i = m % inner;
      po[(o * n + pi[m]) * inner + i] = pg[m];
    }
  });
  return out;
}

/// max/min over one dim: values, first position of the extreme (NaN wins), gradient to that position.
template <ArithmeticElement T, bool IsMax>
MaxResult<T> extremum_dim(std::string_view op, const Tensor<T>& t, std::int64_t dim, bool keepdim, bool want_values) {
  check_reduce_input(op, t);
  if (t.dim() == 0) {  // a scalar has one position along dim 0 (or -1)
    normalize_dim(op, dim, 1);
    return extremum_dim<T, IsMax>(op, t.reshape({1}), 0, false, want_values);
  }
  const std::size_t d = normalize_dim(op, dim, t.shape().size());
  std::vector<bool> mask(t.shape().size(), false);
  mask[d] = true;
  check_nonempty_reduction(op, t.shape(), mask);
  const Shape out_shape = reduced_shape(t.shape(), mask, keepdim);
  MaxResult<T> result;
  result.indices = Tensor<std::int64_t>::empty(out_shape, t.device());
  if (want_values) result.values = Tensor<T>::empty(out_shape, t.device());
  if (t.device().is_cuda()) {
    const Tensor<T> x = t.detach().contiguous();
    cuda::LineGeometry geo;
    geo.dtype = dtype_of<T>;
    geo.device = t.device().index;
    for (std::size_t i = 0; i < d; ++i) geo.outer *= t.shape()[i];
    geo.n = t.shape()[d];
    for (std::size_t i = d + 1; i < t.shape().size(); ++i) geo.inner *= t.shape()[i];
    cuda::arg_reduce(IsMax, want_values ? static_cast<void*>(result.values.data()) : nullptr, result.indices.data(), x.data(),
                     geo, op);
    if constexpr (FloatingElement<T>) {
      if (want_values) {
        record<T>(op, result.values, {t}, [in_shape = t.shape(), indices = result.indices, geo](const Tensor<T>& g,
                                                                                                  GradSink& s) {
          // g placed at the chosen position of each line, zero elsewhere.
          const Tensor<T> gc = g.contiguous();
          Tensor<T> grad = Tensor<T>::empty(in_shape, g.device());
          cuda::place_at_indices(grad.data(), gc.data(), indices.data(), geo, "max backward");
          s.add(0, grad);
        });
      }
    }
    return result;
  }
  T* pv = want_values ? result.values.data() : nullptr;
  std::int64_t* pi = result.indices.data();
  cpu::reduce_dims_store(t.data(), t.shape(), t.strides(), mask, cpu::ArgReducer<T, IsMax>{},
                         [&](std::int64_t m, const cpu::ArgAcc<T>& acc, std::int64_t) {
                           if (pv) pv[m] = acc.value;
                           pi[m] = acc.index;
                         });
  if constexpr (FloatingElement<T>) {
    if (want_values) {
      record<T>(op, result.values, {t}, [in_shape = t.shape(), indices = result.indices, d](const Tensor<T>& g, GradSink& s) {
        s.add(0, scatter_along_dim(g, indices, in_shape, d));
      });
    }
  }
  return result;
}

/// Position of the first extreme element of the flattened tensor (row-major), as a 0-dim tensor.
template <ArithmeticElement T, bool IsMax>
Tensor<std::int64_t> arg_extremum_flat(std::string_view op, const Tensor<T>& t) {
  check_reduce_input(op, t);
  CONDENSE_CHECK(t.numel() > 0, op, "cannot reduce a tensor with no elements (shape ", t.shape(), ")");
  Tensor<std::int64_t> out = Tensor<std::int64_t>::empty({}, t.device());
  if (t.device().is_cuda()) {
    const Tensor<T> x = t.detach().contiguous();
    cuda::LineGeometry geo;
    geo.dtype = dtype_of<T>;
    geo.device = t.device().index;
    geo.n = t.numel();
    cuda::arg_reduce(IsMax, nullptr, out.data(), x.data(), geo, op);
    return out;
  }
  std::int64_t* po = out.data();
  cpu::reduce_dims_store(t.data(), t.shape(), t.strides(), std::vector<bool>(t.shape().size(), true),
                         cpu::ArgReducer<T, IsMax>{},
                         [&](std::int64_t, const cpu::ArgAcc<T>& acc, std::int64_t) { *po = acc.index; });
  return out;
}

}  // namespace detail

/// Largest value over `dims` (all when empty); NaN propagates. The gradient of each output
/// is split evenly among the inputs equal to it. Throws when a reduced dim has extent 0.
// t: [...] -> kept dims (1 where reduced if keepdim)
template <ArithmeticElement T>
Tensor<T> amax(const Tensor<T>& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  return detail::extremum<T, true>("amax", t, dims, keepdim);
}

/// Smallest value over `dims` (all when empty); NaN propagates. The gradient of each output
/// is split evenly among the inputs equal to it. Throws when a reduced dim has extent 0.
// t: [...] -> kept dims (1 where reduced if keepdim)
template <ArithmeticElement T>
Tensor<T> amin(const Tensor<T>& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  return detail::extremum<T, false>("amin", t, dims, keepdim);
}

/// Largest value along `dim` and its position (the first one on ties; the first NaN wins).
/// The gradient goes to that position only. Throws when `dim` has extent 0.
// t: [..., n, ...] -> values, indices: [..., ...] ([..., 1, ...] if keepdim)
template <ArithmeticElement T>
MaxResult<T> max(const Tensor<T>& t, std::int64_t dim, bool keepdim = false) {
  return detail::extremum_dim<T, true>("max", t, dim, keepdim, true);
}

/// Smallest value along `dim` and its position (the first one on ties; the first NaN wins).
/// The gradient goes to that position only. Throws when `dim` has extent 0.
// t: [..., n, ...] -> values, indices: [..., ...] ([..., 1, ...] if keepdim)
template <ArithmeticElement T>
MaxResult<T> min(const Tensor<T>& t, std::int64_t dim, bool keepdim = false) {
  return detail::extremum_dim<T, false>("min", t, dim, keepdim, true);
}

/// Position of the largest value along `dim` (first on ties; the first NaN wins).
// t: [..., n, ...] -> [..., ...] ([..., 1, ...] if keepdim), int64
template <ArithmeticElement T>
Tensor<std::int64_t> argmax(const Tensor<T>& t, std::int64_t dim, bool keepdim = false) {
  return detail::extremum_dim<T, true>("argmax", t, dim, keepdim, false).indices;
}

/// Position of the smallest value along `dim` (first on ties; the first NaN wins).
// t: [..., n, ...] -> [..., ...] ([..., 1, ...] if keepdim), int64
template <ArithmeticElement T>
Tensor<std::int64_t> argmin(const Tensor<T>& t, std::int64_t dim, bool keepdim = false) {
  return detail::extremum_dim<T, false>("argmin", t, dim, keepdim, false).indices;
}

/// Row-major position of the largest value of the flattened tensor (first on ties).
// t: [...] -> [] (int64)
template <ArithmeticElement T>
Tensor<std::int64_t> argmax(const Tensor<T>& t) {
  return detail::arg_extremum_flat<T, true>("argmax", t);
}

/// Row-major position of the smallest value of the flattened tensor (first on ties).
// t: [...] -> [] (int64)
template <ArithmeticElement T>
Tensor<std::int64_t> argmin(const Tensor<T>& t) {
  return detail::arg_extremum_flat<T, false>("argmin", t);
}

/// log(sum(exp(t))) over `dims` (all when empty), computed stably as m + log(sum(exp(t - m)))
/// with m the max. A reduction over only -inf values (or over an empty dim) gives -inf, one
/// holding +inf gives +inf, NaN propagates. Gradient: softmax of the inputs times the
/// output gradient; zero where the result is -inf.
// t: [...] -> kept dims (1 where reduced if keepdim)
template <FloatingElement T>
Tensor<T> logsumexp(const Tensor<T>& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  detail::check_reduce_input("logsumexp", t);
  const auto mask = detail::reduce_mask("logsumexp", t.shape(), dims);
  detail::RowsLayout layout;
  const Tensor<T> rows = detail::to_rows(t.detach(), mask, layout);
  Tensor<T> out = Tensor<T>::empty(detail::reduced_shape(t.shape(), mask, keepdim), t.device());
  if (t.device().is_cuda()) {
    constexpr std::string_view op = "logsumexp";
    cuda::logsumexp_rows(detail::cuda_arg(op, out), detail::cuda_arg(op, rows), layout.rows, layout.cols, op);
  } else {
    cpu::logsumexp_rows(rows.data(), out.data(), layout.rows, layout.cols);
  }
  record<T>("logsumexp", out, {t}, [x = t.detach(), out = out.detach(), mask](const Tensor<T>& g, GradSink& s) {
    detail::RowsLayout layout;
    const Tensor<T> xr = detail::to_rows(x, mask, layout);
    const Tensor<T> gc = g.contiguous();
    Tensor<T> grad = Tensor<T>::empty({layout.rows, layout.cols}, x.device());
    if (x.device().is_cuda()) {
      constexpr std::string_view op = "logsumexp backward";
      cuda::row_backward(cuda::RowBackward::LogSumExp, detail::cuda_arg(op, grad), detail::cuda_arg(op, xr),
                         detail::cuda_arg(op, out), detail::cuda_arg(op, gc), layout.rows, layout.cols, op);
    } else {
      cpu::logsumexp_rows_backward(xr.data(), out.data(), gc.data(), grad.data(), layout.rows, layout.cols);
    }
    s.add(0, detail::from_rows(grad, layout));
  });
  return out;
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
