// nn modules: Module registration and naming, init helpers, gradchecks of Linear,
// Embedding, the norms, learned positions and both Mlp kinds with respect to their inputs
// and parameters; Embedding::grow; values against hand-written compositions; errors.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/factories.hpp"
#include "condense/nn/linear.hpp"
#include "condense/nn/mlp.hpp"
#include "condense/nn/norms.hpp"
#include "condense/nn/embedding.hpp"
#include "condense/nn/init.hpp"
#include "condense/nn/positions.hpp"
#include "nn_test_util.hpp"
#include "test_util.hpp"

namespace test_modules {

using namespace condense;
using namespace condense::nn;
using condense::testing::GradInputs;
using condense::testing::max_abs_diff;
using condense::testing::bind_params;
using condense::testing::names_of;
using condense::testing::with_params;

namespace {

/// A small module tree for the registration tests.
class Pair : public Module<double> {
 public:
  explicit Pair(Generator& gen) : a(3, 2, true, gen), b(2, 4, false, gen) {
    scale = &register_parameter("scale", ones<double>({4}));
    register_module("a", a);
    register_module("b", b);
  }
  Linear<double> a, b;
  Tensor<double>* scale;
};

class Bad : public Module<double> {
 public:
  void dup() {
    register_parameter("w", zeros<double>({1}));
    register_parameter("w", zeros<double>({1}));
  }
  void dotted() { register_parameter("a.b", zeros<double>({1})); }
};

}  // namespace

TEST_CASE("Module: names, order, counts, train/eval, zero_grad, parameter lookup") {
  Generator gen(1);
  Pair m(gen);
  CHECK(names_of(m) == std::vector<std::string>{"scale", "a.weight", "a.bias", "b.weight"});
  CHECK(m.num_parameters() == 4 + 6 + 2 + 8);
  CHECK(m.parameters().size() == 4);
  for (const auto& p : m.parameters()) {
    CHECK(p.requires_grad());
    CHECK(p.is_leaf());
  }
  // Slots are shared: a handle sees in-place updates; parameter() finds the slot.
  Tensor<double> w = m.named_parameters()[1].second;
  w.data()[0] = 42.0;
  CHECK(m.a.weight().data()[0] == 42.0);
  CHECK(&m.parameter("a.weight") == &m.a.weight());
  CHECK_THROWS_WITH_AS(m.parameter("a.nope"), "[Module] no parameter named 'a.nope'", Error);
  CHECK(m.is_training());
  m.eval();
  CHECK(!m.is_training());
  CHECK(!m.a.is_training());
  m.train();
  CHECK(m.b.is_training());
  sum(m.b(m.a(ones<double>({1, 3})))).backward();
  CHECK(m.a.weight().grad().defined());
  m.zero_grad();
  CHECK(!m.a.weight().grad().defined());
  Bad bad;
  CHECK_THROWS_WITH_AS(bad.dup(), "[Module] name 'w' is already registered", Error);
  CHECK_THROWS_WITH_AS(bad.dotted(), "[Module] parameter name 'a.b' must not contain '.'", Error);
}

TEST_CASE("Module::to and device(): same-device moves keep the parameters, a missing device throws") {
  Generator gen(2);
  Pair m(gen);
  CHECK(m.device() == Device::cpu());
  const double* before = m.a.weight().data();
  m.to(Device::cpu());  // already there: the same storage, still leaves that require grad
  CHECK(m.a.weight().data() == before);
  CHECK(m.a.weight().requires_grad());
  if (!cuda::is_available()) {
    // No device (or a build without CUDA): the move throws and nothing is half moved.
    CHECK_THROWS_AS(m.to(Device::cuda()), Error);
    CHECK(m.device() == Device::cpu());
    CHECK(m.a.weight().data() == before);
  }
}

TEST_CASE("init helpers write in place without recording") {
  Generator gen(2);
  auto t = zeros<double>({64, 32});
  t.requires_grad_(true);
  init::normal_(t, 1.0, 0.5, gen);
  CHECK(t.is_leaf());
  CHECK(mean(t).item() == doctest::Approx(1.0).epsilon(0.02));
  const auto v = t.to_vector();
  double var = 0;
  for (double x : v) var += (x - 1.0) * (x - 1.0);
  CHECK(std::sqrt(var / v.size()) == doctest::Approx(0.5).epsilon(0.05));
  init::uniform_(t, -2.0, -1.0, gen);
  CHECK(amax(t).item() < -1.0);
  CHECK(amin(t).item() >= -2.0);
  init::xavier_uniform_(t, gen);
  const double a = std::sqrt(6.0 / (32 + 64));
  CHECK(amax(t).item() <= a);
  CHECK(amax(t).item() > 0.9 * a);
  init::xavier_normal_(t, gen, 2.0);
  init::zeros_(t);
  CHECK(sum(t).item() == 0.0);
  init::ones_(t);
  CHECK(sum(t).item() == 64 * 32);
  // Strided view: only the viewed elements change.
  auto base = zeros<double>({4, 4});
  init::constant_(base.transpose(0, 1).narrow(0, 1, 1), 3.0);
  CHECK(sum(base).item() == 12.0);
  CHECK(base.at({2, 1}) == 3.0);
  // Same seed, same values.
  Generator g1(9), g2(9);
  Linear<double> l1(5, 3, true, g1), l2(5, 3, true, g2);
  CHECK(max_abs_diff(l1.weight(), l2.weight()) == 0.0);
  CHECK(amax(l1.weight()).item() <= 1.0 / std::sqrt(5.0));
}

TEST_CASE("gradcheck: Linear, Embedding, norms, learned positions") {
  Generator gen(3);
  Linear<double> lin(4, 3, true, gen);
  CHECK_GRADCHECK([&](const GradInputs& x) { bind_params(lin, x, 1); return lin(x[0]); },
                  with_params(lin, {randn<double>({2, 5, 4}, gen).transpose(0, 1)}));
  Linear<double> nobias(4, 2, false, gen);
  CHECK(!nobias.bias().defined());
  CHECK(names_of(nobias) == std::vector<std::string>{"weight"});
  CHECK_GRADCHECK([&](const GradInputs& x) { bind_params(nobias, x, 1); return nobias(x[0]); },
                  with_params(nobias, {randn<double>({3, 4}, gen)}));
  CHECK(max_abs_diff(lin(ones<double>({1, 4})), sum(lin.weight(), {1}).unsqueeze(0) + lin.bias()) < 1e-14);

  Embedding<double> emb(6, 3, gen);
  const auto ids = from_vector<std::int64_t>({0, 5, 5, 2, 1, 0}, {2, 3});
  CHECK_GRADCHECK([&](const GradInputs& x) { bind_params(emb, x, 0); return emb(ids); }, with_params(emb, {}));
  CHECK(emb(ids).shape() == Shape{2, 3, 3});

  LayerNorm<double> ln(5);
  RMSNorm<double> rms(5);
  Norm<double> nrm(NormKind::LayerNorm, 5, 1e-5, false);
  CHECK(names_of(ln) == std::vector<std::string>{"weight", "bias"});
  CHECK(names_of(rms) == std::vector<std::string>{"weight"});
  CHECK(names_of(nrm) == std::vector<std::string>{"weight"});
  const auto x = randn<double>({2, 3, 5}, gen);
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(ln, in, 1); return ln(in[0]); }, with_params(ln, {x}));
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(rms, in, 1); return rms(in[0]); }, with_params(rms, {x}));
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(nrm, in, 1); return nrm(in[0]); }, with_params(nrm, {x}));
  CHECK(max_abs_diff(Norm<double>(NormKind::RMSNorm, 5, 1e-6)(x), rms(x)) < 1e-15);

  LearnedPositions<double> lp(7, 3, gen);
  const auto pos = from_vector<std::int64_t>({6, 0, 2}, {3});
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(lp, in, 0); return lp(pos); }, with_params(lp, {}));
  CHECK_THROWS_WITH_AS(lp(from_vector<std::int64_t>({7}, {1})), "[LearnedPositions] position 7 out of range [0, 7)", Error);
}

