// CUDA parity of the optimizers, gradient clipping and dropout: AdamW and SGD steps with
// every option on CUDA parameters against the same optimizer on CPU copies (parameters and
// state after several steps, a parameter that misses a gradient, strided gradients, odd,
// single-element, empty and long tensors), the one-pass 16-bit AdamW against AdamW<float>
// on the device, the state round trip of a CUDA optimizer (saved on the CPU, loaded from
// either device), clip_grad_norm and grad_norm (clipping or not, non-finite norms, gradients
// on both devices), dropout masks equal bit for bit to the CPU ones for the same seed and
// their gradients, and the device errors. Every test skips with a message when no CUDA
// device is present.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"
#include "half_test_util.hpp"

namespace test_cuda_optim {

using namespace condense;
using condense::testing::allclose;
using condense::testing::check_cpu_cuda_parity;
using condense::testing::leaf_on;
using condense::testing::max_abs_diff;
using condense::testing::values;

namespace {

/// Tolerances per element type: the kernels may fuse a multiply and an add where the CPU
/// loop rounds twice, so float results differ by a few ulps per step.
template <FloatingElement T>
constexpr double optim_rtol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
template <FloatingElement T>
constexpr double optim_atol = std::is_same_v<T, float> ? 1e-6 : 1e-14;

/// Parameter shapes covering one element, odd sizes, a vector, rows longer than a block,
/// an empty tensor and more elements than one grid pass of a small grid.
const std::vector<std::pair<std::string, Shape>> param_shapes = {
    {"scalar", Shape{1}},       {"odd", Shape{7, 3}},  {"bias", Shape{5}},
    {"long_rows", Shape{3, 1000}}, {"empty", Shape{0, 4}}, {"big", Shape{257, 1031}},
};

/// The same parameters on the CPU and on CUDA.
template <FloatingElement T>
struct ParamPair {
  optim::NamedTensors<T> cpu, gpu;
};

template <FloatingElement T>
ParamPair<T> make_params(std::uint64_t seed) {
  Generator gen(seed);
  ParamPair<T> out;
  for (const auto& [name, shape] : param_shapes) {
    const auto v = randn<T>(shape, gen);
    out.cpu.emplace_back(name, leaf_on(v, Device::cpu()));
    out.gpu.emplace_back(name, leaf_on(v, Device::cuda()));
  }
  return out;
}

/// Gives both parameter lists the same random gradients for step `step`: parameter 1 has
/// none at step 1 (skipped, its step count lags), parameter 3's gradient is a transposed
/// (non-contiguous) view on both devices.
template <FloatingElement T>
void set_grads(ParamPair<T>& params, int step, Generator& gen) {
  for (std::size_t i = 0; i < params.cpu.size(); ++i) {
    const Tensor<T>& pc = params.cpu[i].second;
    const Tensor<T>& pg = params.gpu[i].second;
    if (i == 1 && step == 1) {
      pc.zero_grad();
      pg.zero_grad();
      continue;
    }
    if (i == 3) {
      const auto gt = randn<T>({pc.size(1), pc.size(0)}, gen);
      pc.set_grad(gt.transpose(0, 1));
      pg.set_grad(gt.to(Device::cuda()).transpose(0, 1));
      continue;
    }
    const auto g = randn<T>(pc.shape(), gen);
    pc.set_grad(g);
    pg.set_grad(g.to(Device::cuda()));
  }
}

template <FloatingElement T>
void check_close(const Tensor<T>& gpu, const Tensor<T>& cpu, double rtol, double atol, const std::string& what) {
  CAPTURE(what);
  REQUIRE(gpu.shape() == cpu.shape());
  CHECK_MESSAGE(allclose(gpu.cpu(), cpu, rtol, atol), what, " differs by ", max_abs_diff(gpu.cpu(), cpu));
}

/// Parameters (still on their devices) and the two optimizers' states agree.
template <FloatingElement T, class Opt>
void check_same(const ParamPair<T>& params, const Opt& cpu_opt, const Opt& gpu_opt) {
  for (std::size_t i = 0; i < params.cpu.size(); ++i) {
    CHECK(params.gpu[i].second.device() == Device::cuda());
    check_close(params.gpu[i].second, params.cpu[i].second, optim_rtol<T>, optim_atol<T>, params.cpu[i].first);
  }
  const auto sc = cpu_opt.state();
  const auto sg = gpu_opt.state();
  REQUIRE(sc.size() == sg.size());
  for (std::size_t i = 0; i < sc.size(); ++i) {
    CHECK(sg[i].first == sc[i].first);
    CHECK(sg[i].second.device() == Device::cpu());  // saved on the host
    check_close(sg[i].second, sc[i].second, optim_rtol<T>, optim_atol<T>, sc[i].first);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("cuda optim: AdamW steps match the CPU optimizer for every option", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const std::vector<std::pair<std::string, optim::AdamWOptions>> cases = {
      {"defaults", {}},
      {"strong decay, odd betas", {.lr = 0.03, .beta1 = 0.7, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.3}},
      {"no decay", {.lr = 0.01, .weight_decay = 0.0}},
      {"decay vectors", {.lr = 0.02, .weight_decay = 0.1, .decay_vectors = true}},
      {"beta1 0, lr 0", {.lr = 0.0, .beta1 = 0.0, .beta2 = 0.0}},
  };
  for (const auto& [name, options] : cases) {
    CAPTURE(name);
    auto params = make_params<T>(11);
    optim::AdamW<T> cpu_opt(params.cpu, options);
    optim::AdamW<T> gpu_opt(params.gpu, options);
    Generator gen(12);
    for (int step = 0; step < 5; ++step) {
      set_grads(params, step, gen);
      // A learning-rate schedule reaches both.
      cpu_opt.set_lr(options.lr * (1.0 + 0.25 * step));
      gpu_opt.set_lr(options.lr * (1.0 + 0.25 * step));
      cpu_opt.step();
      gpu_opt.step();
      check_same(params, cpu_opt, gpu_opt);
    }
    CHECK(gpu_opt.steps() == 5);
    CHECK(gpu_opt.state()[5].first == "odd.step");
    CHECK(gpu_opt.state()[5].second.item() == T(4));
  }
}

TEST_CASE("cuda optim: AdamW, SGD and clip_grad_norm over many tensors in a few launches match the CPU") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // 140 parameters, more than one multi-tensor launch holds (64 AdamW tensors, 128 sums or
  // scalings per launch), of 1 element to a few 16384-element chunks; one of 2101 chunks (more
  // than the 2048 blocks of one launch, so it continues in the next launch), an empty one, one
  // without a gradient at the first step; vectors are not decayed, matrices are. The norm is
  // far above max_norm, so every gradient is scaled too.
  Generator gen(77);
  std::vector<Shape> shapes;
  for (int i = 0; i < 140; ++i)
    shapes.push_back(i % 3 == 0 ? Shape{1 + 37 * i} : Shape{3 + i % 50, 1 + 911 * (i % 7)});
  shapes[10] = Shape{2100 * 16384 + 17};
  shapes[11] = Shape{0, 5};
  optim::NamedTensors<float> cpu, gpu;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const auto v = randn<float>(shapes[i], gen);
    cpu.emplace_back("p" + std::to_string(i), leaf_on(v, Device::cpu()));
    gpu.emplace_back("p" + std::to_string(i), leaf_on(v, Device::cuda()));
  }
  optim::AdamWOptions options;
  options.lr = 1e-2;
  options.weight_decay = 0.1;
  optim::AdamW<float> cpu_opt(cpu, options), gpu_opt(gpu, options);
  for (int step = 0; step < 3; ++step) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      if (i == 5 && step == 0) {
        cpu[i].second.zero_grad();
        gpu[i].second.zero_grad();
        continue;
      }
      const auto g = randn<float>(shapes[i], gen);
      cpu[i].second.set_grad(g);
      gpu[i].second.set_grad(g.to(Device::cuda()));
    }
    const double cpu_norm = optim::clip_grad_norm(cpu, 50.0), gpu_norm = optim::clip_grad_norm(gpu, 50.0);
    CHECK(cpu_norm > 50.0);
    CHECK(gpu_norm == doctest::Approx(cpu_norm).epsilon(1e-12));
    for (std::size_t i = 0; i < shapes.size(); ++i) {  // the same float products on both devices
      if (!cpu[i].second.grad().defined()) continue;
      CAPTURE(i);
      CHECK(values(gpu[i].second.grad().cpu()) == values(cpu[i].second.grad()));
    }
    cpu_opt.step();
    gpu_opt.step();
  }
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    CAPTURE(i);
    CHECK_MESSAGE(allclose(gpu[i].second.cpu(), cpu[i].second, optim_rtol<float>, optim_atol<float>),
                  "differs by ", max_abs_diff(gpu[i].second.cpu(), cpu[i].second));
  }
  CHECK(gpu_opt.state()[5 * 3 + 2].second.item() == 2.0f);  // p5's step count lags by one
  // SGD with Nesterov momentum over the same list (the first step sets the buffers).
  optim::SGDOptions sgd_options;
  sgd_options.lr = 0.05;
  sgd_options.momentum = 0.9;
  sgd_options.nesterov = true;
  sgd_options.weight_decay = 0.01;
  optim::SGD<float> cpu_sgd(cpu, sgd_options), gpu_sgd(gpu, sgd_options);
  for (int step = 0; step < 2; ++step) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const auto g = randn<float>(shapes[i], gen);
      cpu[i].second.set_grad(g);
      gpu[i].second.set_grad(g.to(Device::cuda()));
    }
    cpu_sgd.step();
    gpu_sgd.step();
  }
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    CAPTURE(i);
    CHECK_MESSAGE(allclose(gpu[i].second.cpu(), cpu[i].second, optim_rtol<float>, optim_atol<float>),
                  "after SGD differs by ", max_abs_diff(gpu[i].second.cpu(), cpu[i].second));
  }
}

