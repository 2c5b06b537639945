// tanh, sigmoid, relu, gelu (erf and tanh forms), silu: values against double-precision
// formulas (extreme inputs, infinities, NaN), float accuracy, saturation without overflow,
// backward values (including an expanded incoming gradient), gradchecks (contiguous and
// non-contiguous), integer relu and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/activations.hpp"
#include "test_util.hpp"

namespace test_activations {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::linspace;
using condense::testing::values;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Tensor<double> as_double(const std::vector<double>& x) { return from_vector<double>(x, {static_cast<std::int64_t>(x.size())}); }

Tensor<float> as_float(const std::vector<double>& x, std::vector<double>& xf) {
  std::vector<float> v(x.begin(), x.end());
  xf.assign(v.begin(), v.end());
  return from_vector<float>(v, {static_cast<std::int64_t>(v.size())});
}

// ---- double-precision references, written independently of the kernels ----------------
double ref_sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
double ref_gelu_erf(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }  // erfc: no cancellation
double ref_gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}
double ref_silu(double x) { return x * ref_sigmoid(x); }
double ref_relu(double x) { return std::isnan(x) ? x : (x > 0 ? x : 0.0); }

double dref_tanh(double x) { const double t = std::tanh(x); return 1 - t * t; }
double dref_sigmoid(double x) { const double s = ref_sigmoid(x); return s * (1 - s); }
double dref_gelu_erf(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
}
double dref_gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / M_PI), c = 0.044715;
  const double t = std::tanh(k * (x + c * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x);
}
double dref_silu(double x) { const double s = ref_sigmoid(x); return s + x * s * (1 - s); }

/// Special and extreme inputs (repeated so that both the SIMD body and a ragged tail see them).
std::vector<double> special_inputs() {
  std::vector<double> v{-kInf, -1e300, -1e30, -1000, -745, -100, -50, -30, -20, -10, -5, -2, -1, -0.3, -1e-8, -1e-300,
                        -0.0,  0.0,    1e-300, 1e-8, 0.3,  1,    2,   5,   10,  20,  30,  50, 100, 745, 1000, 1e30, kInf, kNaN};
  const auto again = v;
  v.insert(v.end(), again.rbegin(), again.rend());
  return v;
}

}  // namespace

TEST_CASE("activations match double-precision formulas, including extremes") {
  auto x = special_inputs();
  const auto sweep = linspace(-40, 40, 4001);
  x.insert(x.end(), sweep.begin(), sweep.end());
  const auto t = as_double(x);
  CHECK_MATCHES(tanh(t), x, [](double v) { return std::tanh(v); }, 1e-15, 0.0);
  CHECK_MATCHES(sigmoid(t), x, ref_sigmoid, 1e-15, std::numeric_limits<double>::min());
  CHECK_MATCHES(relu(t), x, ref_relu, 0.0, 0.0);
  CHECK_MATCHES(silu(t), x, ref_silu, 1e-15, 1e-300);
  // gelu with erf: 1 + erf(x/sqrt2) cancels for x << 0, so the error is absolute there
  // (PyTorch computes the same formula).
  x.erase(x.begin(), x.begin() + 2);  // -inf and -1e300: x * (1 + erf) underflows differently
  CHECK_MATCHES(gelu(as_double(x)), x, ref_gelu_erf, 1e-14, 1e-15);
  CHECK_MATCHES(gelu(as_double(x), GeluApproximation::Tanh), x, ref_gelu_tanh, 1e-14, 1e-15);
  // infinities and NaN behave like PyTorch (-inf * 0 = NaN)
  const auto s = tensor<double>({-kInf, kInf, kNaN});
  for (const auto& v : {values(gelu(s)), values(gelu(s, GeluApproximation::Tanh)), values(silu(s))}) {
    CHECK(std::isnan(v[0]));
    CHECK(v[1] == kInf);
    CHECK(std::isnan(v[2]));
  }
  CHECK(values(sigmoid(s))[0] == 0.0);
  CHECK(values(sigmoid(s))[1] == 1.0);
  CHECK(values(tanh(s))[0] == -1.0);
}

TEST_CASE("float activations stay within a few ulp of the double formulas") {
  std::vector<double> xf;
  auto raw = linspace(-12, 12, 6001);
  const auto special = special_inputs();
  raw.insert(raw.end(), special.begin() + 2, special.end());  // all but -inf, -1e300
  const auto t = as_float(raw, xf);
  CHECK_MATCHES(tanh(t), xf, [](double v) { return std::tanh(v); }, 6e-7, 1e-30);
  CHECK_MATCHES(sigmoid(t), xf, ref_sigmoid, 6e-7, 1.2e-38);  // subnormal results flush to 0
  CHECK_MATCHES(relu(t), xf, ref_relu, 0.0, 0.0);
  CHECK_MATCHES(silu(t), xf, ref_silu, 6e-7, 1e-36);
  CHECK_MATCHES(gelu(t), xf, ref_gelu_erf, 6e-7, 1e-6);
  CHECK_MATCHES(gelu(t, GeluApproximation::Tanh), xf, ref_gelu_tanh, 6e-7, 1e-6);
}

