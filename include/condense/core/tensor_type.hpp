// The Tensor<T> class: a cheap, copyable handle to a TensorImpl (storage shared by views,
// runtime shape/strides/offset, a Device tag, autograd metadata). Members that call ops
// (views, conversions, backward) are defined in the op headers; include
// "condense/core/tensor.hpp", which brings the class together with the core op set.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "condense/backend/cpu/strided.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/device.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"
#include "condense/core/shape.hpp"
#include "condense/core/storage.hpp"
#include "condense/core/tensor_impl.hpp"

namespace condense {

/// An n-dimensional array of T on a device, with optional gradient tracking.
/// Copying a Tensor shares its data; use clone() for a deep copy.
template <Element T>
class Tensor {
 public:
  using value_type = T;
  using Impl = detail::TensorImpl<T>;

  /// An undefined tensor (no storage); defined() is false.
  Tensor() = default;
  /// Wraps an existing implementation (used by ops and the autograd engine).
  explicit Tensor(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

  /// A contiguous, uninitialised tensor of `shape` on `device`.
  static Tensor empty(const Shape& shape, Device device = Device::cpu()) {
    check_shape("empty", shape);
    auto impl = std::make_shared<Impl>();
    impl->storage = Storage::allocate(static_cast<std::size_t>(numel_of(shape)) * sizeof(T), device, "empty");
    impl->shape = shape;
    impl->strides = contiguous_strides(shape);
    return Tensor(std::move(impl));
  }

  /// A view of `storage` with the given geometry (no copy).
  static Tensor from_storage(Storage storage, Shape shape, Strides strides, std::int64_t offset) {
    auto impl = std::make_shared<Impl>();
    impl->storage = std::move(storage);
    impl->shape = std::move(shape);
    impl->strides = std::move(strides);
    impl->offset = offset;
    return Tensor(std::move(impl));
  }

  // ---- metadata -------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return checked().shape; }
  const Strides& strides() const { return checked().strides; }
  std::int64_t offset() const { return checked().offset; }
  /// Rank (number of dimensions).
  std::int64_t dim() const { return static_cast<std::int64_t>(shape().size()); }
  /// Extent of dimension `d` (negative counts from the end).
  std::int64_t size(std::int64_t d) const { return shape()[normalize_dim("size", d, shape().size())]; }
  std::int64_t numel() const { return numel_of(shape()); }
  Device device() const { return checked().storage.device(); }
  static constexpr DType dtype() { return dtype_of<T>; }
  const Storage& storage() const { return checked().storage; }
  /// True when the elements are laid out row-major without gaps.
  bool is_contiguous() const {
    const auto& s = shape();
    const auto& st = strides();
    std::int64_t expected = 1;
    for (std::size_t i = s.size(); i-- > 0;) {
      if (s[i] != 1 && st[i] != expected) return false;
      expected *= s[i];
    }
    return true;
  }
  /// "float32 (2x3) cpu" — used in error messages.
  std::string describe() const {
    if (!defined()) return "undefined tensor";
    return std::string(dtype_name(dtype())) + " " + shape().str() + " " + device().str();
  }

  /// Pointer to the first element (storage base + offset). Any device.
  T* data() const { return static_cast<T*>(checked().storage.data()) + checked().offset; }

  // ---- element access (CPU; copies from the GPU when needed) ---------------------------
  /// The single element of a one-element tensor.
  T item() const {
    CONDENSE_CHECK(numel() == 1, "item", "tensor of shape ", shape(), " has ", numel(), " elements, expected 1");
    if (device().is_cpu()) return *data();
    return to(Device::cpu()).item();
  }
  /// Element at a full index (bounds-checked; CPU only).
  T at(std::initializer_list<std::int64_t> index) const {
    CONDENSE_CHECK(device().is_cpu(), "at", "element access needs a CPU tensor, got ", device());
    CONDENSE_CHECK(index.size() == shape().size(), "at", "index of rank ", index.size(), " for a tensor of shape ", shape());
    std::int64_t off = 0;
    std::size_t d = 0;
    for (auto i : index) {
      CONDENSE_CHECK(i >= 0 && i < shape()[d], "at", "index ", i, " out of range for dim ", d, " of shape ", shape());
      off += i * strides()[d];
      ++d;
    }
    return data()[off];
  }
  /// All elements in row-major order, copied to the host.
  std::vector<T> to_vector() const {
    if (!device().is_cpu()) return to(Device::cpu()).to_vector();
    if constexpr (std::is_same_v<T, bool>) {  // std::vector<bool> has no data()
      const Tensor dense = contiguous();
      return std::vector<bool>(dense.data(), dense.data() + numel());
    } else {
      std::vector<T> out(static_cast<std::size_t>(numel()));
      if (numel() > 0) cpu::copy_to_contiguous(data(), shape(), strides(), out.data());
      return out;
    }
  }

  // ---- copies and devices (defined in ops/views.hpp and ops/convert.hpp) ----------------
  /// A contiguous tensor with the same values (this tensor itself when already contiguous).
  Tensor contiguous() const;
  /// A deep copy (contiguous, new storage), differentiable.
  Tensor clone() const;
  /// This tensor on `device` (a copy when the device differs), differentiable.
  Tensor to(Device device) const;
  /// This tensor on the CPU.
  Tensor cpu() const { return to(Device::cpu()); }
  /// Elementwise conversion to element type U (differentiable between float types).
  template <Element U> Tensor<U> cast() const;

  // ---- views (defined in ops/views.hpp; all share storage and are differentiable) -------
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const;
  Tensor permute(const std::vector<std::int64_t>& order) const;
  Tensor transpose(std::int64_t dim0, std::int64_t dim1) const;
  Tensor narrow(std::int64_t dim, std::int64_t start, std::int64_t length) const;
  Tensor slice(std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step = 1) const;
  Tensor select(std::int64_t dim, std::int64_t index) const;
  Tensor unsqueeze(std::int64_t dim) const;
  Tensor squeeze(std::int64_t dim) const;
  Tensor squeeze() const;
  Tensor expand(const Shape& shape) const;
  Tensor flatten(std::int64_t start_dim = 0, std::int64_t end_dim = -1) const;

  // ---- autograd (defined in autograd/engine.hpp) ---------------------------------------
  bool requires_grad() const { return checked().requires_grad; }
  /// Marks a leaf as needing a gradient. Only floating tensors (float, double, bfloat16,
  /// float16) can.
  Tensor& requires_grad_(bool on = true) {
    if constexpr (!DifferentiableElement<T>) {
      CONDENSE_CHECK(!on, "requires_grad", "only floating tensors can require grad, got ", describe());
    }
    CONDENSE_CHECK(is_leaf() || on, "requires_grad", "cannot turn off requires_grad on a non-leaf ", describe(), "; use detach()");
    checked().requires_grad = on;
    return *this;
  }
  /// True when the tensor was not produced by a recorded op.
  bool is_leaf() const { return checked().grad_fn == nullptr; }
  /// Accumulated gradient (undefined until a backward pass reaches this tensor).
  Tensor grad() const { return Tensor(checked().grad); }
  /// Replaces the stored gradient (undefined tensor clears it).
  void set_grad(const Tensor& g) const { checked().grad = g.impl_; }
  /// Clears the stored gradient.
  void zero_grad() const { checked().grad.reset(); }
  /// Keeps .grad on this non-leaf after backward.
  void retain_grad() const { checked().retains_grad = true; }
  /// Name of the op that produced this tensor ("" for leaves).
  std::string grad_fn_name() const;
  /// A view of the same data that does not require grad and has no history.
  Tensor detach() const { return from_storage(storage(), shape(), strides(), offset()); }
  /// Back-propagates from this tensor. Without `grad` the tensor must have one element.
  /// The graph is freed afterwards unless `retain_graph`.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  // ---- internals -----------------------------------------------------------------------
  const std::shared_ptr<Impl>& impl() const { return impl_; }

 private:
  Impl& checked() const {
    if (!impl_) fail("tensor", "use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<Impl> impl_;
};

}  // namespace condense
