// SGD: trajectories against a hand-written double-precision loop (plain, momentum with
// dampening, Nesterov, weight decay, skipped parameters, the multi-threaded path), against
// numbers from torch.optim.SGD, the state()/load_state() round trip, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <optional>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/optim/sgd.hpp"
#include "test_util.hpp"

namespace test_sgd {

using namespace condense;
using condense::testing::values;
using optim::SGD;
using optim::SGDOptions;

namespace {

/// The SGD update written out plainly in double.
struct RefSGD {
  SGDOptions o;
  std::vector<std::vector<double>> p, buf;
  std::vector<bool> started;

  void step(const std::vector<std::optional<std::vector<double>>>& grads) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (!grads[i]) continue;
      for (std::size_t j = 0; j < p[i].size(); ++j) {
        double g = (*grads[i])[j] + o.weight_decay * p[i][j];
        if (o.momentum != 0.0) {
          buf[i][j] = started[i] ? o.momentum * buf[i][j] + (1.0 - o.dampening) * g : g;
          g = o.nesterov ? g + o.momentum * buf[i][j] : buf[i][j];
        }
        p[i][j] -= o.lr * g;
      }
      started[i] = true;
    }
  }
};

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

void compare_with_reference(const SGDOptions& options, const std::vector<Shape>& shapes, int steps) {
  Generator gen(5);
  optim::NamedTensors<double> params;
  RefSGD ref{options, {}, {}, {}};
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    auto p = randn<double>(shapes[i], gen).requires_grad_();
    params.emplace_back("p" + std::to_string(i), p);
    ref.p.push_back(values(p));
    ref.buf.emplace_back(ref.p.back().size(), 0.0);
    ref.started.push_back(false);
  }
  SGD<double> opt(params, options);
  for (int s = 0; s < steps; ++s) {
    const double lr = options.lr / (1.0 + s);
    opt.set_lr(lr);
    ref.o.lr = lr;
    std::vector<std::optional<std::vector<double>>> grads;
    for (std::size_t i = 0; i < params.size(); ++i) {
      // Parameter 1 gets its first gradient only at step 2 (its buffer starts then).
      if (i == 1 && s < 2) {
        params[i].second.zero_grad();
        grads.emplace_back(std::nullopt);
        continue;
      }
      auto g = randn<double>(params[i].second.shape(), gen);
      params[i].second.set_grad(g);
      grads.emplace_back(values(g));
    }
    opt.step();
    ref.step(grads);
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO("parameter " << params[i].first);
    CHECK(max_diff(values(params[i].second), ref.p[i]) < 1e-12);
  }
  if (options.momentum != 0.0) {
    const auto state = opt.state();
    REQUIRE(state.size() == 2 * params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      CHECK(state[2 * i].first == params[i].first + ".momentum_buffer");
      CHECK(max_diff(values(state[2 * i].second), ref.buf[i]) < 1e-12);
    }
    CHECK(state[3].second.item() == steps - 2);
  } else {
    CHECK(opt.state().empty());
  }
}

}  // namespace

TEST_CASE("SGD follows the double-precision reference loop") {
  const std::vector<Shape> shapes{{3, 4}, {4}, {}};
  SUBCASE("plain") { compare_with_reference({.lr = 0.1}, shapes, 5); }
  SUBCASE("plain with weight decay") { compare_with_reference({.lr = 0.1, .weight_decay = 0.2}, shapes, 5); }
  SUBCASE("momentum with dampening") {
    compare_with_reference({.lr = 0.1, .momentum = 0.9, .dampening = 0.3}, shapes, 6);
  }
  SUBCASE("momentum with dampening and weight decay") {
    compare_with_reference({.lr = 0.05, .momentum = 0.5, .dampening = 0.1, .weight_decay = 0.01}, shapes, 6);
  }
  SUBCASE("Nesterov with weight decay") {
    compare_with_reference({.lr = 0.05, .momentum = 0.9, .nesterov = true, .weight_decay = 0.1}, shapes, 6);
  }
  SUBCASE("large parameters take the multi-threaded chunked path") {
    compare_with_reference({.lr = 0.01, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01},
                           {{300, 301}, {40000}, {70000}}, 4);
  }
}