TEST_CASE("saturation: no overflow, no NaN") {
  CHECK(tanh(tensor<float>({50.0f})).item() == 1.0f);
  CHECK(tanh(tensor<float>({-50.0f})).item() == -1.0f);
  CHECK(tanh(tensor<double>({50.0})).item() == 1.0);
  const float s_neg = sigmoid(tensor<float>({-100.0f})).item();
  CHECK(s_neg >= 0.0f);
  CHECK(s_neg < 1e-30f);
  CHECK(sigmoid(tensor<float>({100.0f})).item() == 1.0f);
  CHECK(sigmoid(tensor<double>({-100.0})).item() == doctest::Approx(std::exp(-100.0)).epsilon(1e-14));
  CHECK(sigmoid(tensor<double>({-1000.0})).item() == 0.0);
  CHECK(silu(tensor<float>({-100.0f})).item() == doctest::Approx(0.0));
  CHECK(silu(tensor<float>({100.0f})).item() == 100.0f);
  CHECK(gelu(tensor<float>({-100.0f})).item() == doctest::Approx(0.0));
  CHECK(gelu(tensor<float>({100.0f}), GeluApproximation::Tanh).item() == 100.0f);
  // backward of saturated outputs is 0, not NaN
  auto x = tensor<float>({-100.0f, 100.0f, -1000.0f, 1000.0f}).requires_grad_();
  sum(sigmoid(x) + tanh(x) + silu(x) + gelu(x) + gelu(x, GeluApproximation::Tanh)).backward();
  const auto g = values(x.grad());
  // d/dx at -100: 0 + 0 + ~0 + ~0 + ~0; at +100: 0 + 0 + 1 + 1 + 1
  CHECK(g[0] == doctest::Approx(0.0));
  CHECK(g[1] == doctest::Approx(3.0));
  CHECK(g[2] == doctest::Approx(0.0));
  CHECK(g[3] == doctest::Approx(3.0));
}

TEST_CASE("relu values, NaN and integers") {
  const auto v = values(relu(tensor<double>({-2.0, -0.0, 0.0, 3.5, kNaN})));
  CHECK(v[0] == 0.0);
  CHECK(v[2] == 0.0);
  CHECK(v[3] == 3.5);
  CHECK(std::isnan(v[4]));
  CHECK(values(relu(tensor<std::int32_t>({-3, 0, 4}))) == std::vector<double>{0, 0, 4});
  CHECK(values(relu(tensor<std::int64_t>({-3000000000LL, 5}))) == std::vector<double>{0, 5});
  CHECK(relu(tensor<std::int32_t>({1})).grad_fn_name().empty());
}

TEST_CASE("gelu defaults to the erf form") {
  Generator gen(3);
  const auto x = randn<float>({64}, gen, 0.0, 3.0);
  CHECK(values(gelu(x)) == values(gelu(x, GeluApproximation::Erf)));
  CHECK(values(gelu(x)) != values(gelu(x, GeluApproximation::Tanh)));
}

TEST_CASE("backward values match the derivative formulas (double and float, expanded grad)") {
  // sum(f(x)).backward() hands each backward rule an expanded (stride 0) gradient
  auto raw = linspace(-30, 30, 5001);
  const std::vector<double> extra{-745, -100, -40, -1e-9, 0.0, 1e-9, 40, 100, 745};
  raw.insert(raw.end(), extra.begin(), extra.end());
  struct Case {
    const char* name;
    std::function<Tensor<double>(const Tensor<double>&)> fd;
    std::function<Tensor<float>(const Tensor<float>&)> ff;
    std::function<double(double)> deriv;
  };
  const std::vector<Case> cases{
      {"tanh", [](const Tensor<double>& t) { return tanh(t); }, [](const Tensor<float>& t) { return tanh(t); }, dref_tanh},
      {"sigmoid", [](const Tensor<double>& t) { return sigmoid(t); }, [](const Tensor<float>& t) { return sigmoid(t); },
       dref_sigmoid},
      {"silu", [](const Tensor<double>& t) { return silu(t); }, [](const Tensor<float>& t) { return silu(t); }, dref_silu},
      {"gelu", [](const Tensor<double>& t) { return gelu(t); }, [](const Tensor<float>& t) { return gelu(t); },
       dref_gelu_erf},
      {"gelu tanh", [](const Tensor<double>& t) { return gelu(t, GeluApproximation::Tanh); },
       [](const Tensor<float>& t) { return gelu(t, GeluApproximation::Tanh); }, dref_gelu_tanh},
      {"relu", [](const Tensor<double>& t) { return relu(t); }, [](const Tensor<float>& t) { return relu(t); },
       [](double v) { return v > 0 ? 1.0 : 0.0; }},
  };
  for (const auto& c : cases) {
    INFO(std::string(c.name));
    auto xd = as_double(raw).requires_grad_();
    sum(c.fd(xd)).backward();
    CHECK_MATCHES(xd.grad(), raw, c.deriv, 1e-13, 1e-15);
    std::vector<double> xs;
    auto xf = as_float(raw, xs).requires_grad_();
    sum(c.ff(xf)).backward();
    // float: 1 - t^2 and 1 + t cancel where tanh saturates, hence the absolute tolerance
    CHECK_MATCHES(xf.grad(), xs, c.deriv, 2e-6, 5e-6);
  }
}

