// layer_norm and rms_norm: forward values against a plain double loop, the fused backward
// against autograd through a composition of core ops (with a small local sqrt), gradchecks
// (with and without weight/bias, non-contiguous and 3-D inputs) and argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/norms.hpp"
#include "test_util.hpp"

namespace test_norms {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::max_abs_diff;
using condense::testing::values;

namespace {

/// Differentiable elementwise sqrt for the reference compositions (not part of the library).
template <FloatingElement T>
Tensor<T> ref_sqrt(const Tensor<T>& a) {
  Tensor<T> out = detail::unary_map("ref_sqrt", a, [](T v) { return std::sqrt(v); });
  record<T>("ref_sqrt", out, {a}, [out_d = out.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, g / (out_d * T(2)));
  });
  return out;
}

/// layer_norm built from core ops: (x - mean) / sqrt(var + eps) * weight + bias.
template <FloatingElement T>
Tensor<T> ref_layer_norm(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, double eps) {
  const Tensor<T> c = x - mean(x, {-1}, true);
  const Tensor<T> var = mean(c * c, {-1}, true);
  Tensor<T> y = c / ref_sqrt(var + static_cast<T>(eps));
  if (w.defined()) y = y * w;
  if (b.defined()) y = y + b;
  return y;
}

/// rms_norm built from core ops: x / sqrt(mean(x^2) + eps) * weight.
template <FloatingElement T>
Tensor<T> ref_rms_norm(const Tensor<T>& x, const Tensor<T>& w, double eps) {
  Tensor<T> y = x / ref_sqrt(mean(x * x, {-1}, true) + static_cast<T>(eps));
  if (w.defined()) y = y * w;
  return y;
}

/// Plain double loop over rows of a contiguous copy: layer_norm (rms = false) or rms_norm.
template <FloatingElement T>
std::vector<double> loop_norm(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b, double eps, bool rms) {
  const auto xv = values(x);
  const std::vector<double> wv = w.defined() ? values(w) : std::vector<double>();
  const std::vector<double> bv = b.defined() ? values(b) : std::vector<double>();
  const auto d = static_cast<std::size_t>(x.size(-1));
  std::vector<double> out(xv.size());
  for (std::size_t r = 0; r < xv.size() / d; ++r) {
    double mu = 0.0, var = 0.0;
    if (!rms) {
      for (std::size_t i = 0; i < d; ++i) mu += xv[r * d + i];
      mu /= static_cast<double>(d);
    }
    for (std::size_t i = 0; i < d; ++i) var += (xv[r * d + i] - mu) * (xv[r * d + i] - mu);
    var /= static_cast<double>(d);
    for (std::size_t i = 0; i < d; ++i) {
      double y = (xv[r * d + i] - mu) / std::sqrt(var + eps);
      if (!wv.empty()) y *= wv[i];
      if (!bv.empty()) y += bv[i];
      out[r * d + i] = y;
    }
  }
  return out;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

/// Backward of `fused` and `reference` (both of x, w, b) under the same random upstream
/// gradient; returns the largest difference over the output and the three gradients.
template <FloatingElement T, class F, class R>
double compare_backward(F fused, R reference, const Tensor<T>& x0, const Tensor<T>& w0, const Tensor<T>& b0,
                        Generator& gen) {
  auto leaf = [](const Tensor<T>& t) { return t.defined() ? Tensor<T>(t.detach()).requires_grad_() : Tensor<T>(); };
  Tensor<T> x1 = leaf(x0), w1 = leaf(w0), b1 = leaf(b0);
  Tensor<T> x2 = leaf(x0), w2 = leaf(w0), b2 = leaf(b0);
  const Tensor<T> y1 = fused(x1, w1, b1);
  const Tensor<T> y2 = reference(x2, w2, b2);
  const Tensor<T> g = randn<T>(y1.shape(), gen);
  y1.backward(g);
  y2.backward(g);
  double worst = max_abs_diff(y1, y2);
  worst = std::max(worst, max_abs_diff(x1.grad(), x2.grad()));
  if (w0.defined()) worst = std::max(worst, max_abs_diff(w1.grad(), w2.grad()));
  if (b0.defined()) worst = std::max(worst, max_abs_diff(b1.grad(), b2.grad()));
  return worst;
}

}  // namespace

TEST_CASE("layer_norm forward matches a double loop") {
  Generator gen(10);
  auto x = randn<float>({3, 5, 16}, gen, 2.0, 3.0);
  auto w = randn<float>({16}, gen);
  auto b = randn<float>({16}, gen);
  CHECK(max_diff(values(layer_norm(x, w, b)), loop_norm(x, w, b, 1e-5, false)) < 1e-5);
  CHECK(max_diff(values(layer_norm(x)), loop_norm(x, Tensor<float>(), Tensor<float>(), 1e-5, false)) < 1e-5);
  CHECK(max_diff(values(layer_norm(x, w, Tensor<float>(), 0.1)), loop_norm(x, w, Tensor<float>(), 0.1, false)) < 1e-5);
  CHECK(max_diff(values(layer_norm(x, Tensor<float>(), b)), loop_norm(x, Tensor<float>(), b, 1e-5, false)) < 1e-5);
  // Non-contiguous input: normalised over its logical last dim.
  auto xt = randn<double>({16, 7}, gen).transpose(0, 1);
  REQUIRE(!xt.is_contiguous());
  auto wd = randn<double>({16}, gen), bd = randn<double>({16}, gen);
  CHECK(max_diff(values(layer_norm(xt, wd, bd)), loop_norm(xt.contiguous(), wd, bd, 1e-5, false)) < 1e-12);
  // Hand-computed row: x = (1, 3): mean 2, var 1 -> (-1, 1) / sqrt(1 + eps).
  auto small = layer_norm(tensor<double>({1, 3}, {1, 2}), Tensor<double>(), Tensor<double>(), 0.0);
  CHECK(values(small) == std::vector<double>{-1.0, 1.0});
  // A constant row normalises to zero (var = 0) and then to the bias.
  auto flat = layer_norm(full<float>({2, 8}, 4.0f), Tensor<float>(), full<float>({8}, 0.5f));
  CHECK(values(flat) == std::vector<double>(16, 0.5));
  // Large offset: the two-pass variance stays accurate in float.
  auto shifted = randn<float>({4, 256}, gen, 1000.0, 1.0);
  CHECK(max_diff(values(layer_norm(shifted)), loop_norm(shifted, Tensor<float>(), Tensor<float>(), 1e-5, false)) < 2e-3);
  // Rows spread over threads.
  auto big = randn<float>({300, 256}, gen);
  CHECK(max_diff(values(layer_norm(big)), loop_norm(big, Tensor<float>(), Tensor<float>(), 1e-5, false)) < 1e-5);
}

TEST_CASE("rms_norm forward matches a double loop") {
  Generator gen(11);
  auto x = randn<float>({4, 3, 32}, gen, 0.5, 2.0);
  auto w = randn<float>({32}, gen);
  CHECK(max_diff(values(rms_norm(x, w)), loop_norm(x, w, Tensor<float>(), 1e-6, true)) < 1e-5);
  CHECK(max_diff(values(rms_norm(x)), loop_norm(x, Tensor<float>(), Tensor<float>(), 1e-6, true)) < 1e-5);
  CHECK(max_diff(values(rms_norm(x, w, 0.5)), loop_norm(x, w, Tensor<float>(), 0.5, true)) < 1e-5);
  // Hand-computed row: x = (3, 4): mean(x^2) = 12.5.
  auto small = rms_norm(tensor<double>({3, 4}), Tensor<double>(), 0.0);
  CHECK(values(small)[0] == doctest::Approx(3.0 / std::sqrt(12.5)).epsilon(1e-14));
  CHECK(values(small)[1] == doctest::Approx(4.0 / std::sqrt(12.5)).epsilon(1e-14));
  auto xt = randn<double>({32, 6}, gen).transpose(0, 1);
  CHECK(max_diff(values(rms_norm(xt)), loop_norm(xt.contiguous(), Tensor<double>(), Tensor<double>(), 1e-6, true)) < 1e-12);
  auto big = randn<float>({300, 256}, gen);
  CHECK(max_diff(values(rms_norm(big)), loop_norm(big, Tensor<float>(), Tensor<float>(), 1e-6, true)) < 1e-5);
}

TEST_CASE("layer_norm fused backward matches the composition of core ops") {
  Generator gen(12);
  auto fused = [](const auto& x, const auto& w, const auto& b) { return layer_norm(x, w, b, 1e-3); };
  auto ref = [](const auto& x, const auto& w, const auto& b) { return ref_layer_norm(x, w, b, 1e-3); };
  const Tensor<double> none;
  auto x = randn<double>({6, 10}, gen, 1.0, 2.0);
  auto w = randn<double>({10}, gen), b = randn<double>({10}, gen);
  CHECK(compare_backward<double>(fused, ref, x, w, b, gen) < 1e-12);
  CHECK(compare_backward<double>(fused, ref, x, none, b, gen) < 1e-12);
  CHECK(compare_backward<double>(fused, ref, x, w, none, gen) < 1e-12);
  CHECK(compare_backward<double>(fused, ref, x, none, none, gen) < 1e-12);
  CHECK(compare_backward<double>(fused, ref, randn<double>({2, 3, 10}, gen), w, b, gen) < 1e-12);
  CHECK(compare_backward<double>(fused, ref, randn<double>({10, 5}, gen).transpose(0, 1), w, b, gen) < 1e-12);
  // Several thread chunks: the per-chunk weight/bias partial sums are combined.
  auto wide = randn<double>({256}, gen), wideb = randn<double>({256}, gen);
  CHECK(compare_backward<double>(fused, ref, randn<double>({301, 256}, gen), wide, wideb, gen) < 1e-10);
  // Float kernel against the same composition in float.
  auto xf = randn<float>({301, 256}, gen), wf = randn<float>({256}, gen), bf = randn<float>({256}, gen);
  CHECK(compare_backward<float>(fused, ref, xf, wf, bf, gen) < 2e-3);
}

TEST_CASE("rms_norm fused backward matches the composition of core ops") {
  Generator gen(13);
  auto fused = [](const auto& x, const auto& w, const auto&) { return rms_norm(x, w, 1e-3); };
  auto ref = [](const auto& x, const auto& w, const auto&) { return ref_rms_norm(x, w, 1e-3); };
  const Tensor<double> none;
  auto w = randn<double>({12}, gen);
  CHECK(compare_backward<double>(fused, ref, randn<double>({5, 12}, gen), w, none, gen) < 1e-12);
  CHECK(compare_backward<double>(fused, ref, randn<double>({5, 12}, gen), none, none, gen) < 1e-12);
  CHECK(compare_backward<double>(fused, ref, randn<double>({12, 4}, gen).transpose(0, 1), w, none, gen) < 1e-12);
  CHECK(compare_backward<double>(fused, ref, randn<double>({3, 2, 12}, gen), w, none, gen) < 1e-12);
  auto wide = randn<double>({256}, gen);
  CHECK(compare_backward<double>(fused, ref, randn<double>({301, 256}, gen), wide, none, gen) < 1e-10);
  const Tensor<float> nonef;
  CHECK(compare_backward<float>(fused, ref, randn<float>({301, 256}, gen), randn<float>({256}, gen), nonef, gen) < 2e-3);
}

TEST_CASE("gradcheck: layer_norm") {
  Generator gen(14);
  auto x = randn<double>({4, 6}, gen);
  auto w = randn<double>({6}, gen), b = randn<double>({6}, gen);
  CHECK_GRADCHECK([](const GradInputs& t) { return layer_norm(t[0], t[1], t[2]); }, {x, w, b});
  CHECK_GRADCHECK([](const GradInputs& t) { return layer_norm(t[0], t[1]); }, {x, w});
  CHECK_GRADCHECK([](const GradInputs& t) { return layer_norm(t[0], Tensor<double>(), t[1], 0.1); }, {x, b});
  CHECK_GRADCHECK([](const GradInputs& t) { return layer_norm(t[0]); }, {x});
  auto xt = randn<double>({6, 4}, gen).transpose(0, 1);
  REQUIRE(!xt.is_contiguous());
  CHECK_GRADCHECK([](const GradInputs& t) { return layer_norm(t[0], t[1], t[2]); }, {xt, w, b});
  auto x3 = randn<double>({2, 3, 6}, gen);
  CHECK_GRADCHECK([](const GradInputs& t) { return layer_norm(t[0], t[1], t[2]); }, {x3, w, b});
  // 1-D input: a single row.
  CHECK_GRADCHECK([](const GradInputs& t) { return layer_norm(t[0], t[1], t[2]); }, {randn<double>({6}, gen), w, b});
  // Non-contiguous weight.
  auto ws = randn<double>({12}, gen).slice(0, 0, 12, 2);
  CHECK_GRADCHECK([](const GradInputs& t) { return layer_norm(t[0], t[1]); }, {x, ws});
}

TEST_CASE("gradcheck: rms_norm") {
  Generator gen(15);
  auto x = randn<double>({4, 6}, gen);
  auto w = randn<double>({6}, gen);
  CHECK_GRADCHECK([](const GradInputs& t) { return rms_norm(t[0], t[1]); }, {x, w});
  CHECK_GRADCHECK([](const GradInputs& t) { return rms_norm(t[0], Tensor<double>(), 0.1); }, {x});
  auto xt = randn<double>({6, 4}, gen).transpose(0, 1);
  CHECK_GRADCHECK([](const GradInputs& t) { return rms_norm(t[0], t[1]); }, {xt, w});
  CHECK_GRADCHECK([](const GradInputs& t) { return rms_norm(t[0], t[1]); }, {randn<double>({2, 3, 6}, gen), w});
}

TEST_CASE("norms: recording and partial gradients") {
  Generator gen(16);
  auto x = randn<double>({3, 4}, gen);
  auto w = randn<double>({4}, gen).requires_grad_();
  CHECK(layer_norm(x).grad_fn_name() == "");
  CHECK(layer_norm(x).requires_grad() == false);
  auto y = layer_norm(x, w);
  CHECK(y.grad_fn_name() == "layer_norm");
  sum(y).backward();
  CHECK(!x.requires_grad());
  CHECK(w.grad().shape() == Shape{4});
  auto xr = randn<double>({3, 4}, gen).requires_grad_();
  auto z = rms_norm(xr, randn<double>({4}, gen));
  CHECK(z.grad_fn_name() == "rms_norm");
  sum(z).backward();
  CHECK(xr.grad().shape() == Shape{3, 4});
  {
    NoGradGuard no_grad;
    CHECK(!layer_norm(xr, w).requires_grad());
  }
  // Empty leading dims are fine.
  CHECK(layer_norm(zeros<float>({0, 8})).shape() == Shape{0, 8});
}

TEST_CASE("norms: argument errors") {
  auto x = zeros<float>({2, 4});
  CHECK_THROWS_WITH_AS(layer_norm(x, zeros<float>({3})), "[layer_norm] weight of shape (3) does not match the normalised dimension 4 of x (2x4)", Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, Tensor<float>(), zeros<float>({4, 1})), "[layer_norm] bias of shape (4x1) does not match the normalised dimension 4 of x (2x4)", Error);
  CHECK_THROWS_WITH_AS(layer_norm(scalar_tensor<float>(1.0f)), "[layer_norm] x must have at least one dimension, got shape ()", Error);
  CHECK_THROWS_WITH_AS(layer_norm(zeros<float>({3, 0})), "[layer_norm] cannot normalise over an empty last dimension, x has shape (3x0)", Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, Tensor<float>(), Tensor<float>(), -1.0), "[layer_norm] eps must be finite and non-negative, got -1", Error);
  CHECK_THROWS_WITH_AS(layer_norm(Tensor<float>()), "[layer_norm] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(rms_norm(x, zeros<float>({5})), "[rms_norm] weight of shape (5) does not match the normalised dimension 4 of x (2x4)", Error);
  CHECK_THROWS_WITH_AS(rms_norm(x, Tensor<float>(), NAN), "[rms_norm] eps must be finite and non-negative, got nan", Error);
  CHECK_THROWS_WITH_AS(rms_norm(scalar_tensor<double>(1.0)), "[rms_norm] x must have at least one dimension, got shape ()", Error);
}

}  // namespace test_norms
