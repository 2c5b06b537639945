// The autograd engine: leaf accumulation, NoGradGuard, detach, retain_graph, explicit
// output gradients, graph freeing, and the errors for misuse.
#include <doctest/doctest.h>

#include "condense/core/factories.hpp"
#include "test_util.hpp"

namespace test_engine {

using namespace condense;
using condense::testing::values;

TEST_CASE("gradients accumulate into leaves across backward calls") {
  auto x = tensor<double>({1, 2, 3}).requires_grad_();
  auto y = sum(x * x);
  y.backward();
  CHECK(values(x.grad()) == std::vector<double>{2, 4, 6});
  sum(x * 3.0).backward();
  CHECK(values(x.grad()) == std::vector<double>{5, 7, 9});
  x.zero_grad();
  CHECK(!x.grad().defined());
}

TEST_CASE("a tensor used twice receives the sum of both gradients") {
  auto x = tensor<double>({2.0}).requires_grad_();
  auto y = x * x + x;  // dy/dx = 2x + 1
  y.backward();
  CHECK(x.grad().item() == 5.0);
}

TEST_CASE("NoGradGuard and detach stop recording") {
  auto x = tensor<float>({1, 2}).requires_grad_();
  {
    NoGradGuard guard;
    auto y = x * x;
    CHECK(!y.requires_grad());
    CHECK(!GradMode::is_enabled());
  }
  CHECK(GradMode::is_enabled());
  auto d = x.detach();
  CHECK(!d.requires_grad());
  CHECK(d.storage().same_block(x.storage()));
  auto y = x * 2.0f;
  CHECK(y.requires_grad());
  CHECK(!y.is_leaf());
  CHECK(y.grad_fn_name() == "mul_scalar");
}

TEST_CASE("the graph is freed after backward unless retained") {
  auto x = tensor<double>({1, 2}).requires_grad_();
  auto y = sum(x * x);
  y.backward(Tensor<double>(), /*retain_graph=*/true);
  y.backward();
  CHECK(values(x.grad()) == std::vector<double>{4, 8});
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("[backward] the graph through 'sum' was already freed"), Error);
}

TEST_CASE("explicit output gradient for non-scalar backward") {
  auto x = tensor<double>({1, 2, 3}).requires_grad_();
  auto y = x * x;
  y.backward(tensor<double>({1, 0, 2}));
  CHECK(values(x.grad()) == std::vector<double>{2, 0, 12});
  auto z = x * 2.0;
  CHECK_THROWS_WITH_AS(z.backward(), "[backward] grad can be implied only for one-element outputs, got shape (3); pass an explicit gradient", Error);
  CHECK_THROWS_WITH_AS(z.backward(tensor<double>({1, 2})), "[backward] explicit gradient of shape (2) for a tensor of shape (3)", Error);
}

TEST_CASE("retain_grad keeps an intermediate gradient") {
  auto x = tensor<double>({1, 2}).requires_grad_();
  auto h = x * 3.0;
  h.retain_grad();
  auto k = x * 2.0;
  sum(h * h + k).backward();
  CHECK(values(h.grad()) == std::vector<double>{6, 12});
  CHECK(!k.grad().defined());
}

TEST_CASE("misuse of requires_grad and backward throws") {
  auto i = tensor<std::int64_t>({1, 2});
  CHECK_THROWS_WITH_AS(i.requires_grad_(), "[requires_grad] only floating tensors can require grad, got int64 (2) cpu", Error);
  auto f = tensor<float>({1, 2});
  CHECK_THROWS_WITH_AS(sum(f).backward(), "[backward] tensor float32 () cpu does not require grad and has no grad_fn", Error);
}

TEST_CASE("deep chains backpropagate without recursion limits") {
  auto x = tensor<double>({1.0}).requires_grad_();
  auto y = x;
  for (int i = 0; i < 5000; ++i) y = y * 1.0;
  y.backward();
  CHECK(x.grad().item() == 1.0);
}

}  // namespace test_engine