TEST_CASE("gradcheck: Mlp, GELU and SwiGLU") {
  Generator gen(4);
  Mlp<double> g({.d_model = 4, .hidden = 6, .kind = MlpKind::Gelu, .bias = true, .gelu = GeluApproximation::Erf}, gen);
  Mlp<double> s({.d_model = 4, .hidden = 6, .kind = MlpKind::SwiGLU, .bias = false}, gen);
  CHECK(names_of(g) == std::vector<std::string>{"up_proj.weight", "up_proj.bias", "down_proj.weight", "down_proj.bias"});
  CHECK(names_of(s) == std::vector<std::string>{"gate_proj.weight", "up_proj.weight", "down_proj.weight"});
  const auto x = randn<double>({2, 3, 4}, gen);
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(g, in, 1); return g(in[0]); }, with_params(g, {x}));
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(s, in, 1); return s(in[0]); }, with_params(s, {x}));
  // SwiGLU value: down(silu(gate x) * up x).
  const auto expect = linear(silu(linear(x, s.gate_proj->weight())) * linear(x, s.up_proj->weight()), s.down_proj->weight());
  CHECK(max_abs_diff(s(x), expect) < 1e-14);
}

TEST_CASE("Embedding::grow appends mean rows and replaces the parameter") {
  Generator gen(8);
  Embedding<double> emb(4, 3, gen);
  const auto before = emb.weight().detach().clone();
  const auto old_handle = emb.weight();
  emb.grow(2);
  CHECK(emb.num_embeddings() == 6);
  CHECK(emb.weight().shape() == Shape{6, 3});
  CHECK(emb.weight().requires_grad());
  CHECK(old_handle.shape() == Shape{4, 3});
  CHECK(max_abs_diff(emb.weight().narrow(0, 0, 4), before) == 0.0);
  const auto m = mean(before, {0});
  CHECK(max_abs_diff(emb.weight().select(0, 4), m) < 1e-6);
  CHECK(max_abs_diff(emb.weight().select(0, 5), m) < 1e-6);
  CHECK(emb(from_vector<std::int64_t>({5}, {1, 1})).shape() == Shape{1, 1, 3});
  CHECK_THROWS_WITH_AS(emb.grow(-1), "[Embedding::grow] number of new rows must be >= 0, got -1", Error);
}

TEST_CASE("module errors name the op") {
  Generator gen(9);
  Linear<double> lin(4, 2, true, gen);
  CHECK_THROWS_WITH_AS(lin(randn<double>({3, 5}, gen)), doctest::Contains("[linear] input (3x5) has 5 features"), Error);
  Embedding<double> emb(3, 2, gen);
  CHECK_THROWS_WITH_AS(emb(from_vector<std::int64_t>({0, 3}, {2})),
                       "[embedding] id 3 out of range for a table of 3 rows (weight (3x2))", Error);
  CHECK_THROWS_WITH_AS(Mlp<double>({.d_model = 4, .hidden = 0}, gen), "[Mlp] d_model and hidden must be positive, got 4 and 0",
                       Error);
  CHECK_THROWS_WITH_AS(Rotary<double>(5), "[Rotary] head dim must be positive and even, got 5", Error);
}

}  // namespace test_modules
