// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), step for step the update
// of PyTorch's torch.optim.AdamW (amsgrad off), with per-parameter step counts for the bias
// correction, and no decay of vectors (biases, norm weights) unless asked for. Parameters on
// a CUDA device are updated there by a fused kernel, a few multi-tensor launches for all of
// them. 16-bit parameters are trained through float master weights (optim/master_weights.hpp),
// updated in the same pass as the master.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "condense/autograd/grad_mode.hpp"
#include "condense/backend/cuda/optim_kernels.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/optim/master_weights.hpp"
#include "condense/optim/optimizer.hpp"

namespace condense::optim {

/// Hyper-parameters of AdamW (defaults as in PyTorch, except `decay_vectors`).
struct AdamWOptions {
  double lr = 1e-3;            ///< learning rate, >= 0
  double beta1 = 0.9;          ///< decay of the first-moment average, in [0, 1)
  double beta2 = 0.999;        ///< decay of the second-moment average, in [0, 1)
  double eps = 1e-8;           ///< added to the denominator, >= 0
  double weight_decay = 1e-2;  ///< decoupled decay: p -= lr * weight_decay * p before the Adam step, >= 0
  /// When false (the default), parameters with dim() < 2 (biases, norm weights, scalars) get no
  /// weight decay; when true every parameter is decayed, as PyTorch's AdamW does.
  bool decay_vectors = false;
};

/// AdamW over a list of named parameters. Per step, for each parameter p with a gradient g
/// (parameters without one are skipped and their state is left untouched, as in PyTorch):
///
///     t += 1                                   (the parameter's own step count)
///     p *= 1 - lr * weight_decay               (when p is decayed, see decay_vectors)
///     m += (1 - beta1) * (g - m)
///     v  = beta2 * v + (1 - beta2) * g * g
///     p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
///
/// The update writes into the parameters' storage (their data()), so every Tensor sharing it
/// sees the new values. Parameters must be contiguous tensors on one device (the CPU or a
/// CUDA device) that share no memory; each gradient must be on its parameter's device. The
/// moment buffers live on the parameters' device; the step counts stay on the host.
/// 16-bit parameters get float master weights (the specialisation below).
template <DifferentiableElement T>
class AdamW {
 public:
  /// Takes the parameters (e.g. module.named_parameters()) and the options; throws on an
  /// empty list, bad parameters or out-of-range options. State buffers start at zero.
  AdamW(NamedTensors<T> params, AdamWOptions options = {}) : params_(std::move(params)), options_(options) {
    detail::check_nonnegative("AdamW", "learning rate", options_.lr);
    CONDENSE_CHECK(options_.beta1 >= 0.0 && options_.beta1 < 1.0, "AdamW", "invalid beta1: ", options_.beta1,
                   " (must be in [0, 1))");
    CONDENSE_CHECK(options_.beta2 >= 0.0 && options_.beta2 < 1.0, "AdamW", "invalid beta2: ", options_.beta2,
                   " (must be in [0, 1))");
    detail::check_nonnegative("AdamW", "eps", options_.eps);
    detail::check_nonnegative("AdamW", "weight_decay", options_.weight_decay);
    detail::check_parameters<T>("AdamW", params_);
    for (const auto& [name, p] : params_) {
      exp_avg_.push_back(detail::zero_buffer<T>(p.shape(), p.device(), "AdamW"));
      exp_avg_sq_.push_back(detail::zero_buffer<T>(p.shape(), p.device(), "AdamW"));
      param_steps_.push_back(0);
    }
  }

  /// Applies one update to every parameter that has a gradient, then counts the step.
  void step() {
    NoGradGuard no_grad;
    std::vector<std::int64_t> sizes;
    const auto active = plan_updates(params_, sizes);
    if (params_.front().second.device().is_cuda()) {  // all of them in a few launches
      std::vector<cuda::AdamWListEntry> entries;
      for (const auto& a : active) {
        const Tensor<T>& p = params_[a.index].second;
        entries.push_back({p.data(), a.grad.data(), exp_avg_[a.index].data(), exp_avg_sq_[a.index].data(), nullptr,
                           p.numel(), a.args});
      }
      cuda::adamw_step_list(dtype_of<T>, params_.front().second.device().index, entries.data(), entries.size(), "AdamW");
    } else {
      detail::parallel_update(sizes, [&](std::size_t slot, std::int64_t b, std::int64_t e) {
        const auto& a = active[slot];
        // Blocks small enough for the four passes of update_block to stay in L1.
        for (std::int64_t b0 = b; b0 < e; b0 += detail::update_block) {
          const std::int64_t n = std::min(e, b0 + detail::update_block) - b0;
          update_block(params_[a.index].second.data() + b0, a.grad.data() + b0, exp_avg_[a.index].data() + b0,
                       exp_avg_sq_[a.index].data() + b0, n, a.args);
        }
      });
    }
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
    detail::check_nonnegative("AdamW", "learning rate", lr);
    options_.lr = lr;
  }
  /// The options in use (lr as last set).
  const AdamWOptions& options() const { return options_; }
  /// Number of step() calls (or the count given to load_state()).
  std::int64_t steps() const { return steps_; }
  /// The parameters, in the order given.
  const NamedTensors<T>& parameters() const { return params_; }

