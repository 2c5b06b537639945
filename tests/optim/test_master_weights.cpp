// Optimizers of 16-bit parameters (float master weights): AdamW<bfloat16> and SGD<float16>
// take exactly the steps of AdamW<float> / SGD<float> on float copies of the parameters, and
// each parameter is its master rounded once; updates below a 16-bit ulp accumulate in the
// masters; skipped parameters stay as they are; the state round trip (with and without the
// master entries) continues bit for bit; clip_grad_norm of 16-bit gradients; errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/convert.hpp"
#include "condense/optim/adamw.hpp"
#include "condense/optim/clip.hpp"
#include "condense/optim/sgd.hpp"
#include "half_test_util.hpp"
#include "test_util.hpp"

namespace test_master_weights {

using namespace condense;
using condense::testing::bits;
using condense::testing::max_abs_diff;

namespace {

/// Two 16-bit parameters (a matrix and a vector) and float copies of them.
template <HalfElement T>
struct Pair {
  optim::NamedTensors<T> half;
  optim::NamedTensors<float> wide;
};

template <HalfElement T>
Pair<T> make_params(Generator& gen) {
  Pair<T> out;
  for (const auto& [name, shape] : std::vector<std::pair<std::string, Shape>>{{"w", {6, 5}}, {"b", {5}}}) {
    Tensor<T> p = randn<T>(shape, gen);
    p.requires_grad_();
    Tensor<float> f = p.detach().template cast<float>();
    f.requires_grad_();
    out.half.emplace_back(name, p);
    out.wide.emplace_back(name, f);
  }
  return out;
}

/// Gives both lists the same gradients (random 16-bit values); parameter `skip` gets none.
template <HalfElement T>
void set_grads(const Pair<T>& p, Generator& gen, std::size_t skip = 99) {
  for (std::size_t i = 0; i < p.half.size(); ++i) {
    p.half[i].second.zero_grad();
    p.wide[i].second.zero_grad();
    if (i == skip) continue;
    const Tensor<T> g = randn<T>(p.half[i].second.shape(), gen);
    p.half[i].second.set_grad(g);
    p.wide[i].second.set_grad(g.template cast<float>());
  }
}

/// Each 16-bit parameter is its float counterpart rounded, and each master equals it exactly.
template <HalfElement T, class Opt>
void check_tracks_float(const Pair<T>& p, const Opt& opt) {
  for (std::size_t i = 0; i < p.half.size(); ++i) {
    CAPTURE(p.half[i].first);
    CHECK(bits(p.half[i].second) == bits(p.wide[i].second.template cast<T>()));
    CHECK(max_abs_diff(opt.master_parameters()[i].second, p.wide[i].second) == 0.0);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("16-bit AdamW takes the float AdamW's steps on the masters", T, bfloat16, float16) {
  Generator gen(1);
  const Pair<T> p = make_params<T>(gen);
  const optim::AdamWOptions options{.lr = 0.05, .weight_decay = 0.1};
  optim::AdamW<T> opt(p.half, options);
  optim::AdamW<float> ref(p.wide, options);
  for (int step = 0; step < 4; ++step) {
    CAPTURE(step);
    set_grads(p, gen, step == 2 ? 1 : 99);  // "b" has no gradient at step 2
    opt.step();
    ref.step();
    check_tracks_float(p, opt);
  }
  CHECK(opt.steps() == 4);
  CHECK(opt.parameters()[0].second.data() == p.half[0].second.data());  // updated in place
}

TEST_CASE_TEMPLATE("16-bit SGD with momentum takes the float SGD's steps on the masters", T, bfloat16, float16) {
  Generator gen(2);
  const Pair<T> p = make_params<T>(gen);
  const optim::SGDOptions options{.lr = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01};
  optim::SGD<T> opt(p.half, options);
  optim::SGD<float> ref(p.wide, options);
  for (int step = 0; step < 3; ++step) {
    set_grads(p, gen);
    opt.step();
    ref.step();
    check_tracks_float(p, opt);
  }
}

TEST_CASE("16-bit AdamW: updates below half an ulp accumulate in the master") {
  // bfloat16 has 8 significant bits: around 1.0 an ulp is 2^-7. Adam's first steps move each
  // weight by about lr, so with lr = 2^-10 a plain bfloat16 weight would never change.
  Tensor<bfloat16> w = full<bfloat16>({4}, bfloat16(1.0f));
  w.requires_grad_();
  optim::AdamW<bfloat16> opt({{"w", w}}, {.lr = 0x1p-10, .weight_decay = 0.0});
  for (int step = 0; step < 16; ++step) {
    w.set_grad(full<bfloat16>({4}, bfloat16(1.0f)));
    opt.step();
  }
  // The master moved by about 16 * 2^-10 = 2^-6, two bfloat16 ulps below 1.
  const double master = static_cast<double>(opt.master_parameters()[0].second.to_vector()[0]);
  CHECK(master == doctest::Approx(1.0 - 16 * 0x1p-10).epsilon(1e-3));
  CHECK(static_cast<float>(w.to_vector()[0]) < 1.0f);
  CHECK(static_cast<float>(w.to_vector()[0]) == static_cast<float>(bfloat16(static_cast<float>(master))));
}

TEST_CASE_TEMPLATE("16-bit AdamW: state() and load_state() continue bit for bit", T, bfloat16, float16) {
  Generator gen(3);
  const optim::AdamWOptions options{.lr = 0.02, .weight_decay = 0.05};
  const Pair<T> a = make_params<T>(gen);
  optim::AdamW<T> first(a.half, options);
  Generator grads(4);
  for (int step = 0; step < 2; ++step) {
    set_grads(a, grads);
    first.step();
  }
  const auto saved = first.state();
  bool has_master = false;
  for (const auto& [name, t] : saved) has_master = has_master || name == "w.master";
  CHECK(has_master);

  // A second optimizer over copies of the parameters, restored from the state.
  Pair<T> b;
  for (const auto& [name, t] : a.half) {
    Tensor<T> c = randn<T>(t.shape(), gen);  // other values: the masters must replace them
    c.requires_grad_();
    b.half.emplace_back(name, c);
    b.wide.emplace_back(name, c.detach().template cast<float>());
  }
  optim::AdamW<T> second(b.half, options);
  second.load_state(saved, first.steps());
  for (std::size_t i = 0; i < a.half.size(); ++i) CHECK(bits(a.half[i].second) == bits(b.half[i].second));
  Generator ga(5), gb(5);
  for (int step = 0; step < 2; ++step) {
    set_grads(a, ga);
    set_grads(b, gb);
    first.step();
    second.step();
  }
  for (std::size_t i = 0; i < a.half.size(); ++i) {
    CHECK(bits(a.half[i].second) == bits(b.half[i].second));
    CHECK(max_abs_diff(first.master_parameters()[i].second, second.master_parameters()[i].second) == 0.0);
  }
  CHECK(second.steps() == 4);
}

TEST_CASE("16-bit AdamW: a state without masters starts them from the parameters") {
  Generator gen(6);
  const Pair<bfloat16> p = make_params<bfloat16>(gen);
  optim::AdamW<bfloat16> opt(p.half, {});
  optim::NamedTensors<float> state;
  for (const auto& [name, t] : opt.state())
    if (name.find(".master") == std::string::npos) state.emplace_back(name, t);
  const auto before = bits(p.half[0].second);
  opt.load_state(state, 0);
  CHECK(bits(p.half[0].second) == before);
  CHECK(max_abs_diff(opt.master_parameters()[0].second, p.wide[0].second) == 0.0);
}

TEST_CASE("16-bit AdamW: sync_from_parameters takes outside changes into the masters") {
  Generator gen(7);
  const Pair<bfloat16> p = make_params<bfloat16>(gen);
  optim::AdamW<bfloat16> opt(p.half, {.lr = 0.0});
  const Tensor<bfloat16> replacement = randn<bfloat16>(p.half[0].second.shape(), gen);
  std::copy(replacement.data(), replacement.data() + replacement.numel(), p.half[0].second.data());
  opt.sync_from_parameters();
  set_grads(p, gen);
  opt.step();  // lr 0: the parameters keep the replacement's values
  CHECK(bits(p.half[0].second) == bits(replacement));
}

TEST_CASE("16-bit AdamW: bad state entries and bad parameters throw naming the optimizer") {
  Generator gen(8);
  const Pair<bfloat16> p = make_params<bfloat16>(gen);
  optim::AdamW<bfloat16> opt(p.half, {});
  auto state = opt.state();
  state.emplace_back("w.master", zeros<float>({2, 2}));  // a second, misshapen master
  CHECK_THROWS_WITH_AS(opt.load_state(state, 0), doctest::Contains("[AdamW] load_state: state entry 'w.master'"), Error);
  optim::NamedTensors<float> bad = {{"w.master", zeros<float>({3})}};
  CHECK_THROWS_WITH_AS(opt.load_state(bad, 0), doctest::Contains("has shape (3) but parameter 'w' has shape (6x5)"),
                       Error);
  CHECK_THROWS_WITH_AS(optim::AdamW<bfloat16>(p.half, {.lr = -1.0}), doctest::Contains("[AdamW] invalid learning rate"),
                       Error);
  CHECK_THROWS_WITH_AS(optim::AdamW<bfloat16>({{"a", p.half[0].second}, {"a", p.half[1].second}}, {}),
                       doctest::Contains("[AdamW] parameter name 'a' appears twice"), Error);
}

TEST_CASE_TEMPLATE("clip_grad_norm of 16-bit gradients: the norm in double, the scaling in float", T, bfloat16, float16) {
  Generator gen(9);
  const Pair<T> p = make_params<T>(gen);
  set_grads(p, gen);
  const Tensor<T> g0 = p.half[0].second.grad();
  double expected = 0.0;
  for (const auto& [name, t] : p.half)
    for (const T x : t.grad().to_vector()) expected += static_cast<double>(static_cast<float>(x)) * static_cast<float>(x);
  expected = std::sqrt(expected);
  const double norm = optim::clip_grad_norm(p.half, 0.5);
  CHECK(norm == doctest::Approx(expected).epsilon(1e-12));
  const float coef = static_cast<float>(0.5 / (expected + optim::clip_epsilon));
  CHECK(bits(p.half[0].second.grad()) == bits(mul(g0.template cast<float>(), coef).template cast<T>()));
  CHECK(optim::grad_norm(p.half) == doctest::Approx(0.5).epsilon(1e-2));
}

}  // namespace test_master_weights
