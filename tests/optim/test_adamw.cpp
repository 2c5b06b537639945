// AdamW: trajectories against a hand-written double-precision loop (weight decay on and off,
// decay_vectors, skipped parameters, learning-rate changes, the multi-threaded chunked path),
// against numbers from torch.optim.AdamW, the state()/load_state() round trip, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <optional>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/optim/adamw.hpp"
#include "test_util.hpp"

namespace test_adamw {

using namespace condense;
using condense::testing::values;
using optim::AdamW;
using optim::AdamWOptions;

namespace {

/// The AdamW update written out plainly in double, one parameter at a time.
struct RefAdamW {
  AdamWOptions o;
  std::vector<std::vector<double>> p, m, v;
  std::vector<bool> decayed;
  std::vector<int> t;

  void step(const std::vector<std::optional<std::vector<double>>>& grads) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (!grads[i]) continue;
      const auto& g = *grads[i];
      t[i] += 1;
      const double bc1 = 1.0 - std::pow(o.beta1, t[i]);
      const double bc2 = 1.0 - std::pow(o.beta2, t[i]);
      for (std::size_t j = 0; j < p[i].size(); ++j) {
        if (decayed[i]) p[i][j] = p[i][j] - o.lr * o.weight_decay * p[i][j];
        m[i][j] = o.beta1 * m[i][j] + (1.0 - o.beta1) * g[j];
        v[i][j] = o.beta2 * v[i][j] + (1.0 - o.beta2) * g[j] * g[j];
        const double m_hat = m[i][j] / bc1;
        const double v_hat = v[i][j] / bc2;
        p[i][j] = p[i][j] - o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
      }
    }
  }
};

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

/// Runs condense's AdamW and the reference side by side on random gradients; parameter 1
/// has no gradient at step 2, and the learning rate changes every step.
void compare_with_reference(const AdamWOptions& options, const std::vector<Shape>& shapes, int steps) {
  Generator gen(7);
  optim::NamedTensors<double> params;
  RefAdamW ref{options, {}, {}, {}, {}, {}};
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    auto p = randn<double>(shapes[i], gen).requires_grad_();
    params.emplace_back("p" + std::to_string(i), p);
    ref.p.push_back(values(p));
    ref.m.emplace_back(ref.p.back().size(), 0.0);
    ref.v.emplace_back(ref.p.back().size(), 0.0);
    ref.decayed.push_back(options.decay_vectors || shapes[i].size() >= 2);
    ref.t.push_back(0);
  }
  AdamW<double> opt(params, options);
  for (int s = 0; s < steps; ++s) {
    const double lr = options.lr * (1.0 + 0.5 * s);
    opt.set_lr(lr);
    ref.o.lr = lr;
    std::vector<std::optional<std::vector<double>>> grads;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (i == 1 && s == 2) {
        params[i].second.zero_grad();
        grads.emplace_back(std::nullopt);
        continue;
      }
      auto g = randn<double>(params[i].second.shape(), gen, 0.0, 0.5 + s);
      params[i].second.set_grad(g);
      grads.emplace_back(values(g));
    }
    opt.step();
    ref.step(grads);
  }
  CHECK(opt.steps() == steps);
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO("parameter " << params[i].first);
    CHECK(max_diff(values(params[i].second), ref.p[i]) < 1e-12);
  }
  const auto state = opt.state();
  REQUIRE(state.size() == 3 * params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    CHECK(state[3 * i].first == params[i].first + ".exp_avg");
    CHECK(max_diff(values(state[3 * i].second), ref.m[i]) < 1e-12);
    CHECK(state[3 * i + 1].first == params[i].first + ".exp_avg_sq");
    CHECK(max_diff(values(state[3 * i + 1].second), ref.v[i]) < 1e-12);
    CHECK(state[3 * i + 2].first == params[i].first + ".step");
    CHECK(state[3 * i + 2].second.item() == ref.t[i]);
  }
}

}  // namespace