  /// A copy of the optimizer state on the CPU (whatever the parameters' device), per parameter
  /// in order: "<param>.exp_avg", "<param>.exp_avg_sq" (parameter-shaped) and "<param>.step"
  /// (0-dim: how many updates this parameter received, which differs from steps() when it
  /// lacked a gradient at some step).
  NamedTensors<T> state() const {
    NamedTensors<T> out;
    out.reserve(3 * params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const std::string& name = params_[i].first;
      out.emplace_back(name + ".exp_avg", detail::copy_of(exp_avg_[i]));
      out.emplace_back(name + ".exp_avg_sq", detail::copy_of(exp_avg_sq_[i]));
      out.emplace_back(name + ".step", detail::step_tensor<T>(param_steps_[i]));
    }
    return out;
  }

  /// Restores a state saved by state() and the step count saved with it; continuing then gives
  /// bit-identical updates. "<param>.exp_avg" and "<param>.exp_avg_sq" are required for every
  /// parameter; "<param>.step" is optional (default: `steps`). Throws, naming the entry, on an
  /// unexpected or duplicate name, a missing entry, a shape mismatch, a negative exp_avg_sq
  /// value or a bad step count; nothing is changed then. The entries may be on any device;
  /// they are copied to the parameters' device.
  void load_state(const NamedTensors<T>& state, std::int64_t steps) {
    std::map<std::string, detail::StateSlot> expected;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const std::string& name = params_[i].first;
      expected[name + ".exp_avg"] = {i, 0, true, false};
      expected[name + ".exp_avg_sq"] = {i, 1, true, false};
      expected[name + ".step"] = {i, 2, false, true};
    }
    const auto found = detail::match_state<T>("AdamW", params_, expected, state, steps);
    for (const auto& [name, t] : found) {
      if (expected.at(name).kind != 1) continue;
      const auto values = t.to_vector();
      for (const T x : values)
        CONDENSE_CHECK(!(x < T(0)), "AdamW", "load_state: state entry '", name, "' has a negative value ", x,
                       " (a second-moment average is >= 0)");
    }
    for (const auto& [name, t] : found) {
      const auto& slot = expected.at(name);
      if (slot.kind == 0) detail::copy_values(exp_avg_[slot.param], t);
      if (slot.kind == 1) detail::copy_values(exp_avg_sq_[slot.param], t);
    }
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto it = found.find(params_[i].first + ".step");
      param_steps_[i] = it == found.end() ? steps : static_cast<std::int64_t>(it->second.item());
    }
    steps_ = steps;
  }

 private:
  // The 16-bit AdamW runs its fused update on this class's moments and step counts.
  template <DifferentiableElement U>
  friend class AdamW;

  /// One parameter's share of a step: its index, its gradient (contiguous) and the scalars of
  /// its update.
  template <DifferentiableElement G>
  struct Update {
    std::size_t index;
    Tensor<G> grad;
    cuda::AdamWStepArgs args;
  };

  /// The updates of this step, for the parameters in `params` (this optimizer's, or the 16-bit
  /// parameters its masters stand for) that have a gradient, counting one update of each;
  /// appends their sizes to `sizes`. Checks every gradient before counting any update.
  template <DifferentiableElement G>
  std::vector<Update<G>> plan_updates(const NamedTensors<G>& params, std::vector<std::int64_t>& sizes) {
    std::vector<Tensor<G>> grads;
    for (const auto& [name, p] : params) grads.push_back(detail::usable_grad<G>("AdamW", name, p));
    std::vector<Update<G>> updates;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!grads[i].defined()) continue;
      updates.push_back({i, std::move(grads[i]), count_update(i)});
      sizes.push_back(params[i].second.numel());
    }
    return updates;
  }

  /// Counts one more update of parameter i and returns the scalars of that update.
  cuda::AdamWStepArgs count_update(std::size_t i) {
    const std::int64_t t = ++param_steps_[i];
    const bool decayed = options_.decay_vectors || params_[i].second.dim() >= 2;
    cuda::AdamWStepArgs args;
    args.decay = decayed ? 1.0 - options_.lr * options_.weight_decay : 1.0;
    args.step_size = options_.lr / (1.0 - std::pow(options_.beta1, static_cast<double>(t)));
    args.bias2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(t)));
    args.one_minus_beta1 = 1.0 - options_.beta1;
    args.beta2 = options_.beta2;
    args.one_minus_beta2 = 1.0 - options_.beta2;
    args.eps = options_.eps;
    return args;
  }

  /// The CPU update of n elements (the formula of the class comment), each scalar rounded to T.
  static void update_block(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, std::int64_t n,
                           const cuda::AdamWStepArgs& args) {
    using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
    const auto size = static_cast<Eigen::Index>(n);
    Eigen::Map<Arr> p(param, size);
    Eigen::Map<const Arr> g(grad, size);
    Eigen::Map<Arr> m(exp_avg, size);
    Eigen::Map<Arr> v(exp_avg_sq, size);
    const T decay = static_cast<T>(args.decay);
    if (decay != T(1)) p *= decay;
    m += static_cast<T>(args.one_minus_beta1) * (g - m);
    v = static_cast<T>(args.beta2) * v + static_cast<T>(args.one_minus_beta2) * g.square();
    p -= static_cast<T>(args.step_size) * (m / (v.sqrt() / static_cast<T>(args.bias2_sqrt) + static_cast<T>(args.eps)));
  }

  NamedTensors<T> params_;
  AdamWOptions options_;
  std::vector<Tensor<T>> exp_avg_;
  std::vector<Tensor<T>> exp_avg_sq_;
  std::vector<std::int64_t> param_steps_;
  std::int64_t steps_ = 0;
};

