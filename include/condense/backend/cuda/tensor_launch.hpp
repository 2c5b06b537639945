// The bridge from Tensor<T> to the CUDA launchers of backend/cuda/kernels.hpp: operand
// descriptions (broadcast strides, extent-1 dims dropped) and the tensor-level maps,
// copies, fills and reductions the op headers call for CUDA tensors. Nothing here records
// autograd; the ops do that around these calls.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "condense/backend/cuda/kernels.hpp"
#include "condense/core/shape.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense::detail {

/// Launcher operand for `t` iterated over `shape` (which t broadcasts to): stride 0 along
/// broadcast dims; dims of extent 1 in `shape` are dropped. Throws naming `op` when more
/// than cuda::max_dims dims remain.
template <Element T>
cuda::StridedArg cuda_arg(std::string_view op, const Tensor<T>& t, const Shape& shape) {
  cuda::StridedArg arg;
  arg.data = const_cast<void*>(static_cast<const void*>(t.data()));
  arg.dtype = dtype_of<T>;
  arg.device = t.device().index;
  const std::size_t lead = shape.size() - t.shape().size();
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    CONDENSE_CHECK(arg.ndim < cuda::max_dims, op, "CUDA kernels take at most ", cuda::max_dims,
                   " dims of extent > 1, got shape ", shape);
    const bool present = d >= lead && t.shape()[d - lead] != 1;
    arg.sizes[arg.ndim] = shape[d];
    arg.strides[arg.ndim] = present ? t.strides()[d - lead] : 0;
    ++arg.ndim;
  }
  return arg;
}

/// Launcher operand for `t` over its own shape.
template <Element T>
cuda::StridedArg cuda_arg(std::string_view op, const Tensor<T>& t) {
  return cuda_arg(op, t, t.shape());
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
  cuda::unary(kernel, cuda_arg(op, out), cuda_arg(op, a), op);
  return out;
}

/// out = f(a, b) with broadcasting on the GPU into a new contiguous tensor.
// a: [...], b: [...] -> broadcast(a, b)
template <Element T>
Tensor<T> cuda_binary_map(std::string_view op, const Tensor<T>& a, const Tensor<T>& b, cuda::BinaryKernel kernel) {
  check_cuda_operands<T>(op, {&a, &b});
  const Shape shape = broadcast_shapes(op, a.shape(), b.shape());
  Tensor<T> out = Tensor<T>::empty(shape, a.device());
  cuda::binary(kernel, cuda_arg(op, out, shape), cuda_arg(op, a, shape), cuda_arg(op, b, shape), op);
  return out;
}

/// dst = src (converted to dst's element type); equal shapes, dst may be any view.
template <Element D, Element S>
void cuda_copy_into(std::string_view op, const Tensor<D>& dst, const Tensor<S>& src) {
  CONDENSE_CHECK(dst.shape() == src.shape(), op, "copy from ", src.describe(), " into ", dst.describe());
  CONDENSE_CHECK(dst.device() == src.device(), op, "copy between devices: ", src.describe(), " into ", dst.describe());
  cuda::copy_strided(cuda_arg(op, dst), cuda_arg(op, src), op);
}

/// Every element of `t` (any view) set to `value`.
template <Element T>
void cuda_fill(std::string_view op, const Tensor<T>& t, double value) {
  cuda::fill(cuda_arg(op, t), value, op);
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
  // The view with kept dims first, then reduced dims (extent-1 dims dropped).
  cuda::StridedArg in;
  in.data = const_cast<void*>(static_cast<const void*>(t.data()));
  in.dtype = dtype_of<T>;
  in.device = t.device().index;
  int reduced = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t d = 0; d < mask.size(); ++d) {
      if (mask[d] != (pass == 1) || t.shape()[d] == 1) continue;
      CONDENSE_CHECK(in.ndim < cuda::max_dims, op, "CUDA reductions take at most ", cuda::max_dims,
                     " dims of extent > 1, got shape ", t.shape());
      in.sizes[in.ndim] = t.shape()[d];
      in.strides[in.ndim] = t.strides()[d];
      ++in.ndim;
      reduced += pass;
    }
  }
  cuda::reduce(reduction, cuda_arg(op, out), in, reduced, op);
  return out;
}

}  // namespace condense::detail