TEST_CASE_TEMPLATE("cuda optim: SGD steps match the CPU optimizer for every option", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const std::vector<std::pair<std::string, optim::SGDOptions>> cases = {
      {"plain", {.lr = 0.1}},
      {"weight decay", {.lr = 0.1, .weight_decay = 0.05}},
      {"momentum", {.lr = 0.05, .momentum = 0.9}},
      {"momentum, dampening, decay", {.lr = 0.05, .momentum = 0.8, .dampening = 0.3, .weight_decay = 0.01}},
      {"nesterov", {.lr = 0.05, .momentum = 0.9, .nesterov = true}},
      {"nesterov, decay", {.lr = 0.05, .momentum = 0.5, .nesterov = true, .weight_decay = 0.2}},
  };
  for (const auto& [name, options] : cases) {
    CAPTURE(name);
    auto params = make_params<T>(21);
    optim::SGD<T> cpu_opt(params.cpu, options);
    optim::SGD<T> gpu_opt(params.gpu, options);
    Generator gen(22);
    for (int step = 0; step < 5; ++step) {
      set_grads(params, step, gen);
      cpu_opt.step();
      gpu_opt.step();
      check_same(params, cpu_opt, gpu_opt);
    }
  }
}

TEST_CASE_TEMPLATE("cuda optim: state round trip of a CUDA optimizer", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // Continues bit-identically after load_state from the CPU copy or from a copy on the device.
  for (bool state_on_device : {false, true}) {
    CAPTURE(state_on_device);
    auto a = make_params<T>(31);
    auto b = make_params<T>(32);  // other values: overwritten below
    const optim::AdamWOptions options{.lr = 0.01, .beta1 = 0.8, .beta2 = 0.9, .weight_decay = 0.1};
    optim::AdamW<T> opt_a(a.gpu, options);
    Generator gen(33);
    for (int step = 0; step < 3; ++step) {
      set_grads(a, step, gen);
      opt_a.step();
    }
    for (std::size_t i = 0; i < a.gpu.size(); ++i) detail::cuda_copy_into("test", b.gpu[i].second, a.gpu[i].second);
    auto saved = opt_a.state();
    for (const auto& [name, t] : saved) CHECK(t.device() == Device::cpu());
    if (state_on_device)
      for (auto& entry : saved) entry.second = entry.second.to(Device::cuda());
    optim::AdamW<T> opt_b(b.gpu, options);
    opt_b.load_state(saved, opt_a.steps());
    CHECK(opt_b.steps() == 3);
    Generator gen_a(34), gen_b(34);
    for (int step = 3; step < 6; ++step) {
      set_grads(a, step, gen_a);
      set_grads(b, step, gen_b);
      opt_a.step();
      opt_b.step();
    }
    for (std::size_t i = 0; i < a.gpu.size(); ++i) CHECK(values(a.gpu[i].second) == values(b.gpu[i].second));
    const auto sa = opt_a.state(), sb = opt_b.state();
    REQUIRE(sa.size() == sb.size());
    for (std::size_t i = 0; i < sa.size(); ++i) CHECK(values(sa[i].second) == values(sb[i].second));
  }
  // SGD with momentum: a CUDA state loaded into a CPU optimizer and back gives the same updates.
  auto params = make_params<T>(41);
  const optim::SGDOptions options{.lr = 0.05, .momentum = 0.9, .dampening = 0.1};
  optim::SGD<T> gpu_opt(params.gpu, options);
  optim::SGD<T> cpu_opt(params.cpu, options);
  Generator gen(42);
  for (int step = 0; step < 2; ++step) {
    set_grads(params, step, gen);
    gpu_opt.step();
  }
  for (std::size_t i = 0; i < params.cpu.size(); ++i) {
    const auto host = params.gpu[i].second.cpu();
    std::copy(host.data(), host.data() + host.numel(), params.cpu[i].second.data());
  }
  cpu_opt.load_state(gpu_opt.state(), gpu_opt.steps());
  for (int step = 2; step < 4; ++step) {
    set_grads(params, step, gen);
    gpu_opt.step();
    cpu_opt.step();
  }
  check_same(params, cpu_opt, gpu_opt);
  // load_state validates CUDA entries like CPU ones.
  auto bad = gpu_opt.state();
  bad[0].second = zeros<T>({2}, Device::cuda());
  CHECK_THROWS_WITH_AS(gpu_opt.load_state(bad, 4), doctest::Contains("[SGD] load_state: state entry 'scalar.momentum_buffer'"),
                       Error);
  auto bad_step = gpu_opt.state();
  bad_step[1].second = full<T>({}, T(9), Device::cuda());
  CHECK_THROWS_WITH_AS(gpu_opt.load_state(bad_step, 4), doctest::Contains("is not an integer step count in [0, 4]"), Error);
}

