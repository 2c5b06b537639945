// Training-loop helpers: ProgressLog (one status line per interval: step, smoothed and last
// loss, learning rate, gradient norm, tokens/s, elapsed and remaining time), StepHooks
// (callbacks such as evaluation run every N steps) and GradAccumulation (k micro-batches
// per optimizer step). A loop using all three:
//
//   optim::AdamW<float> opt(model.named_parameters(), {.lr = 3e-4});
//   train::GradAccumulation accum(4);
//   train::ProgressLog log(std::cout, total_steps, 10);
//   train::StepHooks hooks(total_steps);
//   hooks.every(500, "eval", [&](std::int64_t step) { log.message("eval loss " + ...); });
//   double step_loss = 0.0;
//   std::int64_t step_tokens = 0;
//   for (std::int64_t micro = 0; opt.steps() < total_steps; ++micro) {
//     auto loss = model_loss(batch(micro));               // mean over the micro-batch
//     accum.scale(loss).backward();
//     step_loss += loss.item() * accum.loss_scale();
//     step_tokens += batch_tokens(micro);
//     if (!accum.tick()) continue;                        // keep accumulating
//     const double norm = optim::clip_grad_norm(opt.parameters(), 1.0);
//     opt.set_lr(optim::warmup_cosine(opt.steps(), 3e-4, 100, total_steps, 3e-5));
//     opt.step();
//     opt.zero_grad();
//     log.log({.step = opt.steps(), .loss = step_loss, .lr = opt.lr(), .grad_norm = norm, .tokens = step_tokens});
//     step_loss = 0.0;
//     step_tokens = 0;
//     hooks.run(opt.steps());
//   }
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/core/error.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense::train {

/// A duration in seconds, human readable: "42s", "1m23s", "2h03m", "3d04h" (truncated to the
/// unit shown); "?" for a negative or non-finite value.
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0.0) return "?";
  const auto s = static_cast<std::int64_t>(seconds);
  char buf[48];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  }
  return buf;
}