// Numbers produced on 2026-11-22 with PyTorch 2.15.0 (python3, CPU), float64:
//   W = torch.tensor([[0.5, -1.25, 2.0], [0.75, 0.1, -0.3]], requires_grad=True)
//   b = torch.tensor([0.2, -0.4, 0.6], requires_grad=True)
//   opt = torch.optim.SGD([W, b], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)
//     (and SGD([W, b], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))
//   for k in range(3): W.grad = gW[k]; b.grad = gb[k] (None at k = 1); opt.step()
TEST_CASE("SGD matches torch.optim.SGD") {
  const std::vector<std::vector<double>> gW{{0.3, -0.2, 0.1, 0.05, 0.4, -0.6},
                                            {-0.1, 0.25, 0.0, 0.2, -0.3, 0.15},
                                            {0.7, 0.1, -0.05, -0.4, 0.02, 0.3}};
  const std::vector<std::optional<std::vector<double>>> gb{std::vector<double>{0.1, -0.2, 0.3}, std::nullopt,
                                                           std::vector<double>{-0.05, 0.15, 0.25}};
  auto run = [&](const SGDOptions& options) {
    auto W = tensor<double>({0.5, -1.25, 2.0, 0.75, 0.1, -0.3}, {2, 3}).requires_grad_();
    auto b = tensor<double>({0.2, -0.4, 0.6}).requires_grad_();
    SGD<double> opt({{"W", W}, {"b", b}}, options);
    for (int k = 0; k < 3; ++k) {
      W.set_grad(from_vector<double>(gW[k], {2, 3}));
      if (gb[k]) {
        b.set_grad(from_vector<double>(*gb[k], {3}));
      } else {
        b.zero_grad();
      }
      opt.step();
    }
    return std::make_pair(values(W), values(b));
  };
  SUBCASE("momentum with dampening") {
    const auto [W, b] = run({.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
    CHECK(max_diff(W, {0.370236590295, -1.2409534202874999, 1.96680265028, 0.7342964678425, 0.040680890518999986,
                       -0.188648270157}) < 1e-14);
    CHECK(max_diff(b, {0.18494918, -0.37439836, 0.51884754}) < 1e-14);
  }
  SUBCASE("Nesterov") {
    const auto [W, b] = run({.lr = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01});
    CHECK(max_diff(W, {0.2871850848005, -1.25804169924625, 1.959142713692, 0.74870233156075, 0.039439835754099976,
                       -0.1894627888023}) < 1e-14);
    CHECK(max_diff(b, {0.181514822, -0.372529644, 0.468544466}) < 1e-14);
  }
}

TEST_CASE("SGD state round trip continues bit-identically") {
  Generator gen(9);
  Generator init_a(4), init_b(4);
  auto make = [](Generator& g) {
    optim::NamedTensors<float> p;
    p.emplace_back("w", randn<float>({200, 300}, g).requires_grad_());
    p.emplace_back("b", randn<float>({300}, g).requires_grad_());
    return p;
  };
  auto pa = make(init_a);
  auto pb = make(init_b);
  const SGDOptions options{.lr = 0.01, .momentum = 0.9, .dampening = 0.2, .weight_decay = 1e-3};
  SGD<float> a(pa, options);
  auto set_grads = [&](int step) {
    for (std::size_t i = 0; i < pa.size(); ++i) {
      if (i == 1 && step < 3) continue;  // the bias starts its buffer after the reload
      auto g = randn<float>(pa[i].second.shape(), gen);
      pa[i].second.set_grad(g);
      pb[i].second.set_grad(g.clone());
    }
  };
  for (int s = 0; s < 2; ++s) {
    set_grads(s);
    a.step();
  }
  for (std::size_t i = 0; i < pa.size(); ++i)
    std::copy(pa[i].second.data(), pa[i].second.data() + pa[i].second.numel(), pb[i].second.data());
  SGD<float> b(pb, options);
  b.load_state(a.state(), a.steps());
  for (int s = 2; s < 6; ++s) {
    set_grads(s);
    a.step();
    b.step();
  }
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(values(pa[i].second) == values(pb[i].second));
  CHECK(b.steps() == 6);
  CHECK(b.state()[3].second.item() == 3.0f);
}

TEST_CASE("SGD errors name the optimizer and the tensor") {
  auto w = zeros<double>({2, 2}).requires_grad_();
  const optim::NamedTensors<double> params{{"w", w}};
  CHECK_THROWS_WITH_AS(SGD<double>(params, {.lr = -0.1}), "[SGD] invalid learning rate: -0.1 (must be finite and >= 0)",
                       Error);
  CHECK_THROWS_WITH_AS(SGD<double>(params, {.momentum = -0.9}), "[SGD] invalid momentum: -0.9 (must be finite and >= 0)",
                       Error);
  CHECK_THROWS_WITH_AS(SGD<double>(params, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                       "[SGD] Nesterov momentum needs momentum > 0 and dampening == 0, got momentum 0.9 and dampening 0.1",
                       Error);
  CHECK_THROWS_WITH_AS(SGD<double>(params, {.nesterov = true}), doctest::Contains("[SGD] Nesterov momentum needs"), Error);
  CHECK_THROWS_WITH_AS(SGD<double>({}), "[SGD] got an empty parameter list", Error);

  SGD<double> plain(params, {.lr = 0.1});
  CHECK_THROWS_WITH_AS(plain.load_state({{"w.momentum_buffer", zeros<double>({2, 2})}}, 0),
                       "[SGD] load_state: unexpected state entry 'w.momentum_buffer' (no such parameter or buffer in "
                       "this optimizer)",
                       Error);
  SGD<double> heavy(params, {.lr = 0.1, .momentum = 0.5});
  CHECK_THROWS_WITH_AS(heavy.load_state({}, 0), "[SGD] load_state: missing state entry 'w.momentum_buffer'", Error);
  CHECK_THROWS_WITH_AS(heavy.load_state({{"w.momentum_buffer", zeros<double>({4})}}, 0),
                       "[SGD] load_state: state entry 'w.momentum_buffer' has shape (4) but parameter 'w' has shape (2x2)",
                       Error);
  CHECK_THROWS_WITH_AS(
      heavy.load_state({{"w.momentum_buffer", zeros<double>({2, 2})}, {"w.step", tensor<double>({0.5})}}, 3),
      "[SGD] load_state: state entry 'w.step' = 0.5 is not an integer step count in [0, 3]", Error);
  w.set_grad(zeros<double>({2}));
  CHECK_THROWS_WITH_AS(heavy.step(), "[SGD] gradient of parameter 'w' has shape (2) but the parameter has shape (2x2)",
                       Error);
}

}  // namespace test_sgd
