// The 16-bit floats (bfloat16, float16) on the CPU. Elementwise arithmetic, sums, casts and
// views: each result equals the float computation on the widened inputs rounded once,
// overflow and NaN behave as in float, and gradients (stored in the 16-bit type) agree with
// the float gradients within a few units in the last place. Math, activations, softmax, the
// norms, matmul, linear, cross_entropy and dropout (which run through the float kernels):
// value and gradients equal the float ones rounded, bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/activations.hpp"
#include "condense/ops/dropout.hpp"
#include "condense/ops/losses.hpp"
#include "condense/ops/matmul.hpp"
#include "condense/ops/norms.hpp"
#include "condense/ops/softmax.hpp"
#include "condense/ops/unary.hpp"
#include "half_test_util.hpp"
#include "test_util.hpp"

namespace test_half {

using namespace condense;
using condense::testing::bits;
using condense::testing::check_equals_float_rounded;
using condense::testing::half_epsilon;
using condense::testing::max_abs_diff;
using condense::testing::values;

namespace {

/// A function of two tensors, written once for the 16-bit type and for float.
struct BinaryCase {
  std::string name;
  std::function<Tensor<bfloat16>(const Tensor<bfloat16>&, const Tensor<bfloat16>&)> on_bf16;
  std::function<Tensor<float16>(const Tensor<float16>&, const Tensor<float16>&)> on_f16;
  std::function<Tensor<float>(const Tensor<float>&, const Tensor<float>&)> on_float;
};

#define CONDENSE_BINARY_CASE(name, expr)                                                         \
  BinaryCase {                                                                                   \
    name, [](const Tensor<bfloat16>& a, const Tensor<bfloat16>& b) { using T [[maybe_unused]] = bfloat16; return expr; }, \
        [](const Tensor<float16>& a, const Tensor<float16>& b) { using T [[maybe_unused]] = float16; return expr; },      \
        [](const Tensor<float>& a, const Tensor<float>& b) { using T [[maybe_unused]] = float; return expr; }              \
  }

/// The cases: every arithmetic op, tensor-tensor with broadcasting and tensor-scalar, one
/// rounding each (the scalars are exact in both 16-bit types).
std::vector<BinaryCase> binary_cases() {
  return {
      CONDENSE_BINARY_CASE("add", a + b),
      CONDENSE_BINARY_CASE("sub", a - b),
      CONDENSE_BINARY_CASE("mul", a * b),
      CONDENSE_BINARY_CASE("div", a / b),
      CONDENSE_BINARY_CASE("neg", -a),
      CONDENSE_BINARY_CASE("add scalar", a + T(0.375f)),
      CONDENSE_BINARY_CASE("scalar sub", T(1.75f) - a),
      CONDENSE_BINARY_CASE("sub scalar", a - T(2.25f)),
      CONDENSE_BINARY_CASE("mul scalar", a * T(-3.125f)),
      CONDENSE_BINARY_CASE("div scalar", a / T(0.625f)),
      CONDENSE_BINARY_CASE("rdiv", T(1.375f) / b),
      // float scalars stay in float: 0.3 is not rounded to 16 bits before the product
      CONDENSE_BINARY_CASE("plus float", a + 0.1f),
      CONDENSE_BINARY_CASE("float minus", 0.7f - a),
      CONDENSE_BINARY_CASE("times float", 0.3f * a),
      CONDENSE_BINARY_CASE("over float", a / 0.3f),
      CONDENSE_BINARY_CASE("float over", 1.3f / b),
      CONDENSE_BINARY_CASE("broadcast row", a * b.slice(0, 0, 1)),
      CONDENSE_BINARY_CASE("broadcast column", a - b.slice(1, 2, 3)),
      CONDENSE_BINARY_CASE("transposed", a.transpose(0, 1) + b.transpose(0, 1)),
      CONDENSE_BINARY_CASE("sum all", sum(a)),
      CONDENSE_BINARY_CASE("sum dim", sum(b, {1})),
      CONDENSE_BINARY_CASE("mean keepdim", mean(a, {0}, true)),
      CONDENSE_BINARY_CASE("sum_to", sum_to(a, Shape{1, 7})),
  };
}

/// Values in [0.25, ...) away from zero (for divisors), rounded to T.
template <HalfElement T>
Tensor<T> positive(const Shape& shape, Generator& gen) {
  return add(abs(randn<float>(shape, gen)), 0.25f).template cast<T>();
}

/// The case's function for T.
template <HalfElement T>
const auto& pick(const BinaryCase& c) {
  if constexpr (std::is_same_v<T, bfloat16>) return c.on_bf16;
  else return c.on_f16;
}

}  // namespace

TEST_CASE_TEMPLATE("16-bit floats: arithmetic and sums equal float rounded once", T, bfloat16, float16) {
  Generator gen(11);
  const auto a = randn<T>({5, 7}, gen);
  const auto b = positive<T>({5, 7}, gen);
  const Tensor<float> aw = a.template cast<float>(), bw = b.template cast<float>();
  for (const auto& c : binary_cases()) {
    INFO(c.name);
    const Tensor<T> got = pick<T>(c)(a, b);
    const Tensor<T> expected = c.on_float(aw, bw).template cast<T>();
    CHECK(got.shape() == expected.shape());
    CHECK(bits(got) == bits(expected));
  }
}

TEST_CASE_TEMPLATE("16-bit floats: overflow, infinities and NaN as in float", T, bfloat16, float16) {
  const double big = std::is_same_v<T, bfloat16> ? 3e38 : 60000.0;
  const auto a = tensor<float>({static_cast<float>(big), 1.0f, 0.0f, -1.0f}).template cast<T>();
  const auto b = tensor<float>({static_cast<float>(big), std::numeric_limits<float>::infinity(), 0.0f,
                                std::numeric_limits<float>::quiet_NaN()})
                     .template cast<T>();
  const auto s = values(a + b);  // big + big overflows; 1 + inf; 0 + 0; -1 + NaN
  CHECK(s[0] == std::numeric_limits<double>::infinity());
  CHECK(s[1] == std::numeric_limits<double>::infinity());
  CHECK(s[2] == 0.0);
  CHECK(std::isnan(s[3]));
  const auto q = values(a / tensor<float>({1.0f, 0.0f, 0.0f, 2.0f}).template cast<T>());  // x/0 = inf, 0/0 = NaN
  CHECK(q[1] == std::numeric_limits<double>::infinity());
  CHECK(std::isnan(q[2]));
  CHECK(q[3] == -0.5);
  // A sum of many small terms accumulates in float: 4096 * 2^-12 = 1 exactly, where a
  // 16-bit running sum would stall once the terms fall below half its spacing.
  const auto small = full<T>({4096}, convert_element<T>(0x1p-12));
  CHECK(values(sum(small))[0] == 1.0);
}

TEST_CASE_TEMPLATE("16-bit floats: gradients agree with float gradients", T, bfloat16, float16) {
  Generator gen(12);
  const auto a0 = randn<T>({4, 6}, gen);
  const auto b0 = positive<T>({6}, gen);
  // f(a, b) = mean((a * b - a / b + 2a) * a.T.T) + sum(-a * 0.5) over broadcasting and views.
  auto f = [](const auto& a, const auto& b, auto scalar_type) {
    using S = decltype(scalar_type);
    const auto y = (a * b - a / b + a * S(2.0f)) * a.transpose(0, 1).transpose(0, 1);
    return mean(y) + sum(-a * S(0.5f));
  };
  auto a = a0.detach().clone();
  auto b = b0.detach().clone();
  a.requires_grad_();
  b.requires_grad_();
  f(a, b, T{}).backward();
  auto aw = a0.template cast<float>().detach();
  auto bw = b0.template cast<float>().detach();
  aw.requires_grad_();
  bw.requires_grad_();
  f(aw, bw, float{}).backward();
  REQUIRE(a.grad().defined());
  REQUIRE(b.grad().defined());
  CHECK(a.grad().dtype() == dtype_of<T>);
  // Each node rounds its gradient to the 16-bit type, so allow a few units in the last place.
  const double tol_a = 8 * half_epsilon<T> * (1.0 + max_abs_diff(aw.grad(), zeros<float>(aw.shape())));
  const double tol_b = 8 * half_epsilon<T> * (1.0 + max_abs_diff(bw.grad(), zeros<float>(bw.shape())));
  CHECK(max_abs_diff(a.grad().template cast<float>(), aw.grad()) <= tol_a);
  CHECK(max_abs_diff(b.grad().template cast<float>(), bw.grad()) <= tol_b);
}

TEST_CASE_TEMPLATE("16-bit floats: casts pass gradients through and gradients accumulate", T, bfloat16, float16) {
  auto x = tensor<float>({0.5f, -1.25f, 3.0f});
  x.requires_grad_();
  const auto h = x.template cast<T>();
  CHECK(h.requires_grad());
  // Two uses of h: its gradient accumulates (in float, rounded once) before flowing to x.
  sum(mul(h, T(3.0f)) + h).template cast<float>().backward();
  CHECK(values(x.grad()) == std::vector<double>{4, 4, 4});
  auto leaf = tensor<float>({1.0f, 2.0f}).template cast<T>();
  leaf.requires_grad_();
  sum(leaf * leaf).backward();
  CHECK(leaf.grad().dtype() == dtype_of<T>);
  CHECK(values(leaf.grad()) == std::vector<double>{2, 4});
}

TEST_CASE_TEMPLATE("16-bit floats: math, activations and softmax are the float ops rounded once, gradients too", T, bfloat16,
                   float16) {
  struct Case {
    std::string name;
    std::function<Tensor<T>(const Tensor<T>&)> on_half;
    std::function<Tensor<float>(const Tensor<float>&)> on_float;
    bool positive_input;
  };
#define CONDENSE_MATH_CASE(name, expr, positive_input) \
  Case { name, [](const Tensor<T>& v) { return expr; }, [](const Tensor<float>& v) { return expr; }, positive_input }
  const std::vector<Case> cases = {
      CONDENSE_MATH_CASE("exp", exp(v), false),
      CONDENSE_MATH_CASE("log", log(v), true),
      CONDENSE_MATH_CASE("sqrt", sqrt(v), true),
      CONDENSE_MATH_CASE("rsqrt", rsqrt(v), true),
      CONDENSE_MATH_CASE("abs", abs(v), false),
      CONDENSE_MATH_CASE("square", square(v), false),
      CONDENSE_MATH_CASE("pow 3", pow(v, 3.0f), false),
      CONDENSE_MATH_CASE("pow 0.5", pow(v, 0.5f), true),
      CONDENSE_MATH_CASE("clamp", clamp(v, -0.5f, 0.75f), false),
      CONDENSE_MATH_CASE("clamp_min", clamp_min(v, -0.25f), false),
      CONDENSE_MATH_CASE("clamp_max", clamp_max(v, 0.5f), false),
      CONDENSE_MATH_CASE("tanh", tanh(v), false),
      CONDENSE_MATH_CASE("sigmoid", sigmoid(v), false),
      CONDENSE_MATH_CASE("relu", relu(v), false),
      CONDENSE_MATH_CASE("gelu", gelu(v), false),
      CONDENSE_MATH_CASE("gelu tanh", gelu(v, GeluApproximation::Tanh), false),
      CONDENSE_MATH_CASE("silu", silu(v), false),
      CONDENSE_MATH_CASE("softmax", softmax(v, 1), false),
      CONDENSE_MATH_CASE("log_softmax", log_softmax(v, 0), false),
  };
#undef CONDENSE_MATH_CASE
  Generator gen(13);
  const auto any_sign = randn<T>({6, 9}, gen);
  const auto pos = positive<T>({6, 9}, gen);
  for (const auto& c : cases) {
    INFO(c.name);
    check_equals_float_rounded<T>(
        {c.positive_input ? pos : any_sign}, [&](const auto& v) { return c.on_half(v[0]); },
        [&](const auto& v) { return c.on_float(v[0]); }, gen);
  }
}

TEST_CASE_TEMPLATE("16-bit floats: norms, matmul, linear, cross_entropy and dropout through float", T, bfloat16, float16) {
  Generator gen(14);
  const auto x = randn<T>({2, 3, 8}, gen);
  const auto w = randn<T>({8}, gen), bias = randn<T>({8}, gen);
  const auto weight = randn<T>({5, 8}, gen), out_bias = randn<T>({5}, gen);
  const auto b = randn<T>({2, 8, 4}, gen);
  const auto targets = tensor<std::int64_t>({0, 4, 2, 1, 3, 4});
  const auto both = [](auto f) { return std::pair{f, f}; };
  {
    INFO("layer_norm");
    const auto [fh, ff] = both([](const auto& v) { return layer_norm(v[0], v[1], v[2]); });
    check_equals_float_rounded<T>({x, w, bias}, fh, ff, gen);
  }
  {
    INFO("layer_norm without affine");
    const auto [fh, ff] = both([](const auto& v) { return layer_norm(v[0]); });
    check_equals_float_rounded<T>({x}, fh, ff, gen);
  }
  {
    INFO("rms_norm");
    const auto [fh, ff] = both([](const auto& v) { return rms_norm(v[0], v[1]); });
    check_equals_float_rounded<T>({x, w}, fh, ff, gen);
  }
  {
    INFO("matmul and bmm");
    const auto [fh, ff] = both([](const auto& v) { return matmul(v[0], v[1]) + bmm(v[0], v[1]); });
    check_equals_float_rounded<T>({x, b}, fh, ff, gen);
  }
  {
    INFO("linear");
    const auto [fh, ff] = both([](const auto& v) { return linear(v[0], v[1], v[2]); });
    check_equals_float_rounded<T>({x, weight, out_bias}, fh, ff, gen);
  }
  {
    INFO("cross_entropy");
    const auto logits = randn<T>({6, 5}, gen);
    const auto [fh, ff] = both([&](const auto& v) { return cross_entropy(v[0], targets, {.label_smoothing = 0.1}); });
    check_equals_float_rounded<T>({logits}, fh, ff, gen);
  }
  {
    INFO("dropout");
    Generator half_gen(5), float_gen(5);  // the same state: the same mask
    check_equals_float_rounded<T>(
        {x}, [&](const auto& v) { return dropout(v[0], 0.25, half_gen); }, [&](const auto& v) { return dropout(v[0], 0.25, float_gen); },
        gen);
    CHECK(dropout(x, 0.25, half_gen, false).impl() == x.impl());  // evaluation: the input itself
  }
  CHECK_THROWS_WITH_AS(matmul(x, x), doctest::Contains("[matmul]"), Error);
}

}  // namespace test_half
