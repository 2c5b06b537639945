// SGD: stochastic gradient descent with optional momentum (heavy-ball or Nesterov),
// dampening and L2 weight decay, step for step the update of PyTorch's torch.optim.SGD.
// Parameters on a CUDA device are updated there by one fused kernel per parameter tensor;
// 16-bit parameters are trained through float master weights (optim/master_weights.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "condense/autograd/grad_mode.hpp"
#include "condense/backend/cuda/optim_kernels.hpp"
#include "condense/core/error.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/optim/master_weights.hpp"
#include "condense/optim/optimizer.hpp"

namespace condense::optim {

/// Hyper-parameters of SGD (defaults as in PyTorch).
struct SGDOptions {
  double lr = 1e-3;           ///< learning rate, >= 0
  double momentum = 0.0;      ///< momentum factor, >= 0 (0: plain SGD, no state)
  double dampening = 0.0;     ///< dampening of the gradient added to the momentum buffer
  bool nesterov = false;      ///< Nesterov momentum (needs momentum > 0 and dampening == 0)
  double weight_decay = 0.0;  ///< L2 penalty added to the gradient: g += weight_decay * p, >= 0
};

/// SGD over a list of named parameters. Per step, for each parameter p with a gradient g
/// (parameters without one are skipped and their state is left untouched, as in PyTorch):
///
///     g += weight_decay * p
///     b  = g                                   (first update of this parameter)
///     b  = momentum * b + (1 - dampening) * g  (later updates)
///     d  = nesterov ? g + momentum * b : b     (d = g when momentum == 0)
///     p -= lr * d
///
/// The update writes into the parameters' storage (their data()). Parameters must be
/// contiguous tensors on one device (the CPU or a CUDA device) that share no memory; each
/// gradient must be on its parameter's device. The momentum buffers live on the parameters'
/// device; the step counts stay on the host.
/// 16-bit parameters get float master weights (the specialisation below).
template <DifferentiableElement T>
class SGD {
 public:
  /// Takes the parameters (e.g. module.named_parameters()) and the options; throws on an
  /// empty list, bad parameters or out-of-range options.
  SGD(NamedTensors<T> params, SGDOptions options = {}) : params_(std::move(params)), options_(options) {
    detail::check_nonnegative("SGD", "learning rate", options_.lr);
    detail::check_nonnegative("SGD", "momentum", options_.momentum);
    CONDENSE_CHECK(std::isfinite(options_.dampening), "SGD", "invalid dampening: ", options_.dampening);
    detail::check_nonnegative("SGD", "weight_decay", options_.weight_decay);
    CONDENSE_CHECK(!options_.nesterov || (options_.momentum > 0.0 && options_.dampening == 0.0), "SGD",
                   "Nesterov momentum needs momentum > 0 and dampening == 0, got momentum ", options_.momentum,
                   " and dampening ", options_.dampening);
    detail::check_parameters<T>("SGD", params_);
    for (const auto& [name, p] : params_) {
      if (has_momentum()) buffers_.push_back(detail::zero_buffer<T>(p.shape(), p.device(), "SGD"));
      param_steps_.push_back(0);
    }
  }

  /// Applies one update to every parameter that has a gradient, then counts the step.
  void step() {
    NoGradGuard no_grad;
    struct Active {
      std::size_t index;
      Tensor<T> grad;
      bool first;
    };
    std::vector<Active> active;
    std::vector<std::int64_t> sizes;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& [name, p] = params_[i];
      Tensor<T> g = detail::usable_grad<T>("SGD", name, p);
      if (!g.defined()) continue;
      active.push_back({i, std::move(g), param_steps_[i] == 0});
      ++param_steps_[i];
      sizes.push_back(p.numel());
    }
    if (params_.front().second.device().is_cuda()) {
      step_on_cuda(active);
      ++steps_;
      return;
    }
    const T lr = static_cast<T>(options_.lr);
    const T wd = static_cast<T>(options_.weight_decay);
    const T mom = static_cast<T>(options_.momentum);
    const T keep = static_cast<T>(1.0 - options_.dampening);
    const bool decay = options_.weight_decay != 0.0;
    const bool momentum = has_momentum();
    const bool nesterov = options_.nesterov;
    detail::parallel_update(sizes, [&](std::size_t slot, std::int64_t b, std::int64_t e) {
      const Active& a = active[slot];
      using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
      const Eigen::Index n = static_cast<Eigen::Index>(e - b);
      Eigen::Map<Arr> p(params_[a.index].second.data() + b, n);
      Eigen::Map<const Arr> g0(a.grad.data() + b, n);
      // The decayed gradient g + wd * p, evaluated lazily from the parameter's old values.
      auto run = [&](const auto& g) {
        if (!momentum) {
          p -= lr * g;
          return;
        }
        Eigen::Map<Arr> buf(buffers_[a.index].data() + b, n);
        if (a.first) {
          buf = g;
        } else {
          buf = mom * buf + keep * g;
        }
        if (nesterov) {
          p -= lr * (g + mom * buf);
        } else {
          p -= lr * buf;
        }
      };
      if (decay) {
        run(g0 + wd * p);
      } else {
        run(g0);
      }
    });
    ++steps_;
  }

