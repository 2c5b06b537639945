// View ops: reshape/view, permute, transpose, narrow/slice/select, unsqueeze/squeeze,
// expand, flatten, contiguous and clone. Views share storage with their input and only
// change shape/strides/offset; each records a backward rule that maps the gradient back.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/strided.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense {
namespace detail {

/// A view of `t` with new geometry, sharing storage.
template <Element T>
Tensor<T> restride(const Tensor<T>& t, Shape shape, Strides strides, std::int64_t offset) {
  return Tensor<T>::from_storage(t.storage(), std::move(shape), std::move(strides), offset);
}

/// Copies `src` into the (possibly strided) view `dst` of the same shape and device.
template <Element T>
void copy_into(const Tensor<T>& dst, const Tensor<T>& src, std::string_view op) {
  CONDENSE_CHECK(dst.shape() == src.shape(), op, "copy between shapes ", src.shape(), " and ", dst.shape());
  CONDENSE_CHECK(dst.device() == src.device(), op, "copy between devices: ", src.device(), " -> ", dst.device());
  if (dst.device().is_cuda()) {
    cuda_copy_into(op, dst, src);
    return;
  }
  cpu::StridedLayout<2> layout(dst.shape(), {&dst.strides(), &src.strides()});
  T* d = dst.data();
  const T* s = src.data();
  cpu::for_each_row(layout, [&](const std::array<std::int64_t, 2>& off, std::int64_t n, const std::array<std::int64_t, 2>& st) {
    for (std::int64_t i = 0; i < n; ++i) d[off[0] + i * st[0]] = s[off[1] + i * st[1]];
  });
}

/// A contiguous tensor of zeros with `shape` on `device`.
template <Element T>
Tensor<T> zeros_on(const Shape& shape, Device device) {
  return Tensor<T>::from_storage(Storage::zeros(static_cast<std::size_t>(numel_of(shape)) * sizeof(T), device), shape,
                                 contiguous_strides(shape), 0);
}

/// Resolves one -1 in `requested` so that it has `numel` elements.
inline Shape infer_shape(std::string_view op, const Shape& from, Shape requested) {
  std::int64_t known = 1;
  std::size_t infer_at = requested.size();
  for (std::size_t i = 0; i < requested.size(); ++i) {
    if (requested[i] == -1) {
      CONDENSE_CHECK(infer_at == requested.size(), op, "only one -1 allowed in shape ", requested);
      infer_at = i;
    } else {
      CONDENSE_CHECK(requested[i] >= 0, op, "invalid extent in shape ", requested);
      known *= requested[i];
    }
  }
  const std::int64_t numel = numel_of(from);
  if (infer_at < requested.size()) {
    CONDENSE_CHECK(known > 0 && numel % known == 0, op, "cannot view ", from, " as ", requested);
    requested[infer_at] = numel / known;
  }
  CONDENSE_CHECK(numel_of(requested) == numel, op, "cannot view ", from, " (", numel, " elements) as ", requested);
  return requested;
}

}  // namespace detail

/// A copy of `t` laid out contiguously (or `t` itself when it already is).
// t: [...] -> [...]
template <Element T>
Tensor<T> contiguous(const Tensor<T>& t) {
  if (t.is_contiguous()) return t;
  Tensor<T> out = Tensor<T>::empty(t.shape(), t.device());
  if (t.device().is_cpu()) {
    cpu::copy_to_contiguous(t.data(), t.shape(), t.strides(), out.data());
  } else {
    detail::cuda_copy_into("contiguous", out, t);
  }
  if constexpr (DifferentiableElement<T>) {
    record<T>("contiguous", out, {t}, [](const Tensor<T>& g, GradSink& s) { s.add(0, g); });
  }
  return out;
}