TEST_CASE_TEMPLATE("cuda optim: 16-bit AdamW's one-pass kernel takes AdamW<float>'s steps on the device, bit for bit", T,
                   bfloat16, float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // AdamW<T> (float masters, the fused kernel) against AdamW<float> on float copies of the
  // same parameters with the widened gradients, on the device: masters, moments and step
  // counts equal bit for bit, and each 16-bit parameter is its master rounded. A CPU AdamW<T>
  // on the same inputs stays within float rounding (masters) and one 16-bit ulp (parameters).
  const optim::AdamWOptions options{.lr = 0.02, .beta1 = 0.8, .beta2 = 0.95, .weight_decay = 0.1};
  Generator gen(51);
  optim::NamedTensors<T> half_gpu, half_cpu;
  optim::NamedTensors<float> float_gpu;
  for (const auto& [name, shape] : param_shapes) {
    const auto v = randn<T>(shape, gen);
    half_gpu.emplace_back(name, leaf_on(v, Device::cuda()));
    half_cpu.emplace_back(name, leaf_on(v, Device::cpu()));
    float_gpu.emplace_back(name, leaf_on(v.template cast<float>(), Device::cuda()));
  }
  optim::AdamW<T> half_opt(half_gpu, options);
  optim::AdamW<T> cpu_opt(half_cpu, options);
  optim::AdamW<float> float_opt(float_gpu, options);
  for (int step = 0; step < 3; ++step) {
    for (std::size_t i = 0; i < half_gpu.size(); ++i) {
      const Tensor<T>& p = half_gpu[i].second;
      if (i == 1 && step == 1) {  // no gradient: skipped, its step count lags
        p.zero_grad();
        half_cpu[i].second.zero_grad();
        float_gpu[i].second.zero_grad();
        continue;
      }
      const auto g = randn<T>(p.shape(), gen);
      p.set_grad(g.to(Device::cuda()));
      half_cpu[i].second.set_grad(g);
      float_gpu[i].second.set_grad(g.template cast<float>().to(Device::cuda()));
    }
    half_opt.step();
    cpu_opt.step();
    float_opt.step();
  }
  CHECK(half_opt.steps() == 3);
  const auto& masters = half_opt.master_parameters();
  for (std::size_t i = 0; i < half_gpu.size(); ++i) {
    CAPTURE(half_gpu[i].first);
    CHECK(half_gpu[i].second.device() == Device::cuda());
    CHECK(values(masters[i].second.cpu()) == values(float_gpu[i].second.cpu()));
    CHECK(condense::testing::bits(half_gpu[i].second.cpu()) ==
          condense::testing::bits(float_gpu[i].second.cpu().template cast<T>()));
    check_close(masters[i].second, cpu_opt.master_parameters()[i].second, optim_rtol<float>, optim_atol<float>,
                "master against the CPU");
    // One 16-bit ulp: relative for normal values, the smallest float16 subnormal below them.
    const double ulp_atol = std::is_same_v<T, float16> ? 0x1p-24 : 0.0;
    CHECK_MESSAGE(allclose(half_gpu[i].second.cpu(), half_cpu[i].second, condense::testing::half_epsilon<T>, ulp_atol),
                  "parameter against the CPU differs by ", max_abs_diff(half_gpu[i].second.cpu(), half_cpu[i].second));
  }
  // The float optimizer's entries of the state (moments, step counts) equal AdamW<float>'s.
  const auto half_state = half_opt.state(), float_state = float_opt.state();
  REQUIRE(half_state.size() == float_state.size() + half_gpu.size());  // plus one master each
  for (std::size_t i = 0; i < float_state.size(); ++i) {
    CAPTURE(float_state[i].first);
    CHECK(half_state[i].first == float_state[i].first);
    CHECK(values(half_state[i].second) == values(float_state[i].second));
  }
}

