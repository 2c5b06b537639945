// exp, log, sqrt, rsqrt, abs, square, pow, clamp / clamp_min / clamp_max: values against
// std:: math in double (extreme inputs, subnormals, infinities, NaN), float accuracy, the
// strided and blocked paths, integer behaviour, gradchecks (contiguous, non-contiguous,
// away from kinks) and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/unary.hpp"
#include "test_util.hpp"

namespace test_unary {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::linspace;
using condense::testing::values;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Float tensor of the values in `x` (rounded to float); `xf` receives them as doubles.
Tensor<float> as_float(const std::vector<double>& x, std::vector<double>& xf) {
  std::vector<float> v(x.begin(), x.end());
  xf.assign(v.begin(), v.end());
  return from_vector<float>(v, {static_cast<std::int64_t>(v.size())});
}

Tensor<double> as_double(const std::vector<double>& x) { return from_vector<double>(x, {static_cast<std::int64_t>(x.size())}); }

/// Extreme and special double inputs shared by the value tests (more than one SIMD packet,
/// so both the vector body and the scalar tail see them).
std::vector<double> special_inputs() {
  const double dmin = std::numeric_limits<double>::min();
  const double dmax = std::numeric_limits<double>::max();
  const double sub = std::numeric_limits<double>::denorm_min();
  std::vector<double> v{-kInf, -dmax, -1e300, -800, -745.2, -720, -708, -100, -10, -1, -0.5, -1e-300, -sub, -0.0,
                        0.0,  sub,   1e-310, dmin,  1e-300, 1e-8, 0.5,  1,    2,   3,    10,      100,  700,  709.7,
                        710,  1e300, dmax,   kInf,   kNaN};
  const auto twice = v;
  v.insert(v.end(), twice.rbegin(), twice.rend());
  return v;
}

}  // namespace

TEST_CASE("exp and log match std:: in double, including extremes") {
  const auto x = special_inputs();
  const auto t = as_double(x);
  // Results below DBL_MIN flush to 0, hence the absolute tolerance of DBL_MIN.
  const double dmin = std::numeric_limits<double>::min();
  CHECK_MATCHES(exp(t), x, [](double v) { return std::exp(v); }, 4e-16, dmin);
  CHECK_MATCHES(log(t), x, [](double v) { return std::log(v); }, 4e-16, 0.0);
  CHECK(exp(tensor<double>({-kInf})).item() == 0.0);
  CHECK(exp(tensor<double>({-1000.0})).item() == 0.0);
  CHECK(std::isnan(log(tensor<double>({-1.0})).item()));  // no throw, like std::log
  CHECK(log(tensor<double>({0.0})).item() == -kInf);
  // a dense sweep through the vector code paths
  auto sweep = linspace(-700, 700, 7001);
  const auto top = linspace(709.0, 709.78, 101);  // up to just below the overflow threshold 709.7827
  sweep.insert(sweep.end(), top.begin(), top.end());
  CHECK_MATCHES(exp(as_double(sweep)), sweep, [](double v) { return std::exp(v); }, 4e-16, 0.0);
  const auto pos = linspace(1e-6, 1e6, 7001);
  CHECK_MATCHES(log(as_double(pos)), pos, [](double v) { return std::log(v); }, 4e-16, 1e-16);
}

TEST_CASE("exp and log in float stay within a few ulp of the double result") {
  std::vector<double> xf;
  const auto t = as_float(linspace(-87.3, 88.72, 5003), xf);  // float overflows above 88.7228
  CHECK_MATCHES(exp(t), xf, [](double v) { return std::exp(v); }, 4e-7, 0.0);
  std::vector<double> pf;
  const auto p = as_float(linspace(1e-30, 1e30, 5003), pf);
  CHECK_MATCHES(log(p), pf, [](double v) { return std::log(v); }, 2e-7, 1e-7);
  // subnormal floats get an exact log; special values behave like std::log / std::exp
  std::vector<double> sf;
  const auto s = as_float({1e-45, 1e-40, 1e-39, 1.17e-38, -1.0, -0.0, 0.0, kInf, kNaN, -kInf, 1e-40, 2e-41, 3e-42, 4e-43,
                           5e-44, 6e-45, 7e-45, 1e-38},
                          sf);
  CHECK_MATCHES(log(s), sf, [](double v) { return std::log(v); }, 2e-7, 0.0);
  std::vector<double> ef;
  const auto e = as_float({-kInf, -1000, -104, -88, -80, -0.0, 0.0, 1, 88, 88.8, 1000, kInf, kNaN, 1, 2, 3, 4}, ef);
  const double flt_min = std::numeric_limits<float>::min();
  CHECK_MATCHES(exp(e), ef, [](double v) { return static_cast<double>(std::exp(static_cast<float>(v))); }, 4e-7, flt_min);
}

