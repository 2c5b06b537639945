// The autograd graph: Node (one recorded op: its differentiable inputs and its backward
// rule), GradSink (how a backward rule hands gradients to the inputs) and record(), which
// an op calls after computing its output to attach the backward rule written beside it:
//
//   record<T>("mul", out, {a, b}, [a, b](const Tensor<T>& g, GradSink& s) {
//     if (s.wants(0)) s.add(0, mul(g, b));
//     if (s.wants(1)) s.add(1, mul(g, a));
//   });
#pragma once

#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense {

/// One recorded op. `inputs[i]` is the i-th input's implementation when that input needs a
/// gradient, null otherwise.
class Node {
 public:
  explicit Node(std::string_view name) : name_(name) {}
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& name() const { return name_; }
  /// Computes the inputs' gradients from the gradient stored on `output` and accumulates them.
  virtual void apply(detail::TensorImplBase& output) = 0;
  /// Frees the saved tensors and the links to the inputs (after a backward pass).
  virtual void release() { inputs.clear(); }
  virtual bool released() const = 0;

  std::vector<std::shared_ptr<detail::TensorImplBase>> inputs;

 private:
  std::string name_;
};

namespace detail {

/// Adds `g` into the gradient of `target`. Gradients are never modified in place, so a
/// stored gradient may share memory with other tensors.
template <DifferentiableElement U>
void accumulate_grad(TensorImpl<U>& target, Tensor<U> g, const std::string& from) {
  CONDENSE_CHECK(g.shape() == target.shape, "backward", "gradient from '", from, "' has shape ", g.shape(),
                 " but the tensor it belongs to has shape ", target.shape);
  CONDENSE_CHECK(g.device() == target.storage.device(), "backward", "gradient from '", from, "' is on ", g.device(),
                 " but the tensor it belongs to is on ", target.storage.device());
  g = g.contiguous();
  if (!target.grad) {
    target.grad = g.impl();
    return;
  }
  Tensor<U> previous(target.grad);
  if (g.device().is_cuda()) {
    target.grad = cuda_binary_map("backward", previous, g, {cuda::BinaryOp::Add}).impl();
    return;
  }
  Tensor<U> sum = Tensor<U>::empty(g.shape(), g.device());
  const U* a = previous.data();
  const U* b = g.data();
  U* o = sum.data();
  using C = compute_type_t<U>;  // the 16-bit floats add in float and round once
  cpu::parallel_for(0, sum.numel(), 65536, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) o[i] = convert_element<U>(static_cast<C>(a[i]) + static_cast<C>(b[i]));
  });
  target.grad = sum.impl();
}

}  // namespace detail

/// Passed to a backward rule: says which inputs want a gradient and receives them.
class GradSink {
 public:
  explicit GradSink(Node& node) : node_(node) {}
  /// True when input `i` needs a gradient (skip computing it otherwise).
  bool wants(std::size_t i) const { return i < node_.inputs.size() && node_.inputs[i] != nullptr; }
  /// Accumulates gradient `g` (same shape as input `i`) into input `i`.
  template <DifferentiableElement U>
  void add(std::size_t i, const Tensor<U>& g) {
    if (!wants(i)) return;
    auto& base = *node_.inputs[i];
    CONDENSE_CHECK(base.dtype == dtype_of<U>, "backward", "'", node_.name(), "' produced a ", dtype_name(dtype_of<U>),
                   " gradient for a ", dtype_name(base.dtype), " input");
    detail::accumulate_grad(static_cast<detail::TensorImpl<U>&>(base), g, node_.name());
  }

 private:
  Node& node_;
};

namespace detail {

/// A node whose backward rule is a callable `void(const Tensor<T>& grad_out, GradSink&)`.
template <DifferentiableElement T, class Backward>
class FunctionNode final : public Node {
 public:
  FunctionNode(std::string_view name, Backward backward) : Node(name), backward_(std::move(backward)) {}
  void apply(TensorImplBase& output) override {
    CONDENSE_CHECK(backward_.has_value(), "backward", "the graph through '", name(),
                   "' was already freed by an earlier backward(); pass retain_graph=true to the first one");
    auto& out = static_cast<TensorImpl<T>&>(output);
    if (!out.grad) return;
    GradSink sink(*this);
    (*backward_)(Tensor<T>(out.grad), sink);
  }
  void release() override {
    backward_.reset();
    Node::release();
  }
  bool released() const override { return !backward_.has_value(); }

 private:
  std::optional<Backward> backward_;
};

}  // namespace detail

/// An op input as seen by record(): any tensor, kept only if it requires grad.
struct GradInput {
  template <Element U>
  GradInput(const Tensor<U>& t)  // NOLINT(google-explicit-constructor): used in brace lists
      : impl(t.defined() && t.requires_grad() ? t.impl() : nullptr) {}
  std::shared_ptr<detail::TensorImplBase> impl;
};

/// True when an op with these inputs must record: grad mode on and some input requires grad.
inline bool should_record(std::initializer_list<GradInput> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const auto& in : inputs)
    if (in.impl) return true;
  return false;
}

/// Attaches `backward` to `output` as the op `name` with the given inputs, when recording
/// is on and some input requires grad. `output` must be a tensor the op just created.
template <DifferentiableElement T, class Backward>
void record(std::string_view name, Tensor<T>& output, std::initializer_list<GradInput> inputs, Backward&& backward) {
  if (!should_record(inputs)) return;
  auto node = std::make_shared<detail::FunctionNode<T, std::decay_t<Backward>>>(name, std::forward<Backward>(backward));
  node->inputs.reserve(inputs.size());
  for (const auto& in : inputs) node->inputs.push_back(in.impl);
  output.impl()->requires_grad = true;
  output.impl()->grad_fn = std::move(node);
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
