// Learning-rate schedules as closed-form functions of the step: constant (with optional
// linear warmup), linear warmup + cosine decay to a floor, and linear warmup + linear decay.
//
// `step` is the 0-based index of the update about to be made (the optimizer's steps() before
// calling step()), so a loop reads
//     opt.set_lr(warmup_cosine(opt.steps(), 3e-4, 100, 10000, 3e-5)); opt.step();
// Warmup: for step < warmup_steps the rate is base_lr * (step + 1) / warmup_steps, so the
// first update already moves (base_lr / warmup_steps) and update warmup_steps - 1 uses base_lr.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

#include "condense/core/error.hpp"

namespace condense::optim {

namespace detail {

/// Checks the arguments shared by the schedules (`op` names the schedule in errors).
inline void check_schedule(const char* op, std::int64_t step, double base_lr, std::int64_t warmup_steps,
                           std::int64_t total_steps, double end_lr) {
  CONDENSE_CHECK(step >= 0, op, "step must be >= 0, got ", step);
  CONDENSE_CHECK(std::isfinite(base_lr) && base_lr >= 0.0, op, "base_lr must be finite and >= 0, got ", base_lr);
  CONDENSE_CHECK(std::isfinite(end_lr) && end_lr >= 0.0, op, "final learning rate must be finite and >= 0, got ", end_lr);
  CONDENSE_CHECK(warmup_steps >= 0, op, "warmup_steps must be >= 0, got ", warmup_steps);
  CONDENSE_CHECK(total_steps >= warmup_steps, op, "total_steps (", total_steps, ") must be >= warmup_steps (",
                 warmup_steps, ")");
}

/// The warmup rate for step < warmup_steps.
inline double warmup_rate(std::int64_t step, double base_lr, std::int64_t warmup_steps) {
  return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
}

}  // namespace detail

/// base_lr at every step, after an optional linear warmup over `warmup_steps` updates.
inline double constant_lr(std::int64_t step, double base_lr, std::int64_t warmup_steps = 0) {
  detail::check_schedule("constant_lr", step, base_lr, warmup_steps, warmup_steps, 0.0);
  return step < warmup_steps ? detail::warmup_rate(step, base_lr, warmup_steps) : base_lr;
}

/// Linear warmup, then cosine decay from base_lr to min_lr:
///   step < warmup_steps:                 base_lr * (step + 1) / warmup_steps
///   warmup_steps <= step < total_steps:  min_lr + (base_lr - min_lr) * (1 + cos(pi * r)) / 2,
///                                        r = (step - warmup_steps) / (total_steps - warmup_steps)
///   step >= total_steps:                 min_lr
/// So step == warmup_steps gives base_lr and the rate reaches min_lr at step == total_steps.
inline double warmup_cosine(std::int64_t step, double base_lr, std::int64_t warmup_steps, std::int64_t total_steps,
                            double min_lr = 0.0) {
  detail::check_schedule("warmup_cosine", step, base_lr, warmup_steps, total_steps, min_lr);
  if (step < warmup_steps) return detail::warmup_rate(step, base_lr, warmup_steps);
  if (step >= total_steps) return min_lr;
  const double r = static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * r));
}

/// Linear warmup, then linear decay from base_lr to end_lr:
///   step < warmup_steps:                 base_lr * (step + 1) / warmup_steps
///   warmup_steps <= step < total_steps:  base_lr + (end_lr - base_lr) * r, r as in warmup_cosine
///   step >= total_steps:                 end_lr
inline double linear_decay(std::int64_t step, double base_lr, std::int64_t total_steps, double end_lr = 0.0,
                           std::int64_t warmup_steps = 0) {
  detail::check_schedule("linear_decay", step, base_lr, warmup_steps, total_steps, end_lr);
  if (step < warmup_steps) return detail::warmup_rate(step, base_lr, warmup_steps);
  if (step >= total_steps) return end_lr;
  const double r = static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return base_lr + (end_lr - base_lr) * r;
}

}  // namespace condense::optim
