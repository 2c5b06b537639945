// nn::Module<T>: the base of every neural-network module. A module owns its parameters
// (registered under a name) and refers to its child modules (members of the derived
// class, registered under a name); named_parameters() walks both depth-first in
// registration order and builds dotted names such as "layers.3.attn.q_proj.weight".
// Parameters are leaf tensors that require grad; optimizers update them in place through
// data(), so every Tensor handle to a parameter sees the new values.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "condense/core/error.hpp"
#include "condense/core/tensor.hpp"

namespace condense::nn {

/// Base class of modules. Non-copyable and non-movable: parents hold pointers to their
/// children, and derived classes hold references to their parameter slots.
template <DifferentiableElement T>
class Module {
 public:
  /// (name, tensor) pairs in a fixed order.
  using NamedTensors = std::vector<std::pair<std::string, Tensor<T>>>;

  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  Module(Module&&) = delete;
  Module& operator=(Module&&) = delete;

  /// Every parameter with its dotted name, depth-first in registration order.
  NamedTensors named_parameters() const {
    NamedTensors out;
    for_each_parameter([&](const std::string& name, Tensor<T>& t) { out.emplace_back(name, t); });
    return out;
  }

  /// Every parameter, in the order of named_parameters().
  std::vector<Tensor<T>> parameters() const {
    std::vector<Tensor<T>> out;
    for_each_parameter([&](const std::string&, Tensor<T>& t) { out.push_back(t); });
    return out;
  }

  /// Calls f(dotted name, parameter slot) for every parameter, depth-first in registration
  /// order. Assigning to the slot replaces the parameter (keep it a leaf that requires grad).
  template <class F>
  void for_each_parameter(F&& f) const {
    visit(std::string(), f);
  }

  /// The parameter registered under `name` (dotted, as in named_parameters()).
  Tensor<T>& parameter(const std::string& name) const {
    Tensor<T>* found = nullptr;
    for_each_parameter([&](const std::string& n, Tensor<T>& t) {
      if (n == name) found = &t;
    });
    CONDENSE_CHECK(found != nullptr, "Module", "no parameter named '", name, "'");
    return *found;
  }

  /// Sets training mode on this module and all its children.
  void train(bool on = true) {
    training_ = on;
    for (auto& e : entries_)
      if (e.child) e.child->train(on);
  }
  /// Sets evaluation mode (train(false)).
  void eval() { train(false); }
  /// True in training mode (the default).
  bool is_training() const { return training_; }

  /// Clears the gradient of every parameter.
  void zero_grad() {
    for_each_parameter([](const std::string&, Tensor<T>& t) { t.zero_grad(); });
  }

  /// Moves every parameter to `device` (values copied, gradients dropped; parameters already
  /// there are left as they are). The slots keep their addresses, so derived classes and tied
  /// weights see the moved tensors, and slots that shared one storage share one again. All
  /// copies are made before any slot changes, so a failed move leaves the module as it was.
  /// An optimizer built on the old parameters must be rebuilt.
  void to(Device device) {
    std::vector<std::pair<Tensor<T>*, Tensor<T>>> moves;    // slot -> its new tensor
    std::vector<std::pair<const void*, Tensor<T>>> copies;  // old storage -> its copy
    for_each_parameter([&](const std::string&, Tensor<T>& t) {
      if (t.device() == device) return;
      const void* old = t.data();
      for (const auto& [key, copy] : copies) {
        if (key == old && copy.shape() == t.shape()) {
          moves.emplace_back(&t, copy);
          return;
        }
      }
      Tensor<T> copy = t.detach().to(device);
      copy.requires_grad_(true);
      copies.emplace_back(old, copy);
      moves.emplace_back(&t, copy);
    });
    for (auto& [slot, moved] : moves) *slot = moved;
  }

  /// The device of the parameters (the CPU for a module without any). Throws when they are
  /// spread over several devices.
  Device device() const {
    bool first = true;
    Device found = Device::cpu();
    for_each_parameter([&](const std::string& name, Tensor<T>& t) {
      if (first) found = t.device();
      CONDENSE_CHECK(t.device() == found, "Module", "parameters on several devices: '", name, "' is ", t.describe(),
                     ", an earlier one is on ", found);
      first = false;
    });
    return found;
  }

  /// Total number of parameter elements.
  std::int64_t num_parameters() const {
    std::int64_t n = 0;
    for_each_parameter([&](const std::string&, Tensor<T>& t) { n += t.numel(); });
    return n;
  }

 protected:
  /// Registers `value` as a parameter named `name` (no dots): the module keeps it in a slot
  /// with a stable address, marks it as a leaf that requires grad, and returns the slot
  /// (derived classes keep a reference or pointer to it).
  Tensor<T>& register_parameter(std::string name, Tensor<T> value) {
    CONDENSE_CHECK(value.defined(), "Module", "parameter '", name, "' is an undefined tensor");
    check_new_name(name, false);
    Entry e;
    e.name = std::move(name);
    e.param = std::make_unique<Tensor<T>>(value.detach());
    e.param->requires_grad_(true);
    entries_.push_back(std::move(e));
    return *entries_.back().param;
  }

  /// Registers `child` (a member of the derived class, or an object it owns that outlives
  /// it) under `name`; dots are allowed for list entries such as "layers.3".
  template <class M>
  M& register_module(std::string name, M& child) {
    static_assert(std::is_base_of_v<Module<T>, M>, "register_module needs a Module<T> of the same element type");
    check_new_name(name, true);
    CONDENSE_CHECK(static_cast<const Module<T>*>(&child) != this, "Module", "a module cannot register itself");
    Entry e;
    e.name = std::move(name);
    e.child = &child;
    entries_.push_back(std::move(e));
    return child;
  }

 private:
  struct Entry {
    std::string name;
    std::unique_ptr<Tensor<T>> param;  // set for a parameter
    Module* child = nullptr;           // set for a child module
  };

  void check_new_name(const std::string& name, bool allow_dots) const {
    CONDENSE_CHECK(!name.empty(), "Module", "empty parameter or module name");
    CONDENSE_CHECK(allow_dots || name.find('.') == std::string::npos, "Module", "parameter name '", name,
                   "' must not contain '.'");
    for (const auto& e : entries_)
      CONDENSE_CHECK(e.name != name, "Module", "name '", name, "' is already registered");
  }

  template <class F>
  void visit(const std::string& prefix, F& f) const {
    for (const auto& e : entries_) {
      const std::string full = prefix.empty() ? e.name : prefix + "." + e.name;
      if (e.param)
        f(full, *e.param);
      else
        e.child->visit(full, f);
    }
  }

  std::vector<Entry> entries_;
  bool training_ = true;
};

}  // namespace condense::nn
