// The bridge from Tensor<T> to the CUDA launchers of backend/cuda/kernels.hpp: operand
// descriptions (broadcast strides, extent-1 dims dropped) and the tensor-level maps,
// copies, fills and reductions the op headers call for CUDA tensors. Nothing here records
// autograd; the ops do that around these calls.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "condense/backend/cuda/kernels.hpp"
#include "condense/core/shape.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense::detail {

/// The fields of a launcher operand for `t` other than its dims: data, element type, device.
template <Element T>
cuda::StridedArg cuda_operand_of(const Tensor<T>& t) {
  cuda::StridedArg arg;
  arg.data = const_cast<void*>(static_cast<const void*>(t.data()));
  arg.dtype = dtype_of<T>;
  arg.device = t.device().index;
  return arg;
}

/// t's strides (in elements) walked over `shape`, which t broadcasts to: 0 along the
/// leading dims t lacks and along its extent-1 dims that `shape` widens.
template <Element T>
std::vector<std::int64_t> broadcast_strides(const Tensor<T>& t, const Shape& shape) {
  const std::size_t lead = shape.size() - t.shape().size();
  std::vector<std::int64_t> strides(shape.size(), 0);
  for (std::size_t d = lead; d < shape.size(); ++d)
    if (t.shape()[d - lead] != 1) strides[d] = t.strides()[d - lead];
  return strides;
}

/// Launcher operand for `t` iterated over `shape` (which t broadcasts to): stride 0 along
/// broadcast dims; dims of extent 1 in `shape` are dropped, the others kept apart (for
/// launchers that need the dims as they are: rows of a fixed rank). Throws naming `op`
/// when more than cuda::max_dims dims remain.
template <Element T>
cuda::StridedArg cuda_arg(std::string_view op, const Tensor<T>& t, const Shape& shape) {
  cuda::StridedArg arg = cuda_operand_of(t);
  const std::vector<std::int64_t> strides = broadcast_strides(t, shape);
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    CONDENSE_CHECK(arg.ndim < cuda::max_dims, op, "CUDA kernels take at most ", cuda::max_dims,
                   " dims of extent > 1, got shape ", shape);
    arg.sizes[arg.ndim] = shape[d];
    arg.strides[arg.ndim] = strides[d];
    ++arg.ndim;
  }
  return arg;
}

/// Launcher operand for `t` over its own shape.
template <Element T>
cuda::StridedArg cuda_arg(std::string_view op, const Tensor<T>& t) {
  return cuda_arg(op, t, t.shape());
}

/// Launcher operands for tensors walked together element by element over `shape` (each
/// broadcasts to it), their dims merged jointly first (cuda::coalesce_dims: extent-1 dims
/// dropped, neighbours merged wherever every operand allows), so that tensors of any rank
/// run as long as at most cuda::max_dims dims remain; throws naming `op` and the shape
/// otherwise. For the launchers that walk operands of one iteration shape (maps, copies,
/// fills, comparisons).
template <Element... Ts>
std::array<cuda::StridedArg, sizeof...(Ts)> cuda_args(std::string_view op, const Shape& shape, const Tensor<Ts>&... ts) {
  constexpr std::size_t n = sizeof...(Ts);
  std::array<cuda::StridedArg, n> args{cuda_operand_of(ts)...};
  std::array<std::vector<std::int64_t>, n> strides{broadcast_strides(ts, shape)...};
  std::vector<std::int64_t> sizes(shape.begin(), shape.end());
  std::array<std::int64_t*, n> stride_rows{};
  for (std::size_t k = 0; k < n; ++k) stride_rows[k] = strides[k].data();
  const int kept = cuda::coalesce_dims(sizes.data(), stride_rows.data(), static_cast<int>(n), static_cast<int>(sizes.size()));
  CONDENSE_CHECK(kept <= cuda::max_dims, op, "CUDA kernels take at most ", cuda::max_dims,
                 " dims after merging neighbours the operands' strides allow, got shape ", shape, " with ", kept,
                 " dims left");
  for (std::size_t k = 0; k < n; ++k) {
    args[k].ndim = kept;
    for (int d = 0; d < kept; ++d) {
      args[k].sizes[d] = sizes[static_cast<std::size_t>(d)];
      args[k].strides[d] = strides[k][static_cast<std::size_t>(d)];
    }
  }
  return args;
}