TEST_CASE("sqrt and rsqrt are exact (bitwise equal to std::sqrt and 1/std::sqrt)") {
  auto x = special_inputs();
  const auto more = linspace(0, 1e4, 3001);
  x.insert(x.end(), more.begin(), more.end());
  CHECK_MATCHES(sqrt(as_double(x)), x, [](double v) { return std::sqrt(v); }, 0.0, 0.0);
  CHECK_MATCHES(rsqrt(as_double(x)), x, [](double v) { return 1.0 / std::sqrt(v); }, 0.0, 0.0);
  std::vector<double> xf;
  const auto f = as_float(x, xf);
  CHECK_MATCHES(sqrt(f), xf, [](double v) { return static_cast<double>(std::sqrt(static_cast<float>(v))); }, 0.0, 0.0);
  CHECK_MATCHES(rsqrt(f), xf, [](double v) { return static_cast<double>(1.0f / std::sqrt(static_cast<float>(v))); }, 0.0, 0.0);
  CHECK(rsqrt(tensor<float>({0.0f})).item() == static_cast<float>(kInf));
  CHECK(rsqrt(tensor<float>({-0.0f})).item() == -static_cast<float>(kInf));
  CHECK(std::isnan(sqrt(tensor<double>({-4.0})).item()));
  CHECK(sqrt(tensor<float>({4.0f})).item() == 2.0f);
}

TEST_CASE("abs and square") {
  const auto x = special_inputs();
  CHECK_MATCHES(abs(as_double(x)), x, [](double v) { return std::abs(v); }, 0.0, 0.0);
  CHECK_MATCHES(square(as_double(x)), x, [](double v) { return v * v; }, 0.0, 0.0);
  CHECK(values(abs(tensor<float>({-2.5f, 0.0f, 3.0f}))) == std::vector<double>{2.5, 0.0, 3.0});
  CHECK(std::signbit(abs(tensor<double>({-0.0})).item()) == false);
  // integers
  CHECK(values(abs(tensor<std::int32_t>({-3, 0, 7}))) == std::vector<double>{3, 0, 7});
  const auto imin = std::numeric_limits<std::int32_t>::min();
  CHECK(abs(tensor<std::int32_t>({imin})).item() == imin);  // wraps, as in PyTorch
  CHECK(values(square(tensor<std::int64_t>({-3, 4, 3000000000LL}))) == std::vector<double>{9, 16, 9e18});
  CHECK(square(tensor<std::int32_t>({65536})).item() == 0);  // wraps modulo 2^32
}

TEST_CASE("pow with a scalar exponent matches std::pow") {
  auto x = special_inputs();
  const auto more = linspace(-5, 5, 1001);
  x.insert(x.end(), more.begin(), more.end());
  const auto t = as_double(x);
  for (double e : {0.0, 1.0, 2.0, 3.0, 0.5, -1.0, -2.0, 2.5, -1.5, 1.0 / 3.0, 4.0, 7.0, -3.0, 0.25, 10.0, -0.5, 31.0, 1e20,
                   -1e20, 1e-300, kInf, -kInf, kNaN}) {
    INFO("exponent " << e);
    // x*x*x for e = 3 rounds twice; elsewhere close to correctly rounded.
    CHECK_MATCHES(pow(t, e), x, [e](double v) { return std::pow(v, e); }, 1e-14, std::numeric_limits<double>::min());
  }
  std::vector<double> xf;
  const auto f = as_float(more, xf);
  std::vector<double> sf;
  const auto sfl = as_float({-kInf, -1e30, -3, -2, -1, -0.5, -1e-30, -1e-40, -0.0, 0.0, 1e-40, 1e-30, 0.5, 1, 2, 3, 1e30, kInf,
                             kNaN, 40, 90, -90, 1e-5, -1e-5},
                            sf);
  for (float e : {2.0f, 0.5f, 1.7f, -2.5f, 3.0f, 5.0f, -3.0f, 4.0f, -4.0f, 0.3f, -0.3f, 21.0f, 1e10f, 1e-10f}) {
    INFO("float exponent " << e);
    const auto ref = [e](double v) { return static_cast<double>(std::pow(static_cast<float>(v), e)); };
    CHECK_MATCHES(pow(f, e), xf, ref, 1.2e-7, 0.0);  // within one float ulp
    CHECK_MATCHES(pow(sfl, e), sf, ref, 1.2e-7, 0.0);
  }
  CHECK(values(pow(tensor<double>({-0.0, -kInf}), 0.5)) == std::vector<double>{0.0, kInf});
  CHECK(!std::signbit(pow(tensor<double>({-0.0}), 0.5).item()));
  CHECK(pow(tensor<double>({kNaN}), 0.0).item() == 1.0);
  CHECK(values(pow(tensor<float>({1, 2, 3}, {3}), 2)) == std::vector<double>{1, 4, 9});
  // integers: repeated squaring, wraps on overflow, negative exponents rejected
  CHECK(values(pow(tensor<std::int64_t>({-2, 3, 0, 1}), 5)) == std::vector<double>{-32, 243, 0, 1});
  CHECK(values(pow(tensor<std::int32_t>({-2, 3, 0}), 0)) == std::vector<double>{1, 1, 1});
  CHECK(pow(tensor<std::int32_t>({2}), 32).item() == 0);
  CHECK_THROWS_WITH_AS(pow(tensor<std::int32_t>({2, 3}), -1),
                       "[pow] integer tensors cannot be raised to a negative power, got exponent -1 for int32 (2) cpu", Error);
}