/// A deep copy of `t` (new contiguous storage).
template <Element T>
Tensor<T> clone(const Tensor<T>& t) {
  Tensor<T> out = Tensor<T>::empty(t.shape(), t.device());
  if (t.device().is_cpu()) {
    if (t.numel() > 0) cpu::copy_to_contiguous(t.data(), t.shape(), t.strides(), out.data());
  } else {
    const Tensor<T> src = contiguous(t.detach());
    cuda::copy(out.data(), src.data(), static_cast<std::size_t>(t.numel()) * sizeof(T), cuda::CopyKind::DeviceToDevice,
               t.device().index, "clone");
  }
  if constexpr (DifferentiableElement<T>) {
    record<T>("clone", out, {t}, [](const Tensor<T>& g, GradSink& s) { s.add(0, g); });
  }
  return out;
}

/// Same data with a new shape; `t` must be contiguous. One extent may be -1.
// t: [...] -> shape
template <Element T>
Tensor<T> view(const Tensor<T>& t, const Shape& shape) {
  CONDENSE_CHECK(t.is_contiguous(), "view", "tensor of shape ", t.shape(), " with strides ", t.strides(),
                 " is not contiguous; use reshape()");
  const Shape target = detail::infer_shape("view", t.shape(), shape);
  Tensor<T> out = detail::restride(t, target, contiguous_strides(target), t.offset());
  if constexpr (DifferentiableElement<T>) {
    record<T>("view", out, {t}, [in_shape = t.shape()](const Tensor<T>& g, GradSink& s) { s.add(0, g.reshape(in_shape)); });
  }
  return out;
}

/// Same data with a new shape: a view when `t` is contiguous, a copy otherwise.
// t: [...] -> shape
template <Element T>
Tensor<T> reshape(const Tensor<T>& t, const Shape& shape) {
  const Shape target = detail::infer_shape("reshape", t.shape(), shape);
  return view(t.is_contiguous() ? t : contiguous(t), target);
}

/// Reorders dimensions: out.shape[i] = t.shape[order[i]].
template <Element T>
Tensor<T> permute(const Tensor<T>& t, const std::vector<std::int64_t>& order) {
  const std::size_t rank = t.shape().size();
  CONDENSE_CHECK(order.size() == rank, "permute", "order has ", order.size(), " entries for a tensor of shape ", t.shape());
  Shape shape{std::vector<std::int64_t>(rank)}, strides{std::vector<std::int64_t>(rank)};
  std::vector<std::int64_t> inverse(rank, -1);
  for (std::size_t i = 0; i < rank; ++i) {
    const std::size_t d = normalize_dim("permute", order[i], rank);
    CONDENSE_CHECK(inverse[d] < 0, "permute", "dim ", d, " repeated in order for shape ", t.shape());
    inverse[d] = static_cast<std::int64_t>(i);
    shape[i] = t.shape()[d];
    strides[i] = t.strides()[d];
  }
  Tensor<T> out = detail::restride(t, shape, strides, t.offset());
  if constexpr (DifferentiableElement<T>) {
    record<T>("permute", out, {t}, [inverse](const Tensor<T>& g, GradSink& s) { s.add(0, permute(g, inverse)); });
  }
  return out;
}

/// Swaps two dimensions.
template <Element T>
Tensor<T> transpose(const Tensor<T>& t, std::int64_t dim0, std::int64_t dim1) {
  const std::size_t rank = t.shape().size();
  std::vector<std::int64_t> order(rank);
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[normalize_dim("transpose", dim0, rank)], order[normalize_dim("transpose", dim1, rank)]);
  return permute(t, order);
}

