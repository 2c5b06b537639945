// The bridge from Tensor<T> to the CUDA launchers of backend/cuda/kernels.hpp: operand
// descriptions (broadcast strides, extent-1 dims dropped) and the tensor-level maps,
// copies, fills and reductions the op headers call for CUDA tensors. Nothing here records
// autograd; the ops do that around these calls.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <utility>
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

/// The dims of N launcher operands walked together, collected group by group: each group's
/// dims merged on their own (cuda::coalesce_dims: extent-1 dims dropped, neighbours merged
/// wherever every operand allows) or kept as they are. The one place that turns merged
/// sizes and strides into cuda::StridedArg dims (maps, indexing, reductions).
template <std::size_t N>
class MergedDims {
 public:
  /// Appends the dims `sizes`, operand k's strides along them in `strides[k]` (each as long
  /// as `sizes`), merged jointly when `merge`, as they are otherwise.
  void append(std::vector<std::int64_t> sizes, std::array<std::vector<std::int64_t>, N> strides, bool merge) {
    std::array<std::int64_t*, N> rows{};
    for (std::size_t k = 0; k < N; ++k) rows[k] = strides[k].data();
    const auto n = static_cast<int>(sizes.size());
    const auto kept = static_cast<std::ptrdiff_t>(merge ? cuda::coalesce_dims(sizes.data(), rows.data(), static_cast<int>(N), n) : n);
    sizes_.insert(sizes_.end(), sizes.begin(), sizes.begin() + kept);
    for (std::size_t k = 0; k < N; ++k) strides_[k].insert(strides_[k].end(), strides[k].begin(), strides[k].begin() + kept);
  }
  /// The dims collected so far.
  int ndim() const { return static_cast<int>(sizes_.size()); }
  /// Sets the dims of args[0..N) to the collected ones; throws naming `op` and `shape` (what
  /// the launch walks: "CUDA kernels", "CUDA indexing", ...) when more than cuda::max_dims remain.
  void write(std::string_view op, std::string_view what, const Shape& shape, cuda::StridedArg* args) const {
    CONDENSE_CHECK(ndim() <= cuda::max_dims, op, what, " take at most ", cuda::max_dims,
                   " dims after merging neighbours the operands' strides allow, got shape ", shape, " with ", ndim(),
                   " dims left");
    for (std::size_t k = 0; k < N; ++k) {
      args[k].ndim = ndim();
      for (std::size_t d = 0; d < sizes_.size(); ++d) {
        args[k].sizes[d] = sizes_[d];
        args[k].strides[d] = strides_[k][d];
      }
    }
  }

 private:
  std::vector<std::int64_t> sizes_;
  std::array<std::vector<std::int64_t>, N> strides_;
};

/// Launcher operands for tensors walked together element by element over `shape` (each
/// broadcasts to it), their dims merged jointly first (MergedDims), so that tensors of any
/// rank run as long as at most cuda::max_dims dims remain; throws naming `op` and the shape
/// otherwise. For the launchers that walk operands of one iteration shape (maps, copies,
/// fills, comparisons).
template <Element... Ts>
std::array<cuda::StridedArg, sizeof...(Ts)> cuda_args(std::string_view op, const Shape& shape, const Tensor<Ts>&... ts) {
  constexpr std::size_t n = sizeof...(Ts);
  std::array<cuda::StridedArg, n> args{cuda_operand_of(ts)...};
  MergedDims<n> dims;
  dims.append(std::vector<std::int64_t>(shape.begin(), shape.end()), {broadcast_strides(ts, shape)...}, true);
  dims.write(op, "CUDA kernels", shape, args.data());
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
  // The view with kept dims first, then reduced dims, each group merged on its own, so any
  // rank works while at most cuda::max_dims dims remain.
  MergedDims<1> dims;
  int reduced = 0;
  for (const bool reduce_group : {false, true}) {
    std::vector<std::int64_t> sizes, strides;
    for (std::size_t d = 0; d < mask.size(); ++d) {
      if (mask[d] != reduce_group) continue;
      sizes.push_back(t.shape()[d]);
      strides.push_back(t.strides()[d]);
    }
    const int before = dims.ndim();
    dims.append(std::move(sizes), {std::move(strides)}, true);
    reduced = dims.ndim() - before;
  }
  cuda::StridedArg in = cuda_operand_of(t);
  dims.write(op, "CUDA reductions", t.shape(), &in);
  cuda::reduce(reduction, cuda_args(op, out.shape(), out)[0], in, reduced, op);
  return out;
}

}  // namespace condense::detail
