// grad_norm / clip_grad_norm: the global norm (double accumulation, missing gradients
// skipped), clipping by replacement (never in place), the non-finite cases and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/optim/clip.hpp"
#include "test_util.hpp"

namespace test_clip {

using namespace condense;
using condense::testing::values;

TEST_CASE("grad_norm is the global L2 norm over the parameters that have a gradient") {
  auto a = zeros<float>({2}).requires_grad_();
  auto b = zeros<float>({1, 1}).requires_grad_();
  auto none = zeros<float>({5}).requires_grad_();
  a.set_grad(tensor<float>({3, 4}));
  b.set_grad(tensor<float>({12}, {1, 1}));
  const optim::NamedTensors<float> params{{"a", a}, {"none", none}, {"b", b}};
  CHECK(optim::grad_norm(params) == 13.0);
  CHECK(optim::grad_norm(std::vector<Tensor<float>>{a, b, none}) == 13.0);
  CHECK(optim::grad_norm(std::vector<Tensor<float>>{none}) == 0.0);

  // Many float gradients: the sum runs in double (checked against a plain double loop).
  Generator gen(1);
  auto big = zeros<float>({1000, 700}).requires_grad_();
  auto g = randn<float>({1000, 700}, gen, 0.0, 1e-3);
  big.set_grad(g);
  double ref = 0.0;
  for (const float x : g.to_vector()) ref += static_cast<double>(x) * static_cast<double>(x);
  CHECK(std::abs(optim::grad_norm(optim::NamedTensors<float>{{"big", big}}) - std::sqrt(ref)) < 1e-13 * std::sqrt(ref));

  // A non-contiguous gradient.
  auto t = zeros<double>({2, 2}).requires_grad_();
  t.set_grad(tensor<double>({1, 2, 2, 4}, {2, 2}).transpose(0, 1));
  CHECK(optim::grad_norm(std::vector<Tensor<double>>{t}) == 5.0);
}

TEST_CASE("clip_grad_norm rescales by replacing the gradients") {
  auto a = zeros<double>({2}).requires_grad_();
  auto b = zeros<double>({1}).requires_grad_();
  auto none = zeros<double>({3}).requires_grad_();
  const auto ga = tensor<double>({3, 4});
  const auto gb = tensor<double>({12});
  a.set_grad(ga);
  b.set_grad(gb);
  const optim::NamedTensors<double> params{{"a", a}, {"b", b}, {"none", none}};

  SUBCASE("above the bound") {
    const double norm = optim::clip_grad_norm(params, 6.5);
    CHECK(norm == 13.0);
    const double c = 6.5 / (13.0 + 1e-6);
    CHECK(values(a.grad()) == std::vector<double>{3 * c, 4 * c});
    CHECK(values(b.grad()) == std::vector<double>{12 * c});
    CHECK(!none.grad().defined());
    // The old gradient tensors are untouched: clipping replaced them.
    CHECK(values(ga) == std::vector<double>{3, 4});
    CHECK(values(gb) == std::vector<double>{12});
    CHECK(!a.grad().storage().same_block(ga.storage()));
    CHECK(std::abs(optim::grad_norm(params) - 6.5) < 1e-6);
  }
  SUBCASE("below the bound nothing changes") {
    CHECK(optim::clip_grad_norm(params, 13.5) == 13.0);
    CHECK(a.grad().storage().same_block(ga.storage()));
    CHECK(optim::clip_grad_norm(std::vector<Tensor<double>>{a, b}, INFINITY) == 13.0);
    CHECK(values(b.grad()) == std::vector<double>{12});
    // At the bound the factor 13 / (13 + 1e-6) is just below 1 and clips, as in PyTorch.
    optim::clip_grad_norm(params, 13.0);
    CHECK(values(b.grad())[0] == 12 * (13.0 / (13.0 + 1e-6)));
  }
  SUBCASE("max_norm 0 zeroes the gradients") {
    CHECK(optim::clip_grad_norm(params, 0.0) == 13.0);
    CHECK(values(a.grad()) == std::vector<double>{0, 0});
  }
  SUBCASE("errors") {
    CHECK_THROWS_WITH_AS(optim::clip_grad_norm(params, -1.0), "[clip_grad_norm] max_norm must be >= 0, got -1", Error);
    CHECK_THROWS_WITH_AS(optim::clip_grad_norm(params, NAN), "[clip_grad_norm] max_norm must be >= 0, got nan", Error);
  }
}

TEST_CASE("clip_grad_norm with a non-finite norm leaves the gradients alone or throws") {
  auto a = zeros<float>({2}).requires_grad_();
  auto b = zeros<float>({2}).requires_grad_();
  a.set_grad(tensor<float>({3, 4}));
  const optim::NamedTensors<float> params{{"a", a}, {"layers.1.w", b}};

  b.set_grad(tensor<float>({1, NAN}));
  CHECK(std::isnan(optim::clip_grad_norm(params, 1.0)));
  CHECK(values(a.grad()) == std::vector<double>{3, 4});
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm(params, 1.0, true),
                       "[clip_grad_norm] the total gradient norm is nan; first gradient with a non-finite sum of "
                       "squares: 'layers.1.w'",
                       Error);

  b.set_grad(tensor<float>({-INFINITY, 1}));
  CHECK(optim::clip_grad_norm(params, 1.0) == INFINITY);
  CHECK(values(a.grad()) == std::vector<double>{3, 4});

  // Finite double values whose squares overflow.
  auto big = zeros<double>({2}).requires_grad_();
  big.set_grad(tensor<double>({1e200, 1e200}));
  CHECK(optim::clip_grad_norm(std::vector<Tensor<double>>{big}, 1.0) == INFINITY);
  CHECK(values(big.grad()) == std::vector<double>{1e200, 1e200});
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm(std::vector<Tensor<double>>{big}, 1.0, true),
                       "[clip_grad_norm] the total gradient norm is inf; first gradient with a non-finite sum of "
                       "squares: '#0'",
                       Error);
  auto half = zeros<double>({1}).requires_grad_();
  auto other = zeros<double>({1}).requires_grad_();
  half.set_grad(tensor<double>({1.2e154}));
  other.set_grad(tensor<double>({1.2e154}));
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm(std::vector<Tensor<double>>{half, other}, 1.0, true),
                       "[clip_grad_norm] the total gradient norm is inf; the sum of squares overflowed", Error);
}

}  // namespace test_clip
