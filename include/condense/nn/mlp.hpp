// nn::Mlp: the feed-forward block of a transformer layer, either GELU
// (down(gelu(up(x)))) or SwiGLU (down(silu(gate(x)) * up(x))).
#pragma once

#include <cstdint>
#include <memory>

#include "condense/core/random.hpp"
#include "condense/nn/linear.hpp"
#include "condense/nn/module.hpp"
#include "condense/ops/activations.hpp"

namespace condense::nn {

/// Which feed-forward block.
enum class MlpKind { Gelu, SwiGLU };

/// Options of Mlp.
struct MlpOptions {
  std::int64_t d_model = 0;  ///< input and output features
  std::int64_t hidden = 0;   ///< inner features
  MlpKind kind = MlpKind::Gelu;
  bool bias = true;          ///< biases in the projections
  GeluApproximation gelu = GeluApproximation::Tanh;  ///< formula of the GELU kind
};

/// Feed-forward block. Parameters: "up_proj", "down_proj" (GELU) or "gate_proj",
/// "up_proj", "down_proj" (SwiGLU), each a Linear.
template <DifferentiableElement T>
class Mlp : public Module<T> {
 public:
  /// Builds the projections (PyTorch Linear init) from `gen`.
  Mlp(const MlpOptions& options, Generator& gen) : options_(options) {
    CONDENSE_CHECK(options.d_model > 0 && options.hidden > 0, "Mlp", "d_model and hidden must be positive, got ",
                   options.d_model, " and ", options.hidden);
    if (options.kind == MlpKind::SwiGLU) {
      gate_proj = std::make_unique<Linear<T>>(options.d_model, options.hidden, options.bias, gen);
      this->register_module("gate_proj", *gate_proj);
    }
    up_proj = std::make_unique<Linear<T>>(options.d_model, options.hidden, options.bias, gen);
    this->register_module("up_proj", *up_proj);
    down_proj = std::make_unique<Linear<T>>(options.hidden, options.d_model, options.bias, gen);
    this->register_module("down_proj", *down_proj);
  }

  /// GELU: down(gelu(up(x))); SwiGLU: down(silu(gate(x)) * up(x)).
  // x: [..., d_model] -> [..., d_model]
  Tensor<T> forward(const Tensor<T>& x) const {
    if (options_.kind == MlpKind::SwiGLU) return down_proj->forward(silu(gate_proj->forward(x)) * up_proj->forward(x));
    return down_proj->forward(gelu(up_proj->forward(x), options_.gelu));
  }
  /// Same as forward().
  Tensor<T> operator()(const Tensor<T>& x) const { return forward(x); }
  /// The options it was built with.
  const MlpOptions& options() const { return options_; }

  std::unique_ptr<Linear<T>> gate_proj;  ///< SwiGLU only (null for GELU)
  std::unique_ptr<Linear<T>> up_proj;    ///< [hidden, d_model]
  std::unique_ptr<Linear<T>> down_proj;  ///< [d_model, hidden]

 private:
  MlpOptions options_;
};

}  // namespace condense::nn
