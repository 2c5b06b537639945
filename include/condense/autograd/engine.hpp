// The backward pass: a topological walk from the root over the recorded graph that calls
// each node's backward rule once its output gradient is complete, accumulates into leaves
// and frees intermediate gradients (and, unless asked to keep it, the graph).
#pragma once

#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/autograd/node.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense {
namespace detail {

/// Runs backward from `root`, whose gradient must already be stored.
inline void run_backward(const std::shared_ptr<TensorImplBase>& root, bool retain_graph) {
  NoGradGuard no_grad;
  // Iterative post-order DFS: every tensor comes after all tensors computed from it.
  std::vector<std::shared_ptr<TensorImplBase>> order;
  std::unordered_set<TensorImplBase*> visited;
  std::vector<std::pair<std::shared_ptr<TensorImplBase>, std::size_t>> stack;
  stack.emplace_back(root, 0);
  visited.insert(root.get());
  while (!stack.empty()) {
    auto& [impl, next_input] = stack.back();
    const Node* node = impl->grad_fn.get();
    if (node && next_input < node->inputs.size()) {
      const auto& input = node->inputs[next_input++];
      if (input && visited.insert(input.get()).second) stack.emplace_back(input, 0);
      continue;
    }
    order.push_back(impl);
    stack.pop_back();
  }
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    TensorImplBase& impl = **it;
    if (!impl.grad_fn) continue;  // leaf: keeps its accumulated gradient
    impl.grad_fn->apply(impl);
    if (!retain_graph) impl.grad_fn->release();
    if (!impl.retains_grad) impl.clear_grad();
  }
}

}  // namespace detail

template <Element T>
void Tensor<T>::backward(const Tensor& grad, bool retain_graph) const {
  if constexpr (!DifferentiableElement<T>) {
    fail("backward", "cannot differentiate a ", describe());
  } else {
    CONDENSE_CHECK(requires_grad(), "backward", "tensor ", describe(), " does not require grad and has no grad_fn");
    Tensor seed = grad;
    if (!seed.defined()) {
      CONDENSE_CHECK(numel() == 1, "backward", "grad can be implied only for one-element outputs, got shape ", shape(),
                     "; pass an explicit gradient");
      seed = Tensor::empty(shape(), device());
      if (device().is_cuda()) {
        detail::cuda_fill("backward", seed, 1.0);  // on the device: no host copy to wait for
      } else {
        *seed.data() = convert_element<T>(1.0f);
      }
    }
    CONDENSE_CHECK(seed.shape() == shape(), "backward", "explicit gradient of shape ", seed.shape(),
                   " for a tensor of shape ", shape());
    {
      NoGradGuard no_grad;
      detail::accumulate_grad(*impl_, seed.detach(), "backward");
    }
    if (!is_leaf()) detail::run_backward(impl_, retain_graph);
  }
}

template <Element T>
std::string Tensor<T>::grad_fn_name() const {
  const auto& node = checked().grad_fn;
  return node ? node->name() : std::string();
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