/// Elements start, start+step, ... (< end) along `dim`. Negative start/end count from the end.
template <Element T>
Tensor<T> slice(const Tensor<T>& t, std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step = 1) {
  const std::size_t d = normalize_dim("slice", dim, t.shape().size());
  const std::int64_t n = t.shape()[d];
  CONDENSE_CHECK(step >= 1, "slice", "step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  end = std::min(end, n);
  CONDENSE_CHECK(start >= 0 && start <= n && end >= start, "slice", "range [", start, ", ", end, ") out of bounds for dim ",
                 d, " of shape ", t.shape());
  Shape shape = t.shape();
  Strides strides = t.strides();
  shape[d] = (end - start + step - 1) / step;
  strides[d] *= step;
  Tensor<T> out = detail::restride(t, shape, strides, t.offset() + start * t.strides()[d]);
  if constexpr (DifferentiableElement<T>) {
    record<T>("slice", out, {t}, [in_shape = t.shape(), d, start, end, step](const Tensor<T>& g, GradSink& s) {
      Tensor<T> full = detail::zeros_on<T>(in_shape, g.device());
      detail::copy_into(slice(full, static_cast<std::int64_t>(d), start, end, step), g, "slice backward");
      s.add(0, full);
    });
  }
  return out;
}

/// `length` elements of `dim` starting at `start`.
template <Element T>
Tensor<T> narrow(const Tensor<T>& t, std::int64_t dim, std::int64_t start, std::int64_t length) {
  const std::size_t d = normalize_dim("narrow", dim, t.shape().size());
  CONDENSE_CHECK(start >= 0 && length >= 0 && start + length <= t.shape()[d], "narrow", "range [", start, ", ",
                 start + length, ") out of bounds for dim ", d, " of shape ", t.shape());
  return slice(t, static_cast<std::int64_t>(d), start, start + length);
}

/// Inserts a dimension of extent 1 at `dim` (in [-rank-1, rank]).
template <Element T>
Tensor<T> unsqueeze(const Tensor<T>& t, std::int64_t dim) {
  const std::size_t d = normalize_dim("unsqueeze", dim, t.shape().size() + 1);
  Shape shape = t.shape();
  Strides strides = t.strides();
  const std::int64_t stride = d < strides.size() ? strides[d] * shape[d] : 1;
  shape.insert(d, 1);
  strides.insert(d, stride);
  Tensor<T> out = detail::restride(t, shape, strides, t.offset());
  if constexpr (DifferentiableElement<T>) {
    record<T>("unsqueeze", out, {t}, [d](const Tensor<T>& g, GradSink& s) { s.add(0, squeeze(g, static_cast<std::int64_t>(d))); });
  }
  return out;
}

/// Removes dimension `dim`, which must have extent 1.
template <Element T>
Tensor<T> squeeze(const Tensor<T>& t, std::int64_t dim) {
  const std::size_t d = normalize_dim("squeeze", dim, t.shape().size());
  CONDENSE_CHECK(t.shape()[d] == 1, "squeeze", "dim ", d, " of shape ", t.shape(), " has extent ", t.shape()[d], ", not 1");
  Shape shape = t.shape();
  Strides strides = t.strides();
  shape.erase(d);
  strides.erase(d);
  Tensor<T> out = detail::restride(t, shape, strides, t.offset());
  if constexpr (DifferentiableElement<T>) {
    record<T>("squeeze", out, {t}, [d](const Tensor<T>& g, GradSink& s) { s.add(0, unsqueeze(g, static_cast<std::int64_t>(d))); });
  }
  return out;
}

/// Removes every dimension of extent 1.
template <Element T>
Tensor<T> squeeze(const Tensor<T>& t) {
  Shape shape;
  for (auto d : t.shape())
    if (d != 1) shape.push_back(d);
  return reshape(t, shape);
}

/// Element `index` of `dim`, removing that dimension.
template <Element T>
Tensor<T> select(const Tensor<T>& t, std::int64_t dim, std::int64_t index) {
  const std::size_t d = normalize_dim("select", dim, t.shape().size());
  const std::int64_t n = t.shape()[d];
  CONDENSE_CHECK(index >= -n && index < n, "select", "index ", index, " out of range for dim ", d, " of shape ", t.shape());
  if (index < 0) index += n;
  return squeeze(narrow(t, static_cast<std::int64_t>(d), index, 1), static_cast<std::int64_t>(d));
}

/// Broadcasts `t` to `shape` without copying (stride 0 on expanded dims). -1 keeps a dim.
// t: [...] -> shape
template <Element T>
Tensor<T> expand(const Tensor<T>& t, const Shape& shape) {
  const Shape& in = t.shape();
  CONDENSE_CHECK(shape.size() >= in.size(), "expand", "cannot expand ", in, " to fewer dims ", shape);
  const std::size_t lead = shape.size() - in.size();
  Shape out_shape = shape;
  Strides strides(std::vector<std::int64_t>(shape.size(), 0));
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      CONDENSE_CHECK(shape[i] >= 0, "expand", "invalid extent in ", shape);
      continue;
    }
    const std::int64_t src = in[i - lead];
    if (shape[i] == -1 || shape[i] == src) {
      out_shape[i] = src;
      strides[i] = t.strides()[i - lead];
    } else {
      CONDENSE_CHECK(src == 1, "expand", "cannot expand ", in, " to ", shape);
    }
  }
  Tensor<T> out = detail::restride(t, out_shape, strides, t.offset());
  if constexpr (DifferentiableElement<T>) {
    record<T>("expand", out, {t}, [in](const Tensor<T>& g, GradSink& s) { s.add(0, sum_to(g, in)); });
  }
  return out;
}