TEST_CASE("cuda optim: optimizers reject mixed devices") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  auto w = zeros<float>({2, 3}, Device::cuda()).requires_grad_();
  auto b = zeros<float>({3}).requires_grad_();
  CHECK_THROWS_WITH_AS(optim::AdamW<float>({{"w", w}, {"b", b}}),
                       "[AdamW] parameter 'b' is float32 (3) cpu but parameter 'w' is float32 (2x3) cuda:0; all "
                       "parameters of one optimizer must be on one device",
                       Error);
  CHECK_THROWS_WITH_AS(optim::SGD<float>({{"b", b}, {"w", w}}), doctest::Contains("all parameters of one optimizer must be on one device"),
                       Error);
  optim::AdamW<float> adamw({{"w", w}});
  optim::SGD<float> sgd({{"w", w}}, {.momentum = 0.9});
  w.set_grad(zeros<float>({2, 3}));
  CHECK_THROWS_WITH_AS(adamw.step(),
                       "[AdamW] gradient of parameter 'w' is float32 (2x3) cpu but the parameter is float32 (2x3) "
                       "cuda:0; the gradient must be on the parameter's device",
                       Error);
  CHECK_THROWS_WITH_AS(sgd.step(), doctest::Contains("[SGD] gradient of parameter 'w' is float32 (2x3) cpu"), Error);
  // A CPU optimizer rejects a CUDA gradient the same way.
  optim::SGD<float> cpu_sgd({{"b", b}});
  b.set_grad(zeros<float>({3}, Device::cuda()));
  CHECK_THROWS_WITH_AS(cpu_sgd.step(), doctest::Contains("the gradient must be on the parameter's device"), Error);
  // The state of a CUDA optimizer starts at zero on the device.
  CHECK(values(adamw.state()[0].second) == std::vector<double>(6, 0.0));
}

