// Training-loop helpers: duration/rate formatting, ProgressLog lines under a fake clock,
// StepHooks, and GradAccumulation (k micro-batches of size b give the update of one batch of
// size k*b).
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/matmul.hpp"
#include "condense/optim/adamw.hpp"
#include "condense/train/loop.hpp"
#include "test_util.hpp"

namespace test_loop {

using namespace condense;
using condense::testing::values;
using namespace condense::train;

namespace {
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}
}  // namespace

TEST_CASE("format_duration and format_rate") {
  CHECK(format_duration(0.0) == "0s");
  CHECK(format_duration(59.9) == "59s");
  CHECK(format_duration(60.0) == "1m00s");
  CHECK(format_duration(83.4) == "1m23s");
  CHECK(format_duration(3599.0) == "59m59s");
  CHECK(format_duration(3600.0) == "1h00m");
  CHECK(format_duration(7380.0) == "2h03m");
  CHECK(format_duration(3 * 86400.0 + 4 * 3600.0 + 59.0) == "3d04h");
  CHECK(format_duration(-1.0) == "?");
  CHECK(format_duration(NAN) == "?");
  CHECK(format_duration(INFINITY) == "?");
  CHECK(format_rate(950.4) == "950");
  CHECK(format_rate(12345.0) == "12.3k");
  CHECK(format_rate(1.25e6) == "1.25M");
  CHECK(format_rate(3.1e9) == "3.10G");
  CHECK(format_rate(NAN) == "-");
}

TEST_CASE("ProgressLog prints one line per interval with a fake clock") {
  std::ostringstream out;
  double now = 100.0;
  ProgressLog log(out, 25, 10, 0.5, [&] { return now; });
  int printed = 0;
  for (int step = 1; step <= 25; ++step) {
    now += step <= 10 ? 1.5 : 0.5;
    StepInfo info{.step = step, .loss = 3.0 - 0.1 * step, .lr = 3e-4, .tokens = step <= 10 ? 512 : 20000};
    if (step <= 10) info.grad_norm = 1.23456;
    printed += log.log(info) ? 1 : 0;
    if (step == 20) log.message("eval loss 1.2500 | ppl 3.49");
  }
  CHECK(printed == 3);
  const auto lines = lines_of(out.str());
  REQUIRE(lines.size() == 4);
  // Step 10: 15 s elapsed, 5120 tokens in 15 s, eta 15 / 10 * 15 = 22.5 s.
  CHECK(lines[0] ==
        "step 10/25 | loss 2.0990 (last 2.0000) | lr 3.00e-04 | grad 1.235 | 341 tok/s | elapsed 15s | eta 22s");
  // Step 20: 20 s elapsed, 200000 tokens in the last 5 s, no gradient norm given, eta 20 / 20 * 5.
  CHECK(lines[1] == "step 20/25 | loss 1.1000 (last 1.0000) | lr 3.00e-04 | grad - | 40.0k tok/s | elapsed 20s | eta 5s");
  CHECK(lines[2] == "step 20/25 | eval loss 1.2500 | ppl 3.49");
  // The last step always prints.
  CHECK(lines[3] == "step 25/25 | loss 0.6000 (last 0.5000) | lr 3.00e-04 | grad - | 40.0k tok/s | elapsed 22s | eta 0s");
  CHECK(log.smoothed_loss() == doctest::Approx(0.6).epsilon(1e-3));
  CHECK(log.last_loss() == doctest::Approx(0.5));
}

TEST_CASE("ProgressLog: padding, resuming, non-finite losses, long runs and errors") {
  std::ostringstream out;
  double now = 0.0;
  ProgressLog log(out, 1000, 100, 0.9, [&] { return now; }, 500);
  now = 3600.0 + 23 * 60;  // 100 steps in 1h23m
  log.log({.step = 501, .loss = 2.0, .lr = 1e-3});
  log.log({.step = 502, .loss = NAN, .lr = 1e-3});  // a NaN loss is shown as last but not smoothed
  CHECK(log.smoothed_loss() == 2.0);
  for (int s = 503; s <= 600; ++s) log.log({.step = s, .loss = 2.0, .lr = 1e-3, .grad_norm = 12345.678});
  const auto lines = lines_of(out.str());
  REQUIRE(lines.size() == 1);
  // eta: 4980 s / 100 steps * 400 steps = 19920 s = 5h32m.
  CHECK(lines[0] == "step  600/1000 | loss 2.0000 (last 2.0000) | lr 1.00e-03 | grad 1.235e+04 | - tok/s | elapsed "
                    "1h23m | eta 5h32m");
  CHECK_THROWS_WITH_AS(log.log({.step = 600, .loss = 1.0}), "[ProgressLog] steps must increase: got step 600 after step 600",
                       Error);
  std::ostringstream nan_out;
  ProgressLog nan_log(nan_out, 2, 1, 0.9, [&] { return now; });
  nan_log.log({.step = 1, .loss = NAN, .lr = 0.0});
  CHECK(nan_out.str().find("loss nan (last nan)") != std::string::npos);
  CHECK_THROWS_WITH_AS(ProgressLog(out, 0), "[ProgressLog] total_steps must be > 0, got 0", Error);
  CHECK_THROWS_WITH_AS(ProgressLog(out, 10, 0), "[ProgressLog] interval must be > 0, got 0", Error);
  CHECK_THROWS_WITH_AS(ProgressLog(out, 10, 1, 1.0), "[ProgressLog] smoothing must be in [0, 1), got 1", Error);
  CHECK_THROWS_WITH_AS(ProgressLog(out, 10, 1, 0.9, steady_seconds, 11), "[ProgressLog] start_step 11 is outside [0, 10]",
                       Error);
}

