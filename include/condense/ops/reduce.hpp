// Reductions over dims: sum, mean (and sum_to, which undoes broadcasting in backward
// rules). Each takes a list of dims (negative allowed; empty = all dims) and keepdim.
#pragma once

#include <cstdint>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/reduce.hpp"
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

/// Expands a reduced gradient back over the reduced dims of `in_shape`.
template <Element T>
Tensor<T> expand_reduced(const Tensor<T>& g, const Shape& in_shape, const std::vector<bool>& mask) {
  return g.reshape(reduced_shape(in_shape, mask, true)).expand(in_shape);
}

}  // namespace detail

/// Sum over `dims` (all when empty).
// t: [...] -> kept dims (1 where reduced if keepdim)
template <ArithmeticElement T>
Tensor<T> sum(const Tensor<T>& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  const auto mask = detail::reduce_mask("sum", t.shape(), dims);
  Tensor<T> out = detail::reduce_with("sum", t, mask, keepdim, cpu::SumReducer<T>{});
  if constexpr (FloatingElement<T>) {
    record<T>("sum", out, {t}, [in_shape = t.shape(), mask](const Tensor<T>& g, GradSink& s) {
      s.add(0, detail::expand_reduced(g, in_shape, mask));
    });
  }
  return out;
}

/// Mean over `dims` (all when empty).
// t: [...] -> kept dims (1 where reduced if keepdim)
template <FloatingElement T>
Tensor<T> mean(const Tensor<T>& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  const auto mask = detail::reduce_mask("mean", t.shape(), dims);
  Tensor<T> out = detail::reduce_with("mean", t, mask, keepdim, cpu::SumReducer<T>{true});
  const std::int64_t count = out.numel() == 0 ? 0 : t.numel() / out.numel();
  record<T>("mean", out, {t}, [in_shape = t.shape(), mask, count](const Tensor<T>& g, GradSink& s) {
    const T inv = count > 0 ? T(1) / static_cast<T>(count) : T(0);
    const Tensor<T> scaled = mul(g, inv);
    s.add(0, detail::expand_reduced(scaled, in_shape, mask));
  });
  return out;
}

/// Sums `g` down to `shape`, which must broadcast to g's shape (the backward of broadcasting).
// g: broadcast(shape) -> shape
template <ArithmeticElement T>
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
  Tensor<T> out = detail::reduce_with("sum_to", g, mask, false, cpu::SumReducer<T>{}).reshape(shape);
  if constexpr (FloatingElement<T>) {
    record<T>("sum_to", out, {g}, [gs](const Tensor<T>& grad, GradSink& s) { s.add(0, grad.expand(gs)); });
  }
  return out;
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