TEST_CASE_TEMPLATE("cuda clip: grad_norm and clip_grad_norm match the CPU path", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(51);
  // One element, odd, empty, rows longer than a block, more partial sums than one block adds
  // in one pass, and a transposed gradient.
  const std::vector<Shape> shapes = {{1}, {7, 3}, {0}, {3, 5000}, {300001}, {64, 33}};
  std::vector<Tensor<T>> grads;
  for (const auto& s : shapes) grads.push_back(randn<T>(s, gen));
  auto make = [&](Device device) {
    optim::NamedTensors<T> params;
    for (std::size_t i = 0; i < grads.size(); ++i) {
      auto p = zeros<T>(grads[i].shape(), device).requires_grad_();
      if (i == 5) {
        p = zeros<T>({33, 64}, device).requires_grad_();
        p.set_grad(grads[i].to(device).transpose(0, 1));
      } else {
        p.set_grad(grads[i].to(device));
      }
      params.emplace_back("p" + std::to_string(i), p);
    }
    params.emplace_back("no_grad", zeros<T>({4}, device).requires_grad_());  // skipped
    return params;
  };
  const double norm_rtol = 1e-12;  // both sum squares in double, in different orders
  const auto cpu_ref = make(Device::cpu());
  const double reference = optim::grad_norm(cpu_ref);
  CHECK(optim::grad_norm(make(Device::cuda())) == doctest::Approx(reference).epsilon(norm_rtol));

  for (double ratio : {0.1, 0.999, 2.0}) {
    CAPTURE(ratio);
    const double max_norm = ratio * reference;
    auto cpu = make(Device::cpu());
    auto gpu = make(Device::cuda());
    const std::vector<Tensor<T>> before = [&] {
      std::vector<Tensor<T>> g;
      for (const auto& [name, p] : gpu) g.push_back(p.grad());
      return g;
    }();
    const double n_cpu = optim::clip_grad_norm(cpu, max_norm);
    const double n_gpu = optim::clip_grad_norm(gpu, max_norm);
    CHECK(n_gpu == doctest::Approx(n_cpu).epsilon(norm_rtol));
    for (std::size_t i = 0; i + 1 < gpu.size(); ++i) {
      const Tensor<T> g = gpu[i].second.grad();
      CHECK(g.device() == Device::cuda());
      check_close(g, cpu[i].second.grad(), optim_rtol<T>, optim_atol<T>, gpu[i].first);
      // Clipped gradients are new tensors; unclipped ones are left as they were.
      CHECK(g.storage().same_block(before[i].storage()) == (ratio > 1.0));
    }
    CHECK(!gpu.back().second.grad().defined());
    if (ratio < 1.0) CHECK(optim::grad_norm(gpu) == doctest::Approx(max_norm).epsilon(1e-5));
  }

  // Gradients on both devices: each is reduced where it lives.
  auto mixed = make(Device::cpu());
  mixed[3].second.set_grad(mixed[3].second.grad().to(Device::cuda()));
  mixed[4].second.set_grad(mixed[4].second.grad().to(Device::cuda()));
  CHECK(optim::clip_grad_norm(mixed, 0.5 * reference) == doctest::Approx(reference).epsilon(norm_rtol));
  CHECK(mixed[3].second.grad().device() == Device::cuda());
  CHECK(mixed[0].second.grad().device() == Device::cpu());
  CHECK(optim::grad_norm(mixed) == doctest::Approx(0.5 * reference).epsilon(1e-5));

  // No gradient at all: norm 0.
  CHECK(optim::grad_norm(optim::NamedTensors<T>{{"w", zeros<T>({3}, Device::cuda())}}) == 0.0);
}

