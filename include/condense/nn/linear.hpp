// nn::Linear: y = x @ weight^T + bias with weight in PyTorch's [out, in] layout, one fused
// linear() call (the bias is added inside the GEMM's output pass).
#pragma once

#include <cstdint>

#include "condense/core/random.hpp"
#include "condense/nn/init.hpp"
#include "condense/nn/module.hpp"
#include "condense/ops/matmul.hpp"

namespace condense::nn {

/// Affine layer. Parameters: "weight" [out, in] and, unless disabled, "bias" [out].
/// Initialised like PyTorch: U(-1/sqrt(in), 1/sqrt(in)) for both.
template <DifferentiableElement T>
class Linear : public Module<T> {
 public:
  /// A layer mapping `in_features` to `out_features`, with a bias when `bias`.
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias, Generator& gen)
      : in_(in_features), out_(out_features) {
    CONDENSE_CHECK(in_features >= 0 && out_features >= 0, "Linear", "feature counts must be >= 0, got in ",
                   in_features, ", out ", out_features);
    weight_ = &this->register_parameter("weight", Tensor<T>::empty({out_features, in_features}));
    init::fan_in_uniform_(*weight_, static_cast<double>(in_features), gen);
    if (bias) {
      bias_ = &this->register_parameter("bias", Tensor<T>::empty({out_features}));
      init::fan_in_uniform_(*bias_, static_cast<double>(in_features), gen);
    }
  }

  /// x @ weight^T + bias.
  // x: [..., in] -> [..., out]
  Tensor<T> forward(const Tensor<T>& x) const { return linear(x, *weight_, bias_ ? *bias_ : Tensor<T>()); }
  /// Same as forward().
  Tensor<T> operator()(const Tensor<T>& x) const { return forward(x); }

  /// The weight slot, [out, in].
  Tensor<T>& weight() const { return *weight_; }
  /// The bias slot [out]; an undefined tensor when the layer has no bias.
  const Tensor<T>& bias() const { return bias_ ? *bias_ : none_; }
  /// True when the layer has a bias.
  bool has_bias() const { return bias_ != nullptr; }
  /// Input features.
  std::int64_t in_features() const { return in_; }
  /// Output features.
  std::int64_t out_features() const { return out_; }

 private:
  std::int64_t in_, out_;
  Tensor<T>* weight_ = nullptr;
  Tensor<T>* bias_ = nullptr;
  Tensor<T> none_;
};

}  // namespace condense::nn
