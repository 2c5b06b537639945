// Learning-rate schedules: exact values at the warmup, decay and end boundaries, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include "condense/core/error.hpp"
#include "condense/optim/schedule.hpp"

namespace test_schedule {

using namespace condense;
using optim::constant_lr;
using optim::linear_decay;
using optim::warmup_cosine;

TEST_CASE("constant_lr") {
  CHECK(constant_lr(0, 0.1) == 0.1);
  CHECK(constant_lr(12345, 0.1) == 0.1);
  CHECK(constant_lr(0, 1.0, 4) == 0.25);
  CHECK(constant_lr(2, 1.0, 4) == 0.75);
  CHECK(constant_lr(3, 1.0, 4) == 1.0);
  CHECK(constant_lr(4, 1.0, 4) == 1.0);
}

TEST_CASE("warmup_cosine at its boundaries") {
  // warmup 4, total 14, base 1, floor 0.1
  CHECK(warmup_cosine(0, 1.0, 4, 14, 0.1) == 0.25);
  CHECK(warmup_cosine(1, 1.0, 4, 14, 0.1) == 0.5);
  CHECK(warmup_cosine(3, 1.0, 4, 14, 0.1) == 1.0);
  CHECK(warmup_cosine(4, 1.0, 4, 14, 0.1) == 1.0);                               // start of the decay
  CHECK(warmup_cosine(9, 1.0, 4, 14, 0.1) == doctest::Approx(0.55).epsilon(1e-15));  // half way: (1 + 0.1) / 2
  CHECK(warmup_cosine(13, 1.0, 4, 14, 0.1) ==
        doctest::Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * 0.9))).epsilon(1e-15));
  CHECK(warmup_cosine(14, 1.0, 4, 14, 0.1) == 0.1);
  CHECK(warmup_cosine(1000, 1.0, 4, 14, 0.1) == 0.1);
  // No warmup; default floor 0.
  CHECK(warmup_cosine(0, 3e-4, 0, 100) == 3e-4);
  CHECK(warmup_cosine(50, 3e-4, 0, 100) == doctest::Approx(1.5e-4).epsilon(1e-14));
  CHECK(warmup_cosine(100, 3e-4, 0, 100) == 0.0);
  // total == warmup: straight to the floor after the warmup.
  CHECK(warmup_cosine(1, 2.0, 2, 2, 0.5) == 2.0);
  CHECK(warmup_cosine(2, 2.0, 2, 2, 0.5) == 0.5);
  // Monotone decay between the boundaries.
  for (int s = 4; s < 14; ++s) CHECK(warmup_cosine(s + 1, 1.0, 4, 14, 0.1) < warmup_cosine(s, 1.0, 4, 14, 0.1));
}

TEST_CASE("linear_decay at its boundaries") {
  CHECK(linear_decay(0, 1.0, 10) == 1.0);
  CHECK(linear_decay(5, 1.0, 10) == 0.5);
  CHECK(linear_decay(9, 1.0, 10) == doctest::Approx(0.1).epsilon(1e-15));
  CHECK(linear_decay(10, 1.0, 10) == 0.0);
  CHECK(linear_decay(11, 1.0, 10) == 0.0);
  // With an end rate and a warmup of 2 steps: 0.5, 1.0, then 1.0 -> 0.2 over steps 2..6.
  CHECK(linear_decay(0, 1.0, 6, 0.2, 2) == 0.5);
  CHECK(linear_decay(1, 1.0, 6, 0.2, 2) == 1.0);
  CHECK(linear_decay(2, 1.0, 6, 0.2, 2) == 1.0);
  CHECK(linear_decay(4, 1.0, 6, 0.2, 2) == doctest::Approx(0.6).epsilon(1e-15));
  CHECK(linear_decay(6, 1.0, 6, 0.2, 2) == 0.2);
}

TEST_CASE("schedule errors") {
  CHECK_THROWS_WITH_AS(warmup_cosine(-1, 1.0, 4, 14), "[warmup_cosine] step must be >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(warmup_cosine(0, 1.0, 5, 4), "[warmup_cosine] total_steps (4) must be >= warmup_steps (5)", Error);
  CHECK_THROWS_WITH_AS(warmup_cosine(0, -1.0, 0, 4), "[warmup_cosine] base_lr must be finite and >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(warmup_cosine(0, 1.0, 0, 4, NAN),
                       "[warmup_cosine] final learning rate must be finite and >= 0, got nan", Error);
  CHECK_THROWS_WITH_AS(linear_decay(0, 1.0, 4, 0.0, -2), "[linear_decay] warmup_steps must be >= 0, got -2", Error);
  CHECK_THROWS_WITH_AS(constant_lr(0, INFINITY), "[constant_lr] base_lr must be finite and >= 0, got inf", Error);
}

}  // namespace test_schedule