/// A rate with an SI suffix: "950", "12.3k", "1.25M", "3.10G"; "-" for a negative or
/// non-finite value.
inline std::string format_rate(double per_second) {
  if (!std::isfinite(per_second) || per_second < 0.0) return "-";
  char buf[48];
  if (per_second < 1e3) {
    std::snprintf(buf, sizeof buf, "%.0f", per_second);
  } else if (per_second < 1e6) {
    std::snprintf(buf, sizeof buf, "%.1fk", per_second / 1e3);
  } else if (per_second < 1e9) {
    std::snprintf(buf, sizeof buf, "%.2fM", per_second / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2fG", per_second / 1e9);
  }
  return buf;
}

/// Seconds on std::chrono::steady_clock (the default clock of ProgressLog).
inline double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// What one finished optimizer step reports to ProgressLog::log().
struct StepInfo {
  std::int64_t step = 0;                ///< optimizer steps done so far (1 after the first update)
  double loss = 0.0;                    ///< the step's training loss (mean over its tokens)
  double lr = 0.0;                      ///< learning rate used by the step
  std::optional<double> grad_norm;      ///< gradient norm before clipping, when measured
  std::int64_t tokens = 0;              ///< tokens processed by this step (all its micro-batches)
};

/// Prints one progress line per `interval` steps (and at the last step) to a stream:
///
///   step  120/1000 | loss 2.3456 (last 2.3012) | lr 3.00e-04 | grad 1.234 | 12.3k tok/s | elapsed 1m23s | eta 10m08s
///
/// - step: padded to the width of the total;
/// - loss: an exponential moving average of the finite losses (factor `smoothing`, corrected
///   for its zero start, so the first value is the first loss), then the last loss; "%.4f";
/// - lr: "%.2e"; grad: "%.4g", or "-" when the step gave none;
/// - tok/s: tokens reported since the previous line over the time since it (format_rate),
///   "-" when no tokens were reported;
/// - elapsed: since construction; eta: elapsed / (steps done since start_step) * steps left
///   (format_duration).
/// The clock is injectable (a function returning seconds) so that tests control time.
class ProgressLog {
 public:
  /// Logs to `out` for a run of `total_steps` optimizer steps, one line every `interval`
  /// steps. `start_step` is the step count when the run starts (non-zero when resuming).
  ProgressLog(std::ostream& out, std::int64_t total_steps, std::int64_t interval = 10, double smoothing = 0.9,
              std::function<double()> clock = steady_seconds, std::int64_t start_step = 0)
      : out_(out),
        total_(total_steps),
        interval_(interval),
        smoothing_(smoothing),
        clock_(std::move(clock)),
        start_step_(start_step) {
    CONDENSE_CHECK(total_steps > 0, "ProgressLog", "total_steps must be > 0, got ", total_steps);
    CONDENSE_CHECK(interval > 0, "ProgressLog", "interval must be > 0, got ", interval);
    CONDENSE_CHECK(smoothing >= 0.0 && smoothing < 1.0, "ProgressLog", "smoothing must be in [0, 1), got ", smoothing);
    CONDENSE_CHECK(start_step >= 0 && start_step <= total_steps, "ProgressLog", "start_step ", start_step,
                   " is outside [0, ", total_steps, "]");
    CONDENSE_CHECK(static_cast<bool>(clock_), "ProgressLog", "no clock given");
    start_time_ = clock_();
    last_line_time_ = start_time_;
    last_step_ = start_step;
  }

  /// Records one finished step; prints a line when step is a multiple of the interval or the
  /// last step. Returns true when it printed.
  bool log(const StepInfo& info) {
    CONDENSE_CHECK(info.step > last_step_, "ProgressLog", "steps must increase: got step ", info.step, " after step ",
                   last_step_);
    last_step_ = info.step;
    last_loss_ = info.loss;
    if (std::isfinite(info.loss)) {
      ema_ = smoothing_ * ema_ + (1.0 - smoothing_) * info.loss;
      ema_weight_ = smoothing_ * ema_weight_ + (1.0 - smoothing_);
    }
    tokens_since_line_ += info.tokens;
    if (info.step % interval_ != 0 && info.step != total_) return false;

    const double now = clock_();
    const double elapsed = now - start_time_;
    const double since_line = now - last_line_time_;
    const std::int64_t done = info.step - start_step_;
    const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total_ - info.step) : NAN;
    std::string line = step_prefix(info.step);
    line += " | loss " + fixed(smoothed_loss(), "%.4f") + " (last " + fixed(info.loss, "%.4f") + ")";
    line += " | lr " + fixed(info.lr, "%.2e");
    line += " | grad " + (info.grad_norm ? fixed(*info.grad_norm, "%.4g") : std::string("-"));
    line += " | " + (tokens_since_line_ > 0 && since_line > 0.0
                         ? format_rate(static_cast<double>(tokens_since_line_) / since_line)
                         : std::string("-")) +
            " tok/s";
    line += " | elapsed " + format_duration(elapsed) + " | eta " + format_duration(eta);
    out_ << line << '\n';
    out_.flush();
    last_line_time_ = now;
    tokens_since_line_ = 0;
    return true;
  }

  /// Prints "step  120/1000 | <text>" for the last logged step (e.g. evaluation results).
  void message(std::string_view text) {
    out_ << step_prefix(last_step_) << " | " << text << '\n';
    out_.flush();
  }

  /// The smoothed loss (NaN before any finite loss).
  double smoothed_loss() const { return ema_weight_ > 0.0 ? ema_ / ema_weight_ : NAN; }
  /// The loss of the last logged step.
  double last_loss() const { return last_loss_; }
  /// Seconds since construction, on the log's clock.
  double elapsed() const { return clock_() - start_time_; }

 private:
  std::string step_prefix(std::int64_t step) const {
    const std::string total = std::to_string(total_);
    std::string s = std::to_string(step);
    if (s.size() < total.size()) s.insert(0, total.size() - s.size(), ' ');
    return "step " + s + "/" + total;
  }
  static std::string fixed(double x, const char* format) {
    char buf[64];
    std::snprintf(buf, sizeof buf, format, x);
    return buf;
  }

  std::ostream& out_;
  std::int64_t total_;
  std::int64_t interval_;
  double smoothing_;
  std::function<double()> clock_;
  std::int64_t start_step_;
  double start_time_ = 0.0;
  double last_line_time_ = 0.0;
  std::int64_t last_step_ = 0;
  double last_loss_ = NAN;
  double ema_ = 0.0;
  double ema_weight_ = 0.0;
  std::int64_t tokens_since_line_ = 0;
};