/// Merges dims start_dim..end_dim into one.
template <Element T>
Tensor<T> flatten(const Tensor<T>& t, std::int64_t start_dim = 0, std::int64_t end_dim = -1) {
  if (t.shape().empty()) return reshape(t, Shape{1});
  const std::size_t s = normalize_dim("flatten", start_dim, t.shape().size());
  const std::size_t e = normalize_dim("flatten", end_dim, t.shape().size());
  CONDENSE_CHECK(s <= e, "flatten", "start_dim ", s, " after end_dim ", e);
  Shape shape;
  for (std::size_t i = 0; i < s; ++i) shape.push_back(t.shape()[i]);
  std::int64_t merged = 1;
  for (std::size_t i = s; i <= e; ++i) merged *= t.shape()[i];
  shape.push_back(merged);
  for (std::size_t i = e + 1; i < t.shape().size(); ++i) shape.push_back(t.shape()[i]);
  return reshape(t, shape);
}

// ---- Tensor members that forward to the view ops -----------------------------------------
template <Element T> Tensor<T> Tensor<T>::contiguous() const { return condense::contiguous(*this); }
template <Element T> Tensor<T> Tensor<T>::clone() const { return condense::clone(*this); }
template <Element T> Tensor<T> Tensor<T>::reshape(const Shape& s) const { return condense::reshape(*this, s); }
template <Element T> Tensor<T> Tensor<T>::view(const Shape& s) const { return condense::view(*this, s); }
template <Element T> Tensor<T> Tensor<T>::permute(const std::vector<std::int64_t>& o) const { return condense::permute(*this, o); }
template <Element T> Tensor<T> Tensor<T>::transpose(std::int64_t a, std::int64_t b) const { return condense::transpose(*this, a, b); }
template <Element T> Tensor<T> Tensor<T>::narrow(std::int64_t d, std::int64_t s, std::int64_t n) const { return condense::narrow(*this, d, s, n); }
template <Element T> Tensor<T> Tensor<T>::slice(std::int64_t d, std::int64_t s, std::int64_t e, std::int64_t st) const { return condense::slice(*this, d, s, e, st); }
template <Element T> Tensor<T> Tensor<T>::select(std::int64_t d, std::int64_t i) const { return condense::select(*this, d, i); }
template <Element T> Tensor<T> Tensor<T>::unsqueeze(std::int64_t d) const { return condense::unsqueeze(*this, d); }
template <Element T> Tensor<T> Tensor<T>::squeeze(std::int64_t d) const { return condense::squeeze(*this, d); }
template <Element T> Tensor<T> Tensor<T>::squeeze() const { return condense::squeeze(*this); }
template <Element T> Tensor<T> Tensor<T>::expand(const Shape& s) const { return condense::expand(*this, s); }
template <Element T> Tensor<T> Tensor<T>::flatten(std::int64_t a, std::int64_t b) const { return condense::flatten(*this, a, b); }

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
