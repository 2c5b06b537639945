// dropout: identity cases, the kept fraction (about 1 - p), scaling of kept values,
// reproducibility from a seed (and independence of the thread count), the mask-based
// backward, gradchecks with a freshly seeded generator, and argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/dropout.hpp"
#include "test_util.hpp"

namespace test_dropout {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::values;

TEST_CASE("dropout identity cases") {
  Generator gen(41);
  auto x = randn<float>({3, 4}, gen);
  const auto state = gen.state();
  auto same = dropout(x, 0.0, gen);
  CHECK(same.storage().same_block(x.storage()));
  auto eval = dropout(x, 0.7, gen, false);
  CHECK(eval.storage().same_block(x.storage()));
  CHECK(gen.state() == state);  // nothing drawn
}

TEST_CASE("dropout keeps about 1 - p and scales kept values") {
  Generator gen(42);
  const std::int64_t n = 200000;
  auto x = uniform<float>({n}, 1.0, 2.0, gen);
  for (double p : {0.1, 0.5, 0.9}) {
    auto y = dropout(x, p, gen);
    const auto xv = values(x), yv = values(y);
    std::int64_t kept = 0;
    bool scaled = true;
    const float scale = static_cast<float>(1.0 / (1.0 - p));
    for (std::size_t i = 0; i < xv.size(); ++i) {
      if (yv[i] != 0.0) {
        ++kept;
        scaled &= yv[i] == static_cast<double>(static_cast<float>(xv[i]) * scale);
      }
    }
    const double frac = static_cast<double>(kept) / static_cast<double>(n);
    const double sigma = std::sqrt(p * (1.0 - p) / static_cast<double>(n));
    INFO("p = ", p, ", kept fraction ", frac);
    CHECK(std::abs(frac - (1.0 - p)) < 5.0 * sigma);
    CHECK(scaled);
    // Expectation is preserved: mean(y) ~ mean(x).
    CHECK(mean(y).item() == doctest::Approx(mean(x).item()).epsilon(0.05));
  }
  // No long runs: neighbouring elements are independent (about (1-p)^2 of pairs both kept).
  auto y = dropout(ones<double>({n}), 0.5, gen);
  const auto yv = values(y);
  std::int64_t both = 0;
  for (std::size_t i = 0; i + 1 < yv.size(); ++i) both += yv[i] != 0.0 && yv[i + 1] != 0.0;
  CHECK(std::abs(static_cast<double>(both) / static_cast<double>(n - 1) - 0.25) < 0.01);
}

TEST_CASE("dropout masks are reproducible from a seed") {
  Generator base(43);
  auto x = randn<double>({64, 33}, base);
  Generator g1(7), g2(7), g3(8);
  auto a = dropout(x, 0.3, g1);
  auto b = dropout(x, 0.3, g2);
  auto c = dropout(x, 0.3, g3);
  CHECK(values(a) == values(b));
  CHECK(values(a) != values(c));
  // Each call draws once: the next calls agree again and differ from the first.
  auto a2 = dropout(x, 0.3, g1);
  CHECK(values(a2) == values(dropout(x, 0.3, g2)));
  CHECK(values(a2) != values(a));
  // The mask does not depend on the thread count or on the input's layout.
  const int threads = get_num_threads();
  set_num_threads(1);
  Generator g4(7);
  auto single = dropout(x, 0.3, g4);
  set_num_threads(threads);
  CHECK(values(single) == values(a));
  Generator g5(7);
  auto xt = x.transpose(0, 1).contiguous().transpose(0, 1);  // same values, column-major
  REQUIRE(!xt.is_contiguous());
  CHECK(values(dropout(xt, 0.3, g5)) == values(a));
}

TEST_CASE("dropout backward multiplies by the saved mask") {
  Generator gen(44);
  auto x = uniform<double>({10, 20}, 1.0, 2.0, gen).requires_grad_();
  auto y = dropout(x, 0.25, gen);
  CHECK(y.grad_fn_name() == "dropout");
  auto g = randn<double>({10, 20}, gen);
  y.backward(g);
  const auto xv = values(x), yv = values(y), gv = values(g), dv = values(x.grad());
  bool ok = true;
  for (std::size_t i = 0; i < xv.size(); ++i) ok &= std::abs(dv[i] - gv[i] * yv[i] / xv[i]) < 1e-12;
  CHECK(ok);
}

TEST_CASE("gradcheck: dropout") {
  Generator gen(45);
  auto x = randn<double>({6, 7}, gen);
  CHECK_GRADCHECK([](const GradInputs& t) {
    Generator g(99);
    return dropout(t[0], 0.4, g);
  }, {x});
  auto xt = randn<double>({7, 6}, gen).transpose(0, 1);
  CHECK_GRADCHECK([](const GradInputs& t) {
    Generator g(5);
    return dropout(t[0], 0.5, g) * t[0];
  }, {xt});
}

TEST_CASE("dropout: argument errors") {
  Generator gen(46);
  auto x = zeros<float>({3});
  CHECK_THROWS_WITH_AS(dropout(x, 1.0, gen), "[dropout] probability p must be in [0, 1), got 1", Error);
  CHECK_THROWS_WITH_AS(dropout(x, -0.1, gen), "[dropout] probability p must be in [0, 1), got -0.1", Error);
  CHECK_THROWS_WITH_AS(dropout(x, NAN, gen, false), "[dropout] probability p must be in [0, 1), got nan", Error);
  CHECK_THROWS_WITH_AS(dropout(Tensor<float>(), 0.5, gen), "[dropout] undefined tensor argument", Error);
}

}  // namespace test_dropout