/// Throws naming `op` unless every tensor is defined and on the first one's device.
template <Element T>
void check_cuda_operands(std::string_view op, std::initializer_list<const Tensor<T>*> tensors) {
  const Device device = (*tensors.begin())->device();
  for (const Tensor<T>* t : tensors) {
    CONDENSE_CHECK(t->defined(), op, "undefined tensor argument");
    CONDENSE_CHECK(t->device() == device, op, "tensors on different devices: ", (*tensors.begin())->describe(), " and ",
                   t->describe());
  }
}

/// out = f(a) on the GPU into a new contiguous tensor.
// a: [...] -> [...]
template <Element T>
Tensor<T> cuda_unary_map(std::string_view op, const Tensor<T>& a, cuda::UnaryKernel kernel) {
  check_cuda_operands<T>(op, {&a});
  Tensor<T> out = Tensor<T>::empty(a.shape(), a.device());
  const auto [out_arg, a_arg] = cuda_args(op, a.shape(), out, a);
  cuda::unary(kernel, out_arg, a_arg, op);
  return out;
}

/// out = f(a, b) with broadcasting on the GPU into a new contiguous tensor.
// a: [...], b: [...] -> broadcast(a, b)
template <Element T>
Tensor<T> cuda_binary_map(std::string_view op, const Tensor<T>& a, const Tensor<T>& b, cuda::BinaryKernel kernel) {
  check_cuda_operands<T>(op, {&a, &b});
  const Shape shape = broadcast_shapes(op, a.shape(), b.shape());
  Tensor<T> out = Tensor<T>::empty(shape, a.device());
  const auto [out_arg, a_arg, b_arg] = cuda_args(op, shape, out, a, b);
  cuda::binary(kernel, out_arg, a_arg, b_arg, op);
  return out;
}

/// dst = src (converted to dst's element type); equal shapes, dst may be any view.
template <Element D, Element S>
void cuda_copy_into(std::string_view op, const Tensor<D>& dst, const Tensor<S>& src) {
  CONDENSE_CHECK(dst.shape() == src.shape(), op, "copy from ", src.describe(), " into ", dst.describe());
  CONDENSE_CHECK(dst.device() == src.device(), op, "copy between devices: ", src.describe(), " into ", dst.describe());
  const auto [dst_arg, src_arg] = cuda_args(op, dst.shape(), dst, src);
  cuda::copy_strided(dst_arg, src_arg, op);
}

/// Every element of `t` (any view) set to `value`.
template <Element T>
void cuda_fill(std::string_view op, const Tensor<T>& t, double value) {
  cuda::fill(cuda_args(op, t.shape(), t)[0], value, op);
}

/// A reduction over the `mask` dims of a CUDA tensor into a new tensor of the kept shape
/// (reduced dims kept as 1 when keepdim).
// t: [...] -> kept dims
template <Element T>
Tensor<T> cuda_reduce(std::string_view op, const Tensor<T>& t, const std::vector<bool>& mask, bool keepdim,
                      cuda::ReduceOp reduction) {
  check_cuda_operands<T>(op, {&t});
  Shape out_shape;
  for (std::size_t d = 0; d < mask.size(); ++d) {
    if (!mask[d]) out_shape.push_back(t.shape()[d]);
    else if (keepdim) out_shape.push_back(1);
  }
  Tensor<T> out = Tensor<T>::empty(out_shape, t.device());
  // The view with kept dims first, then reduced dims, each group merged on its own
  // (cuda::coalesce_dims), so any rank works while at most cuda::max_dims dims remain.
  cuda::StridedArg in = cuda_operand_of(t);
  int reduced = 0;
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<std::int64_t> sizes, strides;
    for (std::size_t d = 0; d < mask.size(); ++d) {
      if (mask[d] != (pass == 1)) continue;
      sizes.push_back(t.shape()[d]);
      strides.push_back(t.strides()[d]);
    }
    std::int64_t* stride_row = strides.data();
    const int kept = cuda::coalesce_dims(sizes.data(), &stride_row, 1, static_cast<int>(sizes.size()));
    CONDENSE_CHECK(in.ndim + kept <= cuda::max_dims, op, "CUDA reductions take at most ", cuda::max_dims,
                   " dims after merging neighbours, got shape ", t.shape(), " with ", in.ndim + kept, " dims left");
    for (int d = 0; d < kept; ++d) {
      in.sizes[in.ndim] = sizes[static_cast<std::size_t>(d)];
      in.strides[in.ndim] = strides[static_cast<std::size_t>(d)];
      ++in.ndim;
    }
    reduced = pass == 1 ? kept : 0;
  }
  cuda::reduce(reduction, cuda_args(op, out.shape(), out)[0], in, reduced, op);
  return out;
}

}  // namespace condense::detail