TEST_CASE("clamp, clamp_min, clamp_max: values, NaN, integers, errors") {
  const auto t = tensor<double>({-3, -1, 0, 0.5, 1, 2, kNaN}, {7});
  auto v = values(clamp(t, -1.0, 1.0));
  CHECK(std::vector<double>(v.begin(), v.end() - 1) == std::vector<double>{-1, -1, 0, 0.5, 1, 1});
  CHECK(std::isnan(v.back()));
  v = values(clamp_min(t, 0.0));
  CHECK(std::vector<double>(v.begin(), v.end() - 1) == std::vector<double>{0, 0, 0, 0.5, 1, 2});
  CHECK(std::isnan(v.back()));
  v = values(clamp_max(t, 0.0));
  CHECK(std::vector<double>(v.begin(), v.end() - 1) == std::vector<double>{-3, -1, 0, 0, 0, 0});
  CHECK(std::isnan(v.back()));
  CHECK(values(clamp(tensor<float>({-5, 5}), std::nullopt, 2.0f)) == std::vector<double>{-5, 2});
  CHECK(values(clamp(tensor<float>({-5, 5}), -1.0f, std::nullopt)) == std::vector<double>{-1, 5});
  CHECK(values(clamp(tensor<double>({-kInf, kInf}), -2.0, 2.0)) == std::vector<double>{-2, 2});
  CHECK(values(clamp(tensor<std::int32_t>({-7, 3, 9}), 0, 5)) == std::vector<double>{0, 3, 5});
  CHECK(values(clamp_min(tensor<std::int64_t>({-7, 3}), 0)) == std::vector<double>{0, 3});
  CHECK(values(clamp(tensor<float>({1, 2, 3}), 2.0f, 2.0f)) == std::vector<double>{2, 2, 2});
  CHECK_THROWS_WITH_AS(clamp(t, 2.0, 1.0), "[clamp] lower bound 2 is greater than upper bound 1", Error);
  CHECK_THROWS_WITH_AS(clamp(t, std::nullopt, std::nullopt), "[clamp] at least one of the bounds must be given", Error);
  CHECK_THROWS_WITH_AS(clamp_min(t, kNaN), "[clamp] a bound is NaN", Error);
}

TEST_CASE("strided inputs take the gather path and give the same values") {
  Generator gen(5);
  // inner stride 2 with rows longer than one block, and a transpose (inner stride 4000)
  const auto base = uniform<double>({3, 8000}, 0.1, 3.0, gen);
  for (const auto& view : {base.slice(1, 0, 8000, 2), base.transpose(0, 1), base.narrow(1, 5, 7000)}) {
    REQUIRE(!view.is_contiguous());
    const auto dense = view.contiguous();
    CHECK(values(exp(view)) == values(exp(dense)));
    CHECK(values(log(view)) == values(log(dense)));
    CHECK(values(sqrt(view)) == values(sqrt(dense)));
    CHECK(values(rsqrt(view)) == values(rsqrt(dense)));
    CHECK(values(pow(view, 1.7)) == values(pow(dense, 1.7)));
    CHECK(values(clamp(view, 0.5, 2.0)) == values(clamp(dense, 0.5, 2.0)));
    CHECK(values(abs(view)) == values(abs(dense)));
  }
  // a broadcast (stride 0) view
  const auto row = uniform<float>({1, 5}, 0.1, 3.0, gen).expand({4, 5});
  CHECK(values(log(row)) == values(log(row.contiguous())));
  // empty and 0-dim tensors
  CHECK(exp(zeros<float>({0, 3})).shape() == Shape{0, 3});
  CHECK(exp(scalar_tensor<double>(0.0)).item() == 1.0);
}