/// AdamW for bfloat16 / float16 parameters: AdamW<float> run on float master copies of the
/// parameters (detail::MasterWeightOptimizer). Each step updates the masters and their float
/// moments exactly as AdamW<float> would from the widened 16-bit gradients, and rounds the
/// masters that had a gradient back into the parameters' storage, in one pass per parameter
/// (one fused kernel on a CUDA device). The state adds "<param>.master" (the float copy) to
/// AdamW<float>'s entries.
template <HalfElement T>
class AdamW<T> : public detail::MasterWeightOptimizer<T, AdamW<float>, AdamWOptions> {
  using Base = detail::MasterWeightOptimizer<T, AdamW<float>, AdamWOptions>;

 public:
  /// Same checks as AdamW<float>; the masters start as the parameters' values.
  AdamW(NamedTensors<T> params, AdamWOptions options = {}) : Base("AdamW", std::move(params), options) {}

  /// Applies one update to every parameter that has a gradient, then counts the step.
  void step() {
    NoGradGuard no_grad;
    const NamedTensors<T>& params = this->weights_.parameters();
    const NamedTensors<float>& masters = this->weights_.masters();
    AdamW<float>& opt = this->master_;
    std::vector<std::int64_t> sizes;
    const auto active = opt.plan_updates(params, sizes);
    if (params.front().second.device().is_cuda()) {  // all of them in a few launches
      std::vector<cuda::AdamWListEntry> entries;
      for (const auto& a : active) {
        const Tensor<T>& p = params[a.index].second;
        entries.push_back({p.data(), a.grad.data(), opt.exp_avg_[a.index].data(), opt.exp_avg_sq_[a.index].data(),
                           masters[a.index].second.data(), p.numel(), a.args});
      }
      cuda::adamw_master_step_list(dtype_of<T>, params.front().second.device().index, entries.data(), entries.size(),
                                   "AdamW");
    } else {
      detail::parallel_update(sizes, [&](std::size_t slot, std::int64_t b, std::int64_t e) {
        const auto& a = active[slot];
        alignas(64) float widened[detail::update_block];
        for (std::int64_t b0 = b; b0 < e; b0 += detail::update_block) {
          const std::int64_t n = std::min(e, b0 + detail::update_block) - b0;
          const T* g = a.grad.data() + b0;
          for (std::int64_t k = 0; k < n; ++k) widened[k] = convert_element<float>(g[k]);
          float* master = masters[a.index].second.data() + b0;
          AdamW<float>::update_block(master, widened, opt.exp_avg_[a.index].data() + b0,
                                     opt.exp_avg_sq_[a.index].data() + b0, n, a.args);
          T* out = params[a.index].second.data() + b0;
          for (std::int64_t k = 0; k < n; ++k) out[k] = convert_element<T>(master[k]);
        }
      });
    }
    ++opt.steps_;
  }
};

}  // namespace condense::optim

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