TEST_CASE_TEMPLATE("cuda clip: non-finite norms leave CUDA gradients alone or throw", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  auto a = zeros<T>({2}, Device::cuda()).requires_grad_();
  auto b = zeros<T>({1000}, Device::cuda()).requires_grad_();
  a.set_grad(tensor<T>({3, 4}).to(Device::cuda()));
  const optim::NamedTensors<T> params{{"a", a}, {"layers.1.w", b}};
  std::vector<T> with_nan(1000, T(1));
  with_nan[777] = std::numeric_limits<T>::quiet_NaN();
  b.set_grad(from_vector<T>(with_nan, {1000}, Device::cuda()));
  CHECK(std::isnan(optim::clip_grad_norm(params, 1.0)));
  CHECK(values(a.grad()) == std::vector<double>{3, 4});
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm(params, 1.0, true),
                       "[clip_grad_norm] the total gradient norm is nan; first gradient with a non-finite sum of "
                       "squares: 'layers.1.w'",
                       Error);
  std::vector<T> with_inf(1000, T(1));
  with_inf[0] = -std::numeric_limits<T>::infinity();
  b.set_grad(from_vector<T>(with_inf, {1000}, Device::cuda()));
  CHECK(optim::clip_grad_norm(params, 1.0) == INFINITY);
  CHECK(values(a.grad()) == std::vector<double>{3, 4});
  if constexpr (std::is_same_v<T, double>) {
    // Finite values whose squares overflow the double sum.
    auto half = zeros<double>({1}, Device::cuda()).requires_grad_();
    auto other = zeros<double>({1}, Device::cuda()).requires_grad_();
    half.set_grad(tensor<double>({1.2e154}).to(Device::cuda()));
    other.set_grad(tensor<double>({1.2e154}).to(Device::cuda()));
    CHECK_THROWS_WITH_AS(optim::clip_grad_norm(std::vector<Tensor<double>>{half, other}, 1.0, true),
                         "[clip_grad_norm] the total gradient norm is inf; the sum of squares overflowed", Error);
    CHECK(values(half.grad()) == std::vector<double>{1.2e154});
  }
}