TEST_CASE("AdamW follows the double-precision reference loop") {
  const std::vector<Shape> shapes{{3, 4}, {4}, {2, 3, 2}, {}};
  SUBCASE("with weight decay, vectors not decayed") {
    compare_with_reference({.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1}, shapes, 6);
  }
  SUBCASE("with weight decay on every parameter") {
    compare_with_reference({.lr = 0.01, .weight_decay = 0.3, .decay_vectors = true}, shapes, 6);
  }
  SUBCASE("without weight decay, large eps, beta1 = 0") {
    compare_with_reference({.lr = 0.05, .beta1 = 0.0, .beta2 = 0.9, .eps = 0.1, .weight_decay = 0.0}, shapes, 5);
  }
  SUBCASE("large parameters take the multi-threaded chunked path") {
    compare_with_reference({.lr = 0.002, .weight_decay = 0.05}, {{257, 301}, {70001}, {5}}, 4);
  }
}

// Numbers produced on 2026-11-22 with PyTorch 2.15.0 (python3, CPU):
//   W = torch.tensor([[0.5, -1.25, 2.0], [0.75, 0.1, -0.3]], dtype=dt, requires_grad=True)
//   b = torch.tensor([0.2, -0.4, 0.6], dtype=dt, requires_grad=True)
//   opt = torch.optim.AdamW([{'params': [W]}, {'params': [b], 'weight_decay': 0.0}],
//                           lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
//   for k in range(3): W.grad = gW[k]; b.grad = gb[k] (None at k = 1); opt.step()
//   print(W.flatten().tolist(), b.tolist())      for dt = torch.float64 and torch.float32
// with the gradients kGradW / kGradB below.
namespace {
const std::vector<std::vector<double>> kGradW{{0.3, -0.2, 0.1, 0.05, 0.4, -0.6},
                                              {-0.1, 0.25, 0.0, 0.2, -0.3, 0.15},
                                              {0.7, 0.1, -0.05, -0.4, 0.02, 0.3}};
const std::vector<std::optional<std::vector<double>>> kGradB{
    std::vector<double>{0.1, -0.2, 0.3}, std::nullopt, std::vector<double>{-0.05, 0.15, 0.25}};

template <FloatingElement T>
std::pair<std::vector<double>, std::vector<double>> run_torch_case() {
  auto W = tensor<T>({0.5, -1.25, 2.0, 0.75, 0.1, -0.3}, {2, 3}).requires_grad_();
  auto b = tensor<T>({0.2, -0.4, 0.6}).requires_grad_();
  AdamW<T> opt({{"W", W}, {"b", b}}, {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  for (int k = 0; k < 3; ++k) {
    std::vector<T> gw(kGradW[k].begin(), kGradW[k].end());
    W.set_grad(from_vector<T>(gw, {2, 3}));
    if (kGradB[k]) {
      std::vector<T> gb(kGradB[k]->begin(), kGradB[k]->end());
      b.set_grad(from_vector<T>(gb, {3}));
    } else {
      b.zero_grad();
    }
    opt.step();
  }
  return {values(W), values(b)};
}
}  // namespace

TEST_CASE("AdamW matches torch.optim.AdamW") {
  SUBCASE("float64") {
    const auto [W, b] = run_torch_case<double>();
    const std::vector<double> torch_W{0.477506452828637,   -1.2410228927132647, 1.9754466628878442,
                                      0.7315335264422633,  0.08786376458405545, -0.28389676956460486};
    const std::vector<double> torch_b{0.18731630686126682, -0.3891035893549493, 0.5800657254028171};
    CHECK(max_diff(W, torch_W) < 1e-14);
    CHECK(max_diff(b, torch_b) < 1e-14);
  }
  SUBCASE("float32") {
    const auto [W, b] = run_torch_case<float>();
    const std::vector<double> torch_W{0.47750645875930786, -1.2410229444503784, 1.9754468202590942,
                                      0.7315335869789124,  0.08786376565694809, -0.2838967740535736};
    const std::vector<double> torch_b{0.18731629848480225, -0.38910359144210815, 0.5800657868385315};
    CHECK(max_diff(W, torch_W) < 1e-6);
    CHECK(max_diff(b, torch_b) < 1e-6);
  }
}

TEST_CASE("AdamW updates in place, records nothing and skips parameters without a gradient") {
  auto w = tensor<float>({1, 2, 3, 4}, {2, 2}).requires_grad_();
  auto frozen = tensor<float>({5, 6}, {1, 2}).requires_grad_();
  const auto alias = w.detach();
  AdamW<float> opt({{"w", w}, {"frozen", frozen}}, {.lr = 0.1, .weight_decay = 0.5});
  w.set_grad(ones<float>({2, 2}));
  opt.step();
  CHECK(values(alias) == values(w));
  CHECK(values(w) != std::vector<double>{1, 2, 3, 4});
  CHECK(w.is_leaf());
  CHECK(w.grad_fn_name().empty());
  // No gradient: no weight decay, no state change.
  CHECK(values(frozen) == std::vector<double>{5, 6});
  const auto state = opt.state();
  CHECK(values(state[3].second) == std::vector<double>{0, 0});
  CHECK(state[5].second.item() == 0.0f);
  CHECK(state[2].second.item() == 1.0f);
  // zero_grad clears the gradients.
  opt.zero_grad();
  CHECK(!w.grad().defined());
  // The state is a copy: changing it does not touch the optimizer.
  state[0].second.data()[0] = 100.0f;
  CHECK(opt.state()[0].second.data()[0] != 100.0f);
  // A non-contiguous gradient is read correctly.
  auto g = tensor<float>({1, 3, 2, 4}, {2, 2}).transpose(0, 1);
  REQUIRE(!g.is_contiguous());
  auto w2 = tensor<float>({0, 0, 0, 0}, {2, 2}).requires_grad_();
  auto w3 = tensor<float>({0, 0, 0, 0}, {2, 2}).requires_grad_();
  AdamW<float> opt2({{"a", w2}, {"b", w3}}, {.lr = 0.1, .beta2 = 0.5});
  w2.set_grad(g);
  w3.set_grad(g.contiguous());
  opt2.step();
  CHECK(values(w2) == values(w3));
}

TEST_CASE("AdamW state round trip continues bit-identically") {
  Generator gen(11);
  auto make = [&](Generator& g) {
    optim::NamedTensors<double> p;
    p.emplace_back("layers.0.weight", randn<double>({6, 5}, g).requires_grad_());
    p.emplace_back("layers.0.bias", randn<double>({5}, g).requires_grad_());
    p.emplace_back("big", randn<double>({300, 250}, g).requires_grad_());
    return p;
  };
  Generator init_a(3), init_b(3);
  auto pa = make(init_a);
  auto pb = make(init_b);
  const AdamWOptions options{.lr = 0.01, .beta1 = 0.8, .beta2 = 0.9, .weight_decay = 0.1};
  AdamW<double> a(pa, options);
  auto set_grads = [&](int step) {
    for (std::size_t i = 0; i < pa.size(); ++i) {
      if (i == 1 && step == 1) {  // the bias misses one gradient: its step count lags
        pa[i].second.zero_grad();
        pb[i].second.zero_grad();
        continue;
      }
      auto g = randn<double>(pa[i].second.shape(), gen);
      pa[i].second.set_grad(g);
      pb[i].second.set_grad(g.clone());
    }
  };
  for (int s = 0; s < 3; ++s) {
    set_grads(s);
    a.step();
  }
  // A fresh optimizer on parameters with a's values, restored from a's state.
  for (std::size_t i = 0; i < pa.size(); ++i)
    std::copy(pa[i].second.data(), pa[i].second.data() + pa[i].second.numel(), pb[i].second.data());
  AdamW<double> b(pb, options);
  b.load_state(a.state(), a.steps());
  CHECK(b.steps() == 3);
  for (int s = 3; s < 6; ++s) {
    set_grads(s);
    a.step();
    b.step();
  }
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(values(pa[i].second) == values(pb[i].second));
  const auto sa = a.state();
  const auto sb = b.state();
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].first == sb[i].first);
    CHECK(values(sa[i].second) == values(sb[i].second));
  }
  CHECK(sa[5].first == "layers.0.bias.step");
  CHECK(sa[5].second.item() == 5.0);
  // Without the ".step" entries every parameter takes the given step count.
  optim::NamedTensors<double> no_steps;
  for (const auto& e : sa)
    if (e.first.find(".step") == std::string::npos) no_steps.push_back(e);
  b.load_state(no_steps, 6);
  CHECK(b.state()[5].second.item() == 6.0);
}