TEST_CASE("gradcheck: activations, contiguous and non-contiguous") {
  Generator gen(21);
  const auto a = randn<double>({3, 5}, gen, 0.0, 2.0);
  const auto at = randn<double>({5, 3}, gen, 0.0, 2.0).transpose(0, 1);
  const auto as = randn<double>({3, 12}, gen, 0.0, 2.0).slice(1, 2, 12, 2);
  REQUIRE(!at.is_contiguous());
  REQUIRE(!as.is_contiguous());
  for (const auto& in : {a, at, as}) {
    CHECK_GRADCHECK([](const GradInputs& x) { return tanh(x[0]); }, {in});
    CHECK_GRADCHECK([](const GradInputs& x) { return sigmoid(x[0]); }, {in});
    CHECK_GRADCHECK([](const GradInputs& x) { return gelu(x[0]); }, {in});
    CHECK_GRADCHECK([](const GradInputs& x) { return gelu(x[0], GeluApproximation::Tanh); }, {in});
    CHECK_GRADCHECK([](const GradInputs& x) { return silu(x[0]); }, {in});
  }
  // relu away from the kink at 0
  const auto r = tensor<double>({-1.5, -0.4, 0.3, 0.9, 2.0, -0.2, 1.1, -3.0, 0.15, 0.6, -0.8, 1.7}, {3, 4});
  CHECK_GRADCHECK([](const GradInputs& x) { return relu(x[0]); }, {r});
  CHECK_GRADCHECK([](const GradInputs& x) { return relu(x[0]); }, {r.transpose(0, 1)});
  // composed, with a broadcast in between
  const auto b = randn<double>({5}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return silu(gelu(x[0]) * x[1]) + tanh(sigmoid(x[0])); }, {a, b});
}

TEST_CASE("strided inputs give the same values as contiguous ones") {
  Generator gen(8);
  const auto base = randn<float>({3, 9000}, gen, 0.0, 4.0);
  for (const auto& view : {base.slice(1, 1, 9000, 2), base.transpose(0, 1), base.narrow(1, 3, 8000)}) {
    REQUIRE(!view.is_contiguous());
    const auto dense = view.contiguous();
    CHECK(values(tanh(view)) == values(tanh(dense)));
    CHECK(values(sigmoid(view)) == values(sigmoid(dense)));
    CHECK(values(relu(view)) == values(relu(dense)));
    CHECK(values(gelu(view)) == values(gelu(dense)));
    CHECK(values(gelu(view, GeluApproximation::Tanh)) == values(gelu(dense, GeluApproximation::Tanh)));
    CHECK(values(silu(view)) == values(silu(dense)));
  }
}

TEST_CASE("results do not depend on the thread count") {
  Generator gen(9);
  const auto x = randn<float>({100003}, gen, 0.0, 3.0);
  const int saved = get_num_threads();
  set_num_threads(1);
  const auto one = values(gelu(x));
  const auto one_silu = values(silu(x));
  set_num_threads(2);
  CHECK(values(gelu(x)) == one);
  CHECK(values(silu(x)) == one_silu);
  set_num_threads(saved);
}

TEST_CASE("activations: errors name the op") {
  CHECK_THROWS_WITH_AS(gelu(Tensor<float>()), "[gelu] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(relu(Tensor<std::int32_t>()), "[relu] undefined tensor argument", Error);
  CHECK(tanh(tensor<double>({0.5}).requires_grad_()).grad_fn_name() == "tanh");
  CHECK(gelu(tensor<double>({0.5}).requires_grad_()).grad_fn_name() == "gelu");
}

}  // namespace test_activations
