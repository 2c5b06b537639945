// TensorImpl: what a Tensor handle points at — storage, shape, strides, offset — and the
// autograd metadata (requires_grad, grad, the node that produced it). TensorImplBase is the
// type-erased part the autograd engine walks.
#pragma once

#include <cstdint>
#include <memory>

#include "condense/core/device.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/shape.hpp"
#include "condense/core/storage.hpp"

namespace condense {

class Node;

namespace detail {

/// Type-erased part of a tensor's implementation: metadata and autograd links.
struct TensorImplBase {
  explicit TensorImplBase(DType t) : dtype(t) {}
  virtual ~TensorImplBase() = default;
  TensorImplBase(const TensorImplBase&) = delete;
  TensorImplBase& operator=(const TensorImplBase&) = delete;

  const DType dtype;
  Storage storage;
  Shape shape;
  Strides strides;
  std::int64_t offset = 0;  // in elements

  bool requires_grad = false;
  bool retains_grad = false;           // keep .grad on a non-leaf after backward
  std::shared_ptr<Node> grad_fn;       // null for leaves

  virtual bool has_grad() const = 0;
  virtual void clear_grad() = 0;
};

/// The typed implementation; `grad` has the same element type.
template <Element T>
struct TensorImpl final : TensorImplBase {
  TensorImpl() : TensorImplBase(dtype_of<T>) {}
  std::shared_ptr<TensorImpl<T>> grad;
  bool has_grad() const override { return grad != nullptr; }
  void clear_grad() override { grad.reset(); }
};

}  // namespace detail
}  // namespace condense
