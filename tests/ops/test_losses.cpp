// cross_entropy: values and gradients against reference numbers (computed with PyTorch) and a
// plain double loop (mean/sum/none, ignore_index, label smoothing, int32/int64 targets,
// leading dims, large logits), gradchecks, the all-ignored case and argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/losses.hpp"
#include "test_util.hpp"

namespace test_losses {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::values;

namespace {

/// Per-row losses by a plain double loop (0 for ignored rows) and the count of counted rows.
template <FloatingElement T, IndexElement I>
std::vector<double> loop_ce(const Tensor<T>& logits, const Tensor<I>& targets, std::int64_t ignore, double smoothing,
                            std::int64_t& count) {
  const auto x = values(logits.contiguous());
  const auto t = targets.contiguous().to_vector();
  const auto c = static_cast<std::size_t>(logits.size(-1));
  std::vector<double> out(t.size(), 0.0);
  count = 0;
  for (std::size_t r = 0; r < t.size(); ++r) {
    if (static_cast<std::int64_t>(t[r]) == ignore) continue;
    ++count;
    double m = -INFINITY;
    for (std::size_t j = 0; j < c; ++j) m = std::max(m, x[r * c + j]);
    double s = 0.0, mean_x = 0.0;
    for (std::size_t j = 0; j < c; ++j) {
      s += std::exp(x[r * c + j] - m);
      mean_x += x[r * c + j] / static_cast<double>(c);
    }
    const double lse = m + std::log(s);
    out[r] = (1.0 - smoothing) * (lse - x[r * c + static_cast<std::size_t>(t[r])]) + smoothing * (lse - mean_x);
  }
  return out;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

double total(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s;
}

}  // namespace

TEST_CASE("cross_entropy matches reference values") {
  // Reference numbers from torch.nn.functional.cross_entropy in float64.
  auto x = tensor<double>({1.0, 2.0, 0.5, 0.1, -1.0, 3.0, 0.0, 0.0, 0.0}, {3, 3}).requires_grad_();
  auto t = tensor<std::int64_t>({1, 2, -100});
  auto loss = cross_entropy(x, t);
  CHECK(loss.shape() == Shape{});
  CHECK(loss.grad_fn_name() == "cross_entropy");
  CHECK(loss.item() == doctest::Approx(0.2675715015342181).epsilon(1e-13));
  loss.backward();
  const std::vector<double> grad{0.115611948811, -0.185734140394, 0.070122191583, 0.025631802854, 0.008532085993,
                                 -0.034163888847, 0, 0, 0};
  CHECK(max_diff(values(x.grad()), grad) < 1e-11);

  x.zero_grad();
  auto smooth = cross_entropy(x, t, {.label_smoothing = 0.1});
  CHECK(smooth.item() == doctest::Approx(0.4242381682008848).epsilon(1e-13));
  smooth.backward();
  const std::vector<double> grad_smooth{0.098945282144, -0.152400807061, 0.053455524916, 0.008965136188,
                                        -0.008134580673, -0.000830555514, 0, 0, 0};
  CHECK(max_diff(values(x.grad()), grad_smooth) < 1e-11);

  auto none = cross_entropy(x, t, {.reduction = Reduction::None});
  CHECK(none.shape() == Shape{3});
  CHECK(max_diff(values(none), {0.464368784108, 0.070774218960, 0.0}) < 1e-11);
  auto summed = cross_entropy(x, t, {.reduction = Reduction::Sum, .label_smoothing = 0.25});
  CHECK(summed.item() == doctest::Approx(1.318476336402).epsilon(1e-11));
  // Two equal logits: log 2.
  CHECK(cross_entropy(tensor<float>({0, 0}, {1, 2}), tensor<std::int32_t>({1})).item() == doctest::Approx(std::log(2.0)));
}

TEST_CASE("cross_entropy matches a double loop") {
  Generator gen(31);
  for (double smoothing : {0.0, 0.2}) {
    auto x = randn<float>({37, 29}, gen, 0.0, 3.0);
    auto t = randint<std::int32_t>({37}, 0, 29, gen);
    t.data()[3] = -100;
    t.data()[20] = -100;
    std::int64_t count = 0;
    const auto ref = loop_ce(x, t, -100, smoothing, count);
    REQUIRE(count == 35);
    CHECK(max_diff(values(cross_entropy(x, t, {.reduction = Reduction::None, .label_smoothing = smoothing})), ref) < 1e-5);
    CHECK(cross_entropy(x, t, {.reduction = Reduction::Sum, .label_smoothing = smoothing}).item() ==
          doctest::Approx(total(ref)).epsilon(1e-5));
    CHECK(cross_entropy(x, t, {.label_smoothing = smoothing}).item() == doctest::Approx(total(ref) / 35.0).epsilon(1e-5));
  }
  // Leading dims [2, 3, C], a custom ignore_index that is a valid class, int64 targets.
  auto x3 = randn<double>({2, 3, 7}, gen);
  auto t3 = tensor<std::int64_t>({0, 6, 3, 3, 1, 5}, {2, 3});
  std::int64_t count = 0;
  const auto ref = loop_ce(x3, t3, 3, 0.0, count);
  CHECK(count == 4);
  auto none = cross_entropy(x3, t3, {.ignore_index = 3, .reduction = Reduction::None});
  CHECK(none.shape() == Shape{2, 3});
  CHECK(max_diff(values(none), ref) < 1e-12);
  CHECK(cross_entropy(x3, t3, {.ignore_index = 3}).item() == doctest::Approx(total(ref) / 4.0).epsilon(1e-12));
  // Non-contiguous logits.
  auto xt = randn<double>({9, 5}, gen).transpose(0, 1);
  auto tt = tensor<std::int64_t>({8, 0, 4, 2, 7});
  CHECK(max_diff(values(cross_entropy(xt, tt, {.reduction = Reduction::None})), loop_ce(xt, tt, -100, 0.0, count)) < 1e-12);
  // Many rows over threads, in float.
  auto big = randn<float>({600, 100}, gen);
  auto tb = randint<std::int64_t>({600}, 0, 100, gen);
  CHECK(max_diff(values(cross_entropy(big, tb, {.reduction = Reduction::None})), loop_ce(big, tb, -100, 0.0, count)) < 1e-5);
}

TEST_CASE("cross_entropy is stable for large logits") {
  auto x = tensor<float>({1000.0f, 0.0f, -1000.0f, 500.0f}, {2, 2});
  auto loss = cross_entropy(x, tensor<std::int64_t>({1, 0}), {.reduction = Reduction::None});
  const auto v = values(loss);
  CHECK(v[0] == doctest::Approx(1000.0));
  CHECK(v[1] == doctest::Approx(1500.0));
  auto xg = tensor<double>({1000.0, 0.0, -1000.0, 500.0}, {2, 2}).requires_grad_();
  cross_entropy(xg, tensor<std::int64_t>({1, 0})).backward();
  CHECK(values(xg.grad()) == std::vector<double>{0.5, -0.5, -0.5, 0.5});
}

TEST_CASE("cross_entropy with infinite logits follows the log-sum-exp limits") {
  const float inf = std::numeric_limits<float>::infinity();
  const auto x = tensor<float>({inf, 0, 1,       // one +inf, another target: +inf
                                inf, inf, 0,     // two +inf: still +inf, not NaN
                                inf, 0, 0,       // the target is the +inf class: inf - inf
                                -inf, 2, 3,      // a -inf logit adds nothing
                                -inf, -inf, -inf},  // no finite logit at all
                               {5, 3});
  const auto v = values(cross_entropy(x, tensor<std::int64_t>({1, 2, 0, 1, 0}), {.reduction = Reduction::None}));
  CHECK((std::isinf(v[0]) && v[0] > 0));
  CHECK((std::isinf(v[1]) && v[1] > 0));
  CHECK(std::isnan(v[2]));
  CHECK(v[3] == doctest::Approx(std::log(std::exp(2.0) + std::exp(3.0)) - 2.0));
  CHECK(std::isnan(v[4]));  // -inf - -inf
}

TEST_CASE("cross_entropy with every target ignored") {
  auto x = tensor<double>({1, 2, 3, 4}, {2, 2}).requires_grad_();
  auto t = tensor<std::int64_t>({-100, -100});
  auto loss = cross_entropy(x, t);
  CHECK(loss.item() == 0.0);  // PyTorch returns NaN here
  loss.backward();
  CHECK(values(x.grad()) == std::vector<double>{0, 0, 0, 0});
  CHECK(cross_entropy(x, t, {.reduction = Reduction::Sum}).item() == 0.0);
  CHECK(values(cross_entropy(x, t, {.reduction = Reduction::None})) == std::vector<double>{0, 0});
  CHECK(cross_entropy(zeros<float>({0, 4}), zeros<std::int64_t>({0})).item() == 0.0);
}

TEST_CASE("gradcheck: cross_entropy") {
  Generator gen(32);
  auto x = randn<double>({5, 4}, gen);
  auto t = tensor<std::int64_t>({3, -100, 0, 3, 1});
  CHECK_GRADCHECK([t](const GradInputs& a) { return cross_entropy(a[0], t); }, {x});
  CHECK_GRADCHECK([t](const GradInputs& a) { return cross_entropy(a[0], t, {.reduction = Reduction::Sum}); }, {x});
  CHECK_GRADCHECK([t](const GradInputs& a) { return cross_entropy(a[0], t, {.reduction = Reduction::None}); }, {x});
  CHECK_GRADCHECK([t](const GradInputs& a) { return cross_entropy(a[0], t, {.label_smoothing = 0.3}); }, {x});
  CHECK_GRADCHECK([t](const GradInputs& a) {
    return cross_entropy(a[0], t, {.reduction = Reduction::None, .label_smoothing = 0.1});
  }, {x});
  auto t32 = tensor<std::int32_t>({2, 2, 0, 1, 1}, {5});
  CHECK_GRADCHECK([t32](const GradInputs& a) { return cross_entropy(a[0], t32, {.ignore_index = 1}); }, {x});
  auto xt = randn<double>({4, 5}, gen).transpose(0, 1);
  REQUIRE(!xt.is_contiguous());
  CHECK_GRADCHECK([t](const GradInputs& a) { return cross_entropy(a[0], t, {.reduction = Reduction::Sum}); }, {xt});
  auto x3 = randn<double>({2, 2, 3}, gen);
  auto t3 = tensor<std::int64_t>({2, 0, 1, 1}, {2, 2});
  CHECK_GRADCHECK([t3](const GradInputs& a) { return cross_entropy(a[0], t3, {.label_smoothing = 0.5}); }, {x3});
}

TEST_CASE("cross_entropy: argument errors") {
  auto x = zeros<float>({4, 10});
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<std::int64_t>({1, 12, 0, 0})),
                       "[cross_entropy] target 12 out of range for 10 classes (logits (4x10))", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<std::int32_t>({1, -1, 0, 0})),
                       "[cross_entropy] target -1 out of range for 10 classes (logits (4x10))", Error);
  // A target equal to ignore_index is skipped even when it is out of range.
  CHECK(cross_entropy(x, tensor<std::int64_t>({1, 0, 0, 10}), {.ignore_index = 10, .reduction = Reduction::Sum}).item() ==
        doctest::Approx(3.0 * std::log(10.0)));
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<std::int64_t>({1, 2, 3})),
                       "[cross_entropy] targets of shape (3) do not match logits (4x10); expected targets of shape (4)", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<std::int64_t>({1, 2, 3, 4}, {4, 1})),
                       "[cross_entropy] targets of shape (4x1) do not match logits (4x10); expected targets of shape (4)", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, zeros<std::int64_t>({4}), {.label_smoothing = 1.5}),
                       "[cross_entropy] label_smoothing must be in [0, 1], got 1.5", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(scalar_tensor<float>(1.0f), scalar_tensor<std::int64_t>(0)),
                       "[cross_entropy] logits must have a class dimension, got shape ()", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros<float>({4, 0}), zeros<std::int64_t>({4})),
                       "[cross_entropy] logits of shape (4x0) have no classes", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(Tensor<float>(), zeros<std::int64_t>({4})), "[cross_entropy] undefined tensor argument", Error);
}

}  // namespace test_losses
