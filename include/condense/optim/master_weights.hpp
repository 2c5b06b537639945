// Float master weights for 16-bit parameters (mixed-precision training): MasterWeights keeps
// a float copy of each bfloat16 / float16 parameter, hands the optimizer of the float copies
// each 16-bit gradient widened to float, and rounds the updated copies back into the
// parameters' storage; MasterWeightOptimizer wraps a float optimizer around them. The 16-bit
// optimizers (AdamW<bfloat16>, SGD<float16>, ...) are that wrapper, so updates smaller than
// a 16-bit ulp of a weight accumulate in the masters instead of vanishing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/optim/optimizer.hpp"

namespace condense::optim::detail {

/// The state-entry suffix of a parameter's float master copy ("<param>.master").
inline constexpr std::string_view master_suffix = ".master";

/// Float master copies of 16-bit parameters, on the parameters' device.
template <HalfElement T>
class MasterWeights {
 public:
  /// Checks the parameters (as every optimizer does) and copies each to float.
  MasterWeights(std::string_view opt, NamedTensors<T> params) : opt_(opt), params_(std::move(params)) {
    check_parameters<T>(opt_, params_);
    for (const auto& [name, p] : params_) masters_.emplace_back(name, widened(p));
  }

  /// The 16-bit parameters, in the order given.
  const NamedTensors<T>& parameters() const { return params_; }
  /// Their float copies, under the same names: what the float optimizer updates.
  const NamedTensors<float>& masters() const { return masters_; }

  /// Gives each master the gradient of its parameter widened to float (or no gradient when the
  /// parameter has none, so the float optimizer skips it). Returns which parameters had one.
  std::vector<bool> load_grads() const {
    NoGradGuard no_grad;
    std::vector<bool> had(params_.size(), false);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& [name, p] = params_[i];
      const Tensor<T> g = usable_grad<T>(opt_, name, p);
      had[i] = g.defined();
      masters_[i].second.set_grad(had[i] ? cast<float>(g) : Tensor<float>());
    }
    return had;
  }

  /// Rounds the master of every parameter marked in `which` into the parameter's storage.
  void store(const std::vector<bool>& which) const {
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (which[i]) round_into(params_[i].second, masters_[i].second);
  }

  /// Copies the current parameter values into the masters (after the parameters were changed
  /// outside the optimizer, e.g. loaded from a checkpoint).
  void sync_from_parameters() const {
    for (std::size_t i = 0; i < params_.size(); ++i) copy_values(masters_[i].second, widened(params_[i].second));
  }

  /// Clears the gradients of the parameters and of the masters.
  void zero_grad() const {
    for (const auto& [name, p] : params_) p.zero_grad();
    for (const auto& [name, m] : masters_) m.zero_grad();
  }

  /// CPU copies of the masters, named "<param>.master".
  NamedTensors<float> state() const {
    NamedTensors<float> out;
    for (const auto& [name, m] : masters_) out.emplace_back(name + std::string(master_suffix), copy_of(m));
    return out;
  }

  /// Splits a saved state into the master entries (checked against the parameters' shapes)
  /// and the rest (for the float optimizer's own load_state). Changes nothing.
  std::pair<NamedTensors<float>, NamedTensors<float>> split_state(const NamedTensors<float>& state) const {
    NamedTensors<float> masters(params_.size()), rest;
    for (const auto& [name, t] : state) {
      const std::size_t slot = master_slot(name);
      if (slot == params_.size()) {
        rest.emplace_back(name, t);
        continue;
      }
      CONDENSE_CHECK(!masters[slot].second.defined(), opt_, "load_state: state entry '", name, "' appears twice");
      CONDENSE_CHECK(t.defined() && t.shape() == params_[slot].second.shape(), opt_, "load_state: state entry '", name,
                     "' has shape ", t.defined() ? t.shape() : Shape{}, " but parameter '", params_[slot].first,
                     "' has shape ", params_[slot].second.shape());
      masters[slot] = {name, t};
    }
    return {std::move(masters), std::move(rest)};
  }