TEST_CASE_TEMPLATE("cuda dropout: the mask equals the CPU one bit for bit, and so does the gradient", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator data(61);
  const std::vector<Shape> shapes = {{1}, {7, 3}, {3, 1000}, {100003}, {0, 5}, {2, 3, 4, 5}};
  for (const auto& shape : shapes) {
    CAPTURE(shape);
    const auto x = randn<T>(shape, data);  // no exact zeros: out != 0 exactly where the mask keeps
    for (double p : {0.1, 0.5, 0.9}) {
      CAPTURE(p);
      Generator g_cpu(7), g_gpu(7);
      const auto y_cpu = dropout(x, p, g_cpu);
      const auto y_gpu = dropout(x.to(Device::cuda()), p, g_gpu);
      CHECK(y_gpu.device() == Device::cuda());
      CHECK(values(y_gpu.cpu()) == values(y_cpu));
      CHECK(g_gpu.state() == g_cpu.state());  // one draw each
      // Values and gradients, exactly (tolerance 0).
      check_cpu_cuda_parity<T>(
          [p](const auto& v) {
            Generator g(9);
            return dropout(v[0], p, g);
          },
          {x}, 0.0, 0.0);
    }
  }
  // A non-contiguous input: the mask follows the row-major index of the view, as on the CPU.
  const auto base = randn<T>({40, 70}, data);
  Generator g_cpu(8), g_gpu(8);
  const auto y_cpu = dropout(base.transpose(0, 1), 0.3, g_cpu);
  const auto y_gpu = dropout(base.to(Device::cuda()).transpose(0, 1), 0.3, g_gpu);
  CHECK(values(y_gpu.cpu()) == values(y_cpu));
  check_cpu_cuda_parity<T>(
      [](const auto& v) {
        Generator g(10);
        return dropout(v[0].slice(1, 1, 70, 3), 0.4, g);
      },
      {base}, 0.0, 0.0);
  // About 1 - p of a long input is kept and scaled by 1 / (1 - p).
  const auto ones_gpu = ones<T>({200000}, Device::cuda());
  Generator g(11);
  const auto kept = values(dropout(ones_gpu, 0.25, g).cpu());
  std::int64_t count = 0;
  for (double v : kept) {
    if (v != 0.0) {
      ++count;
      CHECK(v == static_cast<double>(static_cast<T>(1.0 / 0.75)));
    }
  }
  CHECK(std::abs(static_cast<double>(count) / 200000.0 - 0.75) < 0.005);
}

TEST_CASE("cuda dropout: p = 0 and evaluation return the input and draw nothing") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(71);
  const auto x = randn<float>({3, 4}, gen).to(Device::cuda());
  const auto state = gen.state();
  CHECK(dropout(x, 0.0, gen).storage().same_block(x.storage()));
  CHECK(dropout(x, 0.7, gen, false).storage().same_block(x.storage()));
  CHECK(gen.state() == state);
  CHECK_THROWS_WITH_AS(dropout(x, 1.0, gen), "[dropout] probability p must be in [0, 1), got 1", Error);
  CHECK_THROWS_WITH_AS(dropout(Tensor<float>(), 0.5, gen), "[dropout] undefined tensor argument", Error);
  // Gradients flow through to a CUDA leaf.
  auto leaf = leaf_on(x, Device::cuda());
  sum(dropout(leaf, 0.5, gen)).backward();
  REQUIRE(leaf.grad().defined());
  CHECK(leaf.grad().device() == Device::cuda());
  for (double v : values(leaf.grad().cpu())) CHECK((v == 0.0 || v == 2.0));
}

}  // namespace test_cuda_optim