  /// Clears the gradients of all parameters (they become undefined, like PyTorch's set_to_none).
  void zero_grad() {
    for (const auto& [name, p] : params_) p.zero_grad();
  }

  /// The current learning rate.
  double lr() const { return options_.lr; }
  /// Sets the learning rate for the next steps (finite, >= 0), e.g. from a schedule.
  void set_lr(double lr) {
    detail::check_nonnegative("SGD", "learning rate", lr);
    options_.lr = lr;
  }
  /// The options in use (lr as last set).
  const SGDOptions& options() const { return options_; }
  /// Number of step() calls (or the count given to load_state()).
  std::int64_t steps() const { return steps_; }
  /// The parameters, in the order given.
  const NamedTensors<T>& parameters() const { return params_; }

  /// A copy of the optimizer state on the CPU (whatever the parameters' device). With
  /// momentum, per parameter in order:
  /// "<param>.momentum_buffer" (parameter-shaped) and "<param>.step" (0-dim: how many updates
  /// this parameter received; 0 means its buffer is not started yet). Without momentum SGD
  /// has no state and the list is empty.
  NamedTensors<T> state() const {
    NamedTensors<T> out;
    if (!has_momentum()) return out;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      out.emplace_back(params_[i].first + ".momentum_buffer", detail::copy_of(buffers_[i]));
      out.emplace_back(params_[i].first + ".step", detail::step_tensor<T>(param_steps_[i]));
    }
    return out;
  }

  /// Restores a state saved by state() and the step count saved with it; continuing then gives
  /// bit-identical updates. With momentum, "<param>.momentum_buffer" is required for every
  /// parameter and "<param>.step" optional (default: `steps`); without momentum the state must
  /// be empty. Throws, naming the entry, on an unexpected or duplicate name, a missing entry, a
  /// shape mismatch or a bad step count; nothing is changed then. The entries may be on any
  /// device; they are copied to the parameters' device.
  void load_state(const NamedTensors<T>& state, std::int64_t steps) {
    std::map<std::string, detail::StateSlot> expected;
    if (has_momentum()) {
      for (std::size_t i = 0; i < params_.size(); ++i) {
        expected[params_[i].first + ".momentum_buffer"] = {i, 0, true, false};
        expected[params_[i].first + ".step"] = {i, 1, false, true};
      }
    }
    const auto found = detail::match_state<T>("SGD", params_, expected, state, steps);
    for (const auto& [name, t] : found) {
      const auto& slot = expected.at(name);
      if (slot.kind == 0) detail::copy_values(buffers_[slot.param], t);
    }
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto it = found.find(params_[i].first + ".step");
      param_steps_[i] = it == found.end() ? steps : static_cast<std::int64_t>(it->second.item());
    }
    steps_ = steps;
  }

 private:
  bool has_momentum() const { return options_.momentum != 0.0; }

  /// The CUDA update: one fused kernel for every parameter that has a gradient, in a few
  /// multi-tensor launches.
  template <class Active>
  void step_on_cuda(const std::vector<Active>& active) {
    std::vector<cuda::SGDListEntry> entries;
    for (const Active& a : active) {
      const Tensor<T>& p = params_[a.index].second;
      cuda::SGDStepArgs args;
      args.lr = options_.lr;
      args.weight_decay = options_.weight_decay;
      args.momentum = options_.momentum;
      args.keep = 1.0 - options_.dampening;
      args.decay = options_.weight_decay != 0.0;
      args.use_momentum = has_momentum();
      args.first = a.first;
      args.nesterov = options_.nesterov;
      entries.push_back({p.data(), a.grad.data(), has_momentum() ? buffers_[a.index].data() : nullptr, p.numel(), args});
    }
    if (!entries.empty())
      cuda::sgd_step_list(dtype_of<T>, params_.front().second.device().index, entries.data(), entries.size(), "SGD");
  }

  NamedTensors<T> params_;
  SGDOptions options_;
  std::vector<Tensor<T>> buffers_;
  std::vector<std::int64_t> param_steps_;
  std::int64_t steps_ = 0;
};

/// SGD for bfloat16 / float16 parameters: SGD<float> run on float master copies of the
/// parameters (detail::MasterWeightOptimizer); the state adds "<param>.master".
template <HalfElement T>
class SGD<T> : public detail::MasterWeightOptimizer<T, SGD<float>, SGDOptions> {
 public:
  /// Same checks as SGD<float>; the masters start as the parameters' values.
  SGD(NamedTensors<T> params, SGDOptions options = {})
      : detail::MasterWeightOptimizer<T, SGD<float>, SGDOptions>("SGD", std::move(params), options) {}
};

}  // namespace condense::optim

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