TEST_CASE("AdamW errors name the optimizer and the tensor") {
  auto w = zeros<float>({2, 3}).requires_grad_();
  auto bias = zeros<float>({3}).requires_grad_();
  const optim::NamedTensors<float> params{{"w", w}, {"bias", bias}};
  CHECK_THROWS_WITH_AS(AdamW<float>(params, {.lr = -1.0}), "[AdamW] invalid learning rate: -1 (must be finite and >= 0)",
                       Error);
  CHECK_THROWS_WITH_AS(AdamW<float>(params, {.beta1 = 1.0}), "[AdamW] invalid beta1: 1 (must be in [0, 1))", Error);
  CHECK_THROWS_WITH_AS(AdamW<float>(params, {.beta2 = -0.1}), "[AdamW] invalid beta2: -0.1 (must be in [0, 1))", Error);
  CHECK_THROWS_WITH_AS(AdamW<float>(params, {.eps = NAN}), doctest::Contains("[AdamW] invalid eps: nan"), Error);
  CHECK_THROWS_WITH_AS(AdamW<float>(params, {.weight_decay = -0.5}),
                       "[AdamW] invalid weight_decay: -0.5 (must be finite and >= 0)", Error);
  CHECK_THROWS_WITH_AS(AdamW<float>({}), "[AdamW] got an empty parameter list", Error);
  CHECK_THROWS_WITH_AS(AdamW<float>({{"w", w}, {"w", bias}}), "[AdamW] parameter name 'w' appears twice", Error);
  CHECK_THROWS_WITH_AS(AdamW<float>({{"embed", w}, {"head", w}}),
                       "[AdamW] parameters 'embed' and 'head' share memory (tied weights must be passed once)", Error);
  CHECK_THROWS_WITH_AS(AdamW<float>({{"embed", w}, {"row", w.select(0, 1)}}), doctest::Contains("share memory"), Error);
  CHECK_THROWS_WITH_AS(AdamW<float>({{"t", zeros<float>({2, 3}).transpose(0, 1)}}),
                       "[AdamW] parameter 't' float32 (3x2) cpu is not contiguous; optimizers update parameters in "
                       "place and need contiguous storage",
                       Error);
  CHECK_THROWS_WITH_AS(AdamW<float>({{"u", Tensor<float>()}}), "[AdamW] parameter 'u' is an undefined tensor", Error);

  AdamW<float> opt(params);
  CHECK_THROWS_WITH_AS(opt.set_lr(INFINITY), doctest::Contains("[AdamW] invalid learning rate: inf"), Error);
  w.set_grad(zeros<float>({3, 2}));
  CHECK_THROWS_WITH_AS(opt.step(), "[AdamW] gradient of parameter 'w' has shape (3x2) but the parameter has shape (2x3)",
                       Error);
  w.zero_grad();

  auto state = opt.state();
  CHECK_THROWS_WITH_AS(opt.load_state(state, -1), "[AdamW] load_state: step count -1 is negative", Error);
  auto renamed = state;
  renamed[0].first = "v.exp_avg";
  CHECK_THROWS_WITH_AS(opt.load_state(renamed, 0),
                       "[AdamW] load_state: unexpected state entry 'v.exp_avg' (no such parameter or buffer in this "
                       "optimizer)",
                       Error);
  auto reshaped = state;
  reshaped[3].second = zeros<float>({1, 3});
  CHECK_THROWS_WITH_AS(opt.load_state(reshaped, 0),
                       "[AdamW] load_state: state entry 'bias.exp_avg' has shape (1x3) but parameter 'bias' has shape (3)",
                       Error);
  auto missing = state;
  missing.erase(missing.begin() + 1);
  CHECK_THROWS_WITH_AS(opt.load_state(missing, 0), "[AdamW] load_state: missing state entry 'w.exp_avg_sq'", Error);
  auto doubled = state;
  doubled.push_back(state[0]);
  CHECK_THROWS_WITH_AS(opt.load_state(doubled, 0), "[AdamW] load_state: state entry 'w.exp_avg' appears twice", Error);
  auto late = state;
  late[2].second = optim::detail::step_tensor<float>(4);
  CHECK_THROWS_WITH_AS(opt.load_state(late, 3),
                       "[AdamW] load_state: state entry 'w.step' = 4 is not an integer step count in [0, 3]", Error);
  auto negative = state;
  negative[1].second = full<float>({2, 3}, -1.0f);
  CHECK_THROWS_WITH_AS(opt.load_state(negative, 0),
                       "[AdamW] load_state: state entry 'w.exp_avg_sq' has a negative value -1 (a second-moment "
                       "average is >= 0)",
                       Error);
  // A failed load changes nothing.
  CHECK(opt.steps() == 0);
  CHECK(values(opt.state()[1].second) == std::vector<double>(6, 0.0));
}

}  // namespace test_adamw
