// add/sub/mul/div/neg and the scalar forms: values, broadcasting, gradchecks (including
// broadcast and non-contiguous inputs) and shape errors.
#include <doctest/doctest.h>

#include "condense/core/factories.hpp"
#include "test_util.hpp"

namespace test_elementwise_arith {

using namespace condense;
using condense::testing::values;
using condense::testing::GradInputs;

TEST_CASE("arithmetic values and broadcasting") {
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto b = tensor<float>({10, 20, 30});
  CHECK(values(a + b) == std::vector<double>{11, 22, 33, 14, 25, 36});
  CHECK(values(a - b) == std::vector<double>{-9, -18, -27, -6, -15, -24});
  CHECK(values(a * b.reshape({1, 3})) == std::vector<double>{10, 40, 90, 40, 100, 180});
  CHECK(values(b / a) == std::vector<double>{10, 10, 10, 2.5, 4, 5});
  CHECK(values(-a + 1.0f) == std::vector<double>{0, -1, -2, -3, -4, -5});
  CHECK(values(2.0f * a - 1.0f) == std::vector<double>{1, 3, 5, 7, 9, 11});
  CHECK(values(1.0f / tensor<float>({2, 4})) == std::vector<double>{0.5, 0.25});
  auto col = tensor<float>({1, 2}).reshape({2, 1});
  CHECK((col + b).shape() == Shape{2, 3});
  CHECK(values(a.transpose(0, 1) + 0.0f) == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(values(tensor<std::int32_t>({7, -7}) / tensor<std::int32_t>({2, 2})) == std::vector<double>{3, -3});
  CHECK_THROWS_WITH_AS(a + tensor<float>({1, 2}), "[add] shapes cannot be broadcast: (2x3) and (2)", Error);
  CHECK_THROWS_WITH_AS(tensor<std::int32_t>({1}) / tensor<std::int32_t>({0}), doctest::Contains("[div] integer division by zero"), Error);
}

TEST_CASE("gradcheck: add, sub, mul, div with broadcasting") {
  Generator gen(1);
  auto a = randn<double>({3, 4}, gen);
  auto b = randn<double>({4}, gen);
  auto c = uniform<double>({3, 1}, 0.5, 2.0, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0] + x[1]; }, {a, b});
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0] - x[1]; }, {a, c});
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0] * x[1]; }, {a, b});
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0] / x[1]; }, {a, c});
  CHECK_GRADCHECK([](const GradInputs& x) { return -x[0] * 3.0 + 2.0 - 1.5 / x[1]; }, {a, c});
}

TEST_CASE("gradcheck: non-contiguous inputs") {
  Generator gen(2);
  auto base = randn<double>({4, 3}, gen);
  auto t = base.transpose(0, 1);  // (3x4), non-contiguous leaf view
  REQUIRE(!t.is_contiguous());
  auto b = randn<double>({3, 4}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0] * x[1] + x[0]; }, {t, b});
  auto sliced = randn<double>({3, 8}, gen).slice(1, 0, 8, 2);
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0] / (x[1] * x[1] + 1.0); }, {sliced, b});
}

TEST_CASE("gradcheck: view ops") {
  Generator gen(3);
  auto a = randn<double>({2, 3, 4}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0].transpose(0, 2).reshape({4, 6}) * 2.0; }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0].permute({1, 2, 0}).contiguous().flatten(); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0].narrow(1, 1, 2).slice(2, 0, 4, 3); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0].select(1, 2).unsqueeze(0).squeeze(0); }, {a});
  auto v = randn<double>({3, 1}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0].expand({2, 3, 5}); }, {v});
  CHECK_GRADCHECK([](const GradInputs& x) { return x[0].clone() * 1.0; }, {a});
}

TEST_CASE("cast between float types passes gradients through") {
  auto x = tensor<double>({1.5, -2.0}).requires_grad_();
  auto y = x.cast<float>();
  CHECK(y.grad_fn_name() == "cast");
  sum(y * tensor<float>({3.0f, 4.0f})).backward();
  CHECK(values(x.grad()) == std::vector<double>{3.0, 4.0});
}

TEST_CASE("gradcheck: sum and mean over dims") {
  Generator gen(4);
  auto a = randn<double>({2, 3, 4}, gen);
  CHECK_GRADCHECK([](const GradInputs& x) { return sum(x[0]); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return sum(x[0], {1}); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return sum(x[0], {0, -1}, true); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return mean(x[0], {2}); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return mean(x[0].transpose(0, 2), {0}, true); }, {a});
  CHECK_GRADCHECK([](const GradInputs& x) { return sum_to(x[0], {3, 1}); }, {a});
}

TEST_CASE("sum and mean values") {
  auto t = arange<double>(24).reshape({2, 3, 4});
  CHECK(sum(t).item() == 276.0);
  CHECK(values(sum(t, {0, 1})) == std::vector<double>{60, 66, 72, 78});
  CHECK(values(sum(t, {2})) == std::vector<double>{6, 22, 38, 54, 70, 86});
  CHECK(sum(t, {1}, true).shape() == Shape{2, 1, 4});
  CHECK(values(mean(t.transpose(0, 2), {2})) == values(mean(t, {0}).transpose(0, 1)));
  CHECK(sum(arange<std::int64_t>(5)).item() == 10);
  CHECK_THROWS_WITH_AS(sum(t, {3}), "[sum] dim 3 out of range for a tensor of rank 3", Error);
  CHECK_THROWS_WITH_AS(sum(t, {1, -2}), "[sum] dim 1 listed twice for shape (2x3x4)", Error);
  // large reductions over either the contiguous or the leading dim
  auto big = ones<float>({300, 500});
  CHECK(values(sum(big, {0})) == std::vector<double>(500, 300.0));
  CHECK(values(sum(big, {1})) == std::vector<double>(300, 500.0));
}

}  // namespace test_elementwise_arith