  /// Loads the masters split_state() found (missing ones are taken from the parameters) and
  /// rounds every master into its parameter.
  void load(const NamedTensors<float>& masters) const {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (masters[i].second.defined()) {
        copy_values(masters_[i].second, masters[i].second);
      } else {
        copy_values(masters_[i].second, widened(params_[i].second));
      }
    }
    store(std::vector<bool>(params_.size(), true));
  }

 private:
  /// A contiguous float copy of `p` on its device, not recording.
  static Tensor<float> widened(const Tensor<T>& p) {
    NoGradGuard no_grad;
    return cast<float>(p.detach()).contiguous();
  }

  /// The parameter whose master entry `name` is, or params_.size() when it is none.
  std::size_t master_slot(const std::string& name) const {
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (name == params_[i].first + std::string(master_suffix)) return i;
    return params_.size();
  }

  /// dst (a contiguous 16-bit parameter) = src (its float master) rounded, in place.
  static void round_into(const Tensor<T>& dst, const Tensor<float>& src) {
    if (dst.numel() == 0) return;
    if (dst.device().is_cuda()) {
      condense::detail::cuda_copy_into("optimizer", dst, src);
      return;
    }
    const float* in = src.data();
    T* out = dst.data();
    cpu::parallel_for(0, dst.numel(), 65536, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) out[i] = convert_element<T>(in[i]);
    });
  }

  std::string opt_;
  NamedTensors<T> params_;
  NamedTensors<float> masters_;
};

/// A float optimizer (AdamW<float>, SGD<float>) run on the float masters of 16-bit
/// parameters: the body of the 16-bit optimizers, with the float optimizer's interface.
template <HalfElement T, class FloatOptimizer, class Options>
class MasterWeightOptimizer {
 public:
  /// Checks the parameters and the options (`opt` names the optimizer in errors).
  MasterWeightOptimizer(std::string_view opt, NamedTensors<T> params, const Options& options)
      : weights_(opt, std::move(params)), master_(weights_.masters(), options) {}

  /// Applies one update to every parameter that has a gradient, then counts the step.
  void step() {
    const std::vector<bool> had = weights_.load_grads();
    master_.step();
    weights_.store(had);
    master_.zero_grad();  // the widened gradients are not kept between steps
  }

  /// Clears the gradients of all parameters.
  void zero_grad() { weights_.zero_grad(); }
  /// The current learning rate.
  double lr() const { return master_.lr(); }
  /// Sets the learning rate for the next steps (finite, >= 0).
  void set_lr(double lr) { master_.set_lr(lr); }
  /// The options in use.
  const Options& options() const { return master_.options(); }
  /// Number of step() calls (or the count given to load_state()).
  std::int64_t steps() const { return master_.steps(); }
  /// The 16-bit parameters, in the order given.
  const NamedTensors<T>& parameters() const { return weights_.parameters(); }
  /// The float master copies (same names and order), updated in place by step().
  const NamedTensors<float>& master_parameters() const { return weights_.masters(); }
  /// Copies the parameters' current values into the masters: call it after changing the
  /// parameters outside the optimizer, or the next step overwrites the change.
  void sync_from_parameters() { weights_.sync_from_parameters(); }

  /// The float optimizer's state of the masters, plus "<param>.master" (float, on the CPU).
  NamedTensors<float> state() const {
    NamedTensors<float> out = master_.state();
    for (auto& entry : weights_.state()) out.push_back(std::move(entry));
    return out;
  }

  /// Restores a state saved by state(); "<param>.master" entries are optional (missing ones
  /// start from the parameter's value). Every parameter is then the rounding of its master.
  /// Throws as the float optimizer's load_state does; nothing is changed then.
  void load_state(const NamedTensors<float>& state, std::int64_t steps) {
    auto [masters, rest] = weights_.split_state(state);
    master_.load_state(rest, steps);
    weights_.load(masters);
  }

 protected:
  MasterWeights<T> weights_;  ///< the 16-bit parameters and their float masters
  FloatOptimizer master_;     ///< the float optimizer of the masters
};

}  // namespace condense::optim::detail

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
