// Position modules: LearnedPositions (a table of absolute position vectors added to the
// token embeddings) and Rotary (no parameters: theta and the head dim, applied to q and k
// inside attention through the rope op).
#pragma once

#include <cstdint>

#include "condense/core/random.hpp"
#include "condense/nn/init.hpp"
#include "condense/nn/module.hpp"
#include "condense/ops/embedding.hpp"
#include "condense/ops/rope.hpp"

namespace condense::nn {

/// How a model encodes positions.
enum class PositionKind { Learned, Rope, None };

/// Learned absolute positions. Parameter: "weight" [max_len, d], N(0, init_std^2).
template <DifferentiableElement T>
class LearnedPositions : public Module<T> {
 public:
  /// A table of `max_len` positions of `d` values.
  LearnedPositions(std::int64_t max_len, std::int64_t d, Generator& gen, double init_std = 0.02) {
    CONDENSE_CHECK(max_len > 0 && d > 0, "LearnedPositions", "sizes must be positive, got ", max_len, " x ", d);
    weight_ = &this->register_parameter("weight", Tensor<T>::empty({max_len, d}));
    init::normal_(*weight_, 0.0, init_std, gen);
  }
  /// The vectors of `positions` (each in [0, max_len)). With the table on a CUDA device the
  /// positions may be on the CPU or on that device (they are checked on the host).
  // positions: [T] or [B, T] (int64) -> [T, d] or [B, T, d]
  Tensor<T> forward(const Tensor<std::int64_t>& positions) const {
    CONDENSE_CHECK(positions.defined(), "LearnedPositions", "undefined tensor argument");
    CONDENSE_CHECK(positions.device().is_cpu() || positions.device() == weight_->device(), "LearnedPositions",
                   "positions ", positions.describe(), " must be on the CPU or on the device of the table ",
                   weight_->describe());
    const Tensor<std::int64_t> p = positions.to(Device::cpu()).contiguous();
    const std::int64_t n = p.numel(), max_len = weight_->size(0);
    for (std::int64_t i = 0; i < n; ++i)
      CONDENSE_CHECK(p.data()[i] >= 0 && p.data()[i] < max_len, "LearnedPositions", "position ", p.data()[i],
                     " out of range [0, ", max_len, ")");
    return embedding(*weight_, p);
  }
  /// Same as forward().
  Tensor<T> operator()(const Tensor<std::int64_t>& positions) const { return forward(positions); }
  /// The table slot, [max_len, d].
  Tensor<T>& weight() const { return *weight_; }
  /// Rows of the table.
  std::int64_t max_len() const { return weight_->size(0); }

 private:
  Tensor<T>* weight_ = nullptr;
};

/// Rotary position embedding for heads of `head_dim` (even) with base `theta`. No parameters.
template <DifferentiableElement T>
class Rotary : public Module<T> {
 public:
  /// Rotary embedding for heads of `head_dim` with base `theta`.
  explicit Rotary(std::int64_t head_dim, double theta = 10000.0) : head_dim_(head_dim), theta_(theta) {
    CONDENSE_CHECK(head_dim > 0 && head_dim % 2 == 0, "Rotary", "head dim must be positive and even, got ", head_dim);
    CONDENSE_CHECK(theta > 0.0, "Rotary", "theta must be positive, got ", theta);
  }
  /// The cos/sin table of `positions` (build once per forward, share across layers).
  // positions: [T] or [B, T] -> table [1 or B, T, head_dim/2]
  RopeTable<compute_type_t<T>> table(const Tensor<std::int64_t>& positions) const { return rope_table<compute_type_t<T>>(positions, head_dim_, theta_); }
  /// x rotated at `positions`.
  // x: [B, H, T, head_dim], positions: [T] or [B, T] -> [B, H, T, head_dim]
  Tensor<T> forward(const Tensor<T>& x, const Tensor<std::int64_t>& positions) const { return rope(x, table(positions)); }
  /// Head dim the table is built for.
  std::int64_t head_dim() const { return head_dim_; }
  /// Rotary base.
  double theta() const { return theta_; }

 private:
  std::int64_t head_dim_;
  double theta_;
};

}  // namespace condense::nn
