// Normalisation modules over the last dim: LayerNorm (weight and optional bias), RMSNorm
// (weight), and Norm, which is either of them chosen at run time (the model presets pick
// one by option). Each is one call of the fused layer_norm / rms_norm op.
#pragma once

#include <cstdint>

#include "condense/core/factories.hpp"
#include "condense/nn/init.hpp"
#include "condense/nn/module.hpp"
#include "condense/ops/norms.hpp"

namespace condense::nn {

/// Which normalisation a block uses.
enum class NormKind { LayerNorm, RMSNorm };

/// Layer normalisation. Parameters: "weight" [d] (ones) and, unless disabled, "bias" [d] (zeros).
template <DifferentiableElement T>
class LayerNorm : public Module<T> {
 public:
  /// Normalises over a last dim of `d`.
  explicit LayerNorm(std::int64_t d, double eps = 1e-5, bool bias = true) : eps_(eps) {
    CONDENSE_CHECK(d > 0, "LayerNorm", "dim must be positive, got ", d);
    weight_ = &this->register_parameter("weight", ones<T>({d}));
    if (bias) bias_ = &this->register_parameter("bias", zeros<T>({d}));
  }
  /// (x - mean) / sqrt(var + eps) * weight + bias over the last dim.
  // x: [..., d] -> [..., d]
  Tensor<T> forward(const Tensor<T>& x) const { return layer_norm(x, *weight_, bias_ ? *bias_ : Tensor<T>(), eps_); }
  /// Same as forward().
  Tensor<T> operator()(const Tensor<T>& x) const { return forward(x); }
  /// The weight slot, [d].
  Tensor<T>& weight() const { return *weight_; }
  /// Undefined when the norm has no bias.
  Tensor<T> bias() const { return bias_ ? *bias_ : Tensor<T>(); }
  /// The epsilon added to the variance / mean square.
  double eps() const { return eps_; }

 private:
  double eps_;
  Tensor<T>* weight_ = nullptr;
  Tensor<T>* bias_ = nullptr;
};

/// RMS normalisation. Parameter: "weight" [d] (ones).
template <DifferentiableElement T>
class RMSNorm : public Module<T> {
 public:
  /// Normalises over a last dim of `d`.
  explicit RMSNorm(std::int64_t d, double eps = 1e-6) : eps_(eps) {
    CONDENSE_CHECK(d > 0, "RMSNorm", "dim must be positive, got ", d);
    weight_ = &this->register_parameter("weight", ones<T>({d}));
  }
  /// x / sqrt(mean(x^2) + eps) * weight over the last dim.
  // x: [..., d] -> [..., d]
  Tensor<T> forward(const Tensor<T>& x) const { return rms_norm(x, *weight_, eps_); }
  /// Same as forward().
  Tensor<T> operator()(const Tensor<T>& x) const { return forward(x); }
  /// The weight slot, [d].
  Tensor<T>& weight() const { return *weight_; }
  /// The epsilon added to the variance / mean square.
  double eps() const { return eps_; }

 private:
  double eps_;
  Tensor<T>* weight_ = nullptr;
};

/// LayerNorm or RMSNorm chosen at construction, with the same parameter names as the
/// chosen module ("weight", plus "bias" for LayerNorm with bias).
template <DifferentiableElement T>
class Norm : public Module<T> {
 public:
  /// A `kind` norm over a last dim of `d` (bias: LayerNorm only).
  Norm(NormKind kind, std::int64_t d, double eps, bool bias = true) : kind_(kind), eps_(eps) {
    CONDENSE_CHECK(d > 0, "Norm", "dim must be positive, got ", d);
    weight_ = &this->register_parameter("weight", ones<T>({d}));
    if (kind == NormKind::LayerNorm && bias) bias_ = &this->register_parameter("bias", zeros<T>({d}));
  }
  /// The chosen normalisation of x.
  // x: [..., d] -> [..., d]
  Tensor<T> forward(const Tensor<T>& x) const {
    if (kind_ == NormKind::RMSNorm) return rms_norm(x, *weight_, eps_);
    return layer_norm(x, *weight_, bias_ ? *bias_ : Tensor<T>(), eps_);
  }
  /// Same as forward().
  Tensor<T> operator()(const Tensor<T>& x) const { return forward(x); }
  /// LayerNorm or RMSNorm.
  NormKind kind() const { return kind_; }
  /// The weight slot, [d].
  Tensor<T>& weight() const { return *weight_; }
  /// The bias (undefined for RMSNorm or without bias).
  Tensor<T> bias() const { return bias_ ? *bias_ : Tensor<T>(); }

 private:
  NormKind kind_;
  double eps_;
  Tensor<T>* weight_ = nullptr;
  Tensor<T>* bias_ = nullptr;
};

}  // namespace condense::nn