TEST_CASE("gradcheck: exp, log, sqrt, rsqrt, square, pow (contiguous and non-contiguous)") {
  Generator gen(11);
  const auto a = randn<double>({3, 4}, gen);
  const auto p = uniform<double>({4, 3}, 0.3, 2.5, gen).transpose(0, 1);  // positive, non-contiguous
  const auto s = uniform<double>({2, 10}, 0.3, 2.5, gen).slice(1, 1, 10, 3);  // positive, inner stride 3
  REQUIRE(!p.is_contiguous());
  CHECK_GRADCHECK([](const GradInputs& x) { return exp(x[0]); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return exp(x[0]); }, {p});
  CHECK_GRADCHECK([](const GradInputs& x) { return log(x[0]); }, {p});
  CHECK_GRADCHECK([](const GradInputs& x) { return log(x[0]); }, {s});
  CHECK_GRADCHECK([](const GradInputs& x) { return sqrt(x[0]); }, {p});
  CHECK_GRADCHECK([](const GradInputs& x) { return rsqrt(x[0]); }, {p});
  CHECK_GRADCHECK([](const GradInputs& x) { return rsqrt(x[0]); }, {s});
  CHECK_GRADCHECK([](const GradInputs& x) { return square(x[0]); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return square(x[0]); }, {p});
  for (double e : {2.0, 3.0, 0.5, -1.0, -2.0, 1.5, -0.7, 1.0}) {
    INFO("exponent " << e);
    CHECK_GRADCHECK([e](const GradInputs& x) { return pow(x[0], e); }, {p});
  }
  CHECK_GRADCHECK([](const GradInputs& x) { return pow(x[0], 3.0) + pow(x[0], 4.0); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return exp(log(x[0]) * 0.5) * sqrt(x[0]); }, {s});
}

TEST_CASE("gradcheck: abs and clamp away from the kinks") {
  // values at least 0.1 away from 0 (abs) and from the clamp bounds -0.5 and 0.8
  const auto a = tensor<double>({-2.0, -0.7, -0.3, 0.2, 0.6, 1.1, 1.9, -1.3, 0.35, -0.05 - 0.1, 0.95, 2.4}, {4, 3});
  const auto at = a.transpose(0, 1);
  CHECK_GRADCHECK([](const GradInputs& x) { return abs(x[0]); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return abs(x[0]); }, {at});
  CHECK_GRADCHECK([](const GradInputs& x) { return clamp(x[0], -0.5, 0.8); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return clamp(x[0], -0.5, 0.8); }, {at});
  CHECK_GRADCHECK([](const GradInputs& x) { return clamp_min(x[0], -0.5) * clamp_max(x[0], 0.8); }, {at});
}

TEST_CASE("gradients at the kinks follow PyTorch") {
  // clamp: gradient 1 on the bounds themselves; abs: 0 at 0; pow(x, 0): 0 everywhere
  auto x = tensor<double>({-1.0, 1.0, 0.0, 2.0, -2.0}).requires_grad_();
  sum(clamp(x, -1.0, 1.0)).backward();
  CHECK(values(x.grad()) == std::vector<double>{1, 1, 1, 0, 0});
  x.zero_grad();
  sum(abs(x)).backward();
  CHECK(values(x.grad()) == std::vector<double>{-1, 1, 0, 1, -1});
  x.zero_grad();
  sum(pow(x, 0.0)).backward();
  CHECK(values(x.grad()) == std::vector<double>{0, 0, 0, 0, 0});
  x.zero_grad();
  sum(clamp_min(x, 0.0)).backward();
  CHECK(values(x.grad()) == std::vector<double>{0, 1, 1, 1, 0});
  // sqrt at 0 gives an infinite gradient (as in PyTorch)
  auto z = tensor<double>({0.0, 4.0}).requires_grad_();
  sum(sqrt(z)).backward();
  CHECK(values(z.grad()) == std::vector<double>{kInf, 0.25});
  CHECK(exp(x).grad_fn_name() == "exp");
  CHECK(clamp(x, 0.0, 1.0).grad_fn_name() == "clamp");
}

TEST_CASE("float gradients agree with the double formulas") {
  Generator gen(13);
  const auto xd = uniform<double>({257}, 0.2, 3.0, gen);
  auto xf = xd.cast<float>().detach().requires_grad_();
  sum(log(xf) + sqrt(xf) + rsqrt(xf) + exp(xf) + pow(xf, 1.5f)).backward();
  const auto xs = values(xf.detach());
  const auto gs = values(xf.grad());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    const double expected = 1 / v + 0.5 / std::sqrt(v) - 0.5 * std::pow(v, -1.5) + std::exp(v) + 1.5 * std::sqrt(v);
    CHECK(gs[i] == doctest::Approx(expected).epsilon(1e-5));
  }
}

TEST_CASE("unary ops: errors name the op") {
  CHECK_THROWS_WITH_AS(exp(Tensor<float>()), "[exp] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(clamp(Tensor<double>(), 0.0, 1.0), "[clamp] undefined tensor argument", Error);
}

}  // namespace test_unary