TEST_CASE("StepHooks run every N steps and at the end") {
  StepHooks hooks(25);
  std::vector<std::int64_t> evals, samples;
  hooks.every(10, "eval", [&](std::int64_t s) { evals.push_back(s); })
      .every(4, "sample", [&](std::int64_t s) { samples.push_back(s); }, false);
  std::vector<std::string> at20;
  for (std::int64_t s = 0; s <= 25; ++s) {
    auto ran = hooks.run(s);
    if (s == 20) at20 = ran;
  }
  CHECK(evals == std::vector<std::int64_t>{10, 20, 25});
  CHECK(samples == std::vector<std::int64_t>{4, 8, 12, 16, 20, 24});
  CHECK(at20 == std::vector<std::string>{"eval", "sample"});
  StepHooks throwing;
  throwing.every(1, "bad", [](std::int64_t) { throw std::runtime_error("hook failed"); });
  CHECK_THROWS_WITH_AS(throwing.run(1), "hook failed", std::runtime_error);
  CHECK_THROWS_WITH_AS(throwing.every(0, "zero", [](std::int64_t) {}), "[StepHooks] hook 'zero': interval must be > 0, got 0",
                       Error);
}

TEST_CASE("gradient accumulation: k micro-batches of b equal one batch of k*b") {
  const std::int64_t k = 4, b = 3;
  Generator gen(21);
  const auto X = randn<double>({2, k * b, 5}, gen);  // inputs for two optimizer steps
  const auto Y = randn<double>({2, k * b, 2}, gen);
  const auto W0 = randn<double>({2, 5}, gen);
  const auto b0 = randn<double>({2}, gen);
  auto mse = [](const Tensor<double>& x, const Tensor<double>& y, const Tensor<double>& w, const Tensor<double>& bias) {
    const auto d = linear(x, w, bias) - y;
    return mean(d * d);
  };

  auto Wa = W0.clone().requires_grad_(), ba = b0.clone().requires_grad_();
  auto Wb = W0.clone().requires_grad_(), bb = b0.clone().requires_grad_();
  optim::AdamW<double> full({{"w", Wa}, {"b", ba}}, {.lr = 0.01, .weight_decay = 0.1});
  optim::AdamW<double> accumulated({{"w", Wb}, {"b", bb}}, {.lr = 0.01, .weight_decay = 0.1});
  GradAccumulation accum(k);
  CHECK(accum.loss_scale() == 0.25);

  for (std::int64_t step = 0; step < 2; ++step) {
    mse(X.select(0, step), Y.select(0, step), Wa, ba).backward();
    int stepped = 0;
    for (std::int64_t m = 0; m < k; ++m) {
      const auto x = X.select(0, step).narrow(0, m * b, b);
      const auto y = Y.select(0, step).narrow(0, m * b, b);
      accum.scale(mse(x, y, Wb, bb)).backward();
      if (accum.tick()) {
        CHECK(m == k - 1);
        CHECK(testing::max_abs_diff(Wa.grad(), Wb.grad()) < 1e-12);
        CHECK(testing::max_abs_diff(ba.grad(), bb.grad()) < 1e-12);
        accumulated.step();
        accumulated.zero_grad();
        ++stepped;
      } else {
        CHECK(accum.pending() == m + 1);
      }
    }
    CHECK(stepped == 1);
    full.step();
    full.zero_grad();
  }
  CHECK(testing::max_abs_diff(Wa, Wb) < 1e-12);
  CHECK(testing::max_abs_diff(ba, bb) < 1e-12);
  CHECK(values(Wa) != values(W0));
  CHECK_THROWS_WITH_AS(GradAccumulation(0), "[GradAccumulation] micro_steps must be >= 1, got 0", Error);
}

}  // namespace test_loop