/// Callbacks run every N optimizer steps (evaluation, sample generation, checkpoints), in the
/// order registered. Exceptions thrown by a callback propagate out of run().
class StepHooks {
 public:
  /// A callback; receives the step count.
  using Callback = std::function<void(std::int64_t step)>;

  /// `total_steps` (0: unknown) lets hooks registered with also_at_end run at the last step.
  explicit StepHooks(std::int64_t total_steps = 0) : total_(total_steps) {
    CONDENSE_CHECK(total_steps >= 0, "StepHooks", "total_steps must be >= 0, got ", total_steps);
  }

  /// Registers `fn` to run when step % every == 0 (step > 0), and at step == total_steps when
  /// `also_at_end`. Returns *this for chaining.
  StepHooks& every(std::int64_t every, std::string name, Callback fn, bool also_at_end = true) {
    CONDENSE_CHECK(every > 0, "StepHooks", "hook '", name, "': interval must be > 0, got ", every);
    CONDENSE_CHECK(static_cast<bool>(fn), "StepHooks", "hook '", name, "' has no callback");
    hooks_.push_back({every, std::move(name), std::move(fn), also_at_end});
    return *this;
  }

  /// Runs the hooks due at `step`; returns their names in the order they ran.
  std::vector<std::string> run(std::int64_t step) {
    std::vector<std::string> ran;
    for (auto& h : hooks_) {
      const bool due = (step > 0 && step % h.every == 0) || (h.at_end && total_ > 0 && step == total_);
      if (!due) continue;
      h.fn(step);
      ran.push_back(h.name);
    }
    return ran;
  }

 private:
  struct Hook {
    std::int64_t every;
    std::string name;
    Callback fn;
    bool at_end;
  };
  std::int64_t total_;
  std::vector<Hook> hooks_;
};

/// Gradient accumulation over k micro-batches per optimizer step. Gradients add up across
/// backward passes, so scaling each micro-batch's mean loss by 1/k makes the accumulated
/// gradient the gradient of the mean over all k micro-batches, the same as one batch k times
/// as large when the micro-batches have equal sizes (for token-mean losses over micro-batches
/// with different token counts, weight each loss by its share of the tokens instead):
///
///   accum.scale(loss).backward();
///   if (accum.tick()) { opt.step(); opt.zero_grad(); }
class GradAccumulation {
 public:
  /// k = `micro_steps` micro-batches per optimizer step (>= 1; 1 means no accumulation).
  explicit GradAccumulation(std::int64_t micro_steps) : k_(micro_steps) {
    CONDENSE_CHECK(micro_steps >= 1, "GradAccumulation", "micro_steps must be >= 1, got ", micro_steps);
  }
  /// k.
  std::int64_t micro_steps() const { return k_; }
  /// 1 / k, the factor for each micro-batch loss.
  double loss_scale() const { return 1.0 / static_cast<double>(k_); }
  /// loss / k (differentiable; a 16-bit loss is divided in float and rounded once).
  template <DifferentiableElement T>
  Tensor<T> scale(const Tensor<T>& loss) const {
    if (k_ == 1) return loss;
    if constexpr (HalfElement<T>) {
      return loss / static_cast<float>(k_);
    } else {
      return loss / static_cast<T>(k_);
    }
  }
  /// Counts one micro-batch whose backward is done; true on every k-th call (step now).
  bool tick() {
    if (++pending_ < k_) return false;
    pending_ = 0;
    return true;
  }
  /// Micro-batches accumulated since the last step.
  std::int64_t pending() const { return pending_; }

 private:
  std::int64_t k_;
  std::int64_t pending_ = 0;
};

}  // namespace condense::train

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
