// CUDA parity of the ops that run 16-bit tensors directly on the GPU while the CPU runs them
// through float: matmul, bmm and linear (cuBLAS with 16-bit inputs and output, fp32
// accumulation; weight gradients summed over the batch in one GEMM, so rounded once),
// layer_norm and rms_norm, softmax and log_softmax, relu, gelu (both forms), silu,
// cross_entropy, rope (a float table), and dropout (the CPU's mask, bit for bit). Both sides
// compute in float and round once, so values and gradients agree within a few units in the
// last place of the 16-bit type (the GPU sums in another order). Skips without a CUDA device.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"
#include "half_test_util.hpp"

namespace test_cuda_half_ops {

using namespace condense;
using condense::testing::check_cpu_cuda_parity;
using condense::testing::half_epsilon;

template <HalfElement T>
using Inputs = std::vector<Tensor<T>>;

TEST_CASE_TEMPLATE("cuda parity: 16-bit matmul, bmm and linear on cuBLAS", T, bfloat16, float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(1);
  const double tol = 4 * half_epsilon<T>;
  const auto a = randn<T>({3, 17, 40}, gen), b = randn<T>({3, 40, 23}, gen);
  check_cpu_cuda_parity<T>([](const Inputs<T>& x) { return matmul(x[0], x[1]); }, {a, b}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& x) { return bmm(x[0], x[1]); }, {a, b}, tol, tol);
  // A transposed operand and a broadcast batch.
  const auto w = randn<T>({23, 40}, gen);
  check_cpu_cuda_parity<T>([](const Inputs<T>& x) { return matmul(x[0], x[1].transpose(0, 1)); }, {a, w}, tol, tol);
  const auto bias = randn<T>({23}, gen);
  check_cpu_cuda_parity<T>([](const Inputs<T>& x) { return linear(x[0], x[1], x[2]); }, {a, w, bias}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& x) { return linear(x[0], x[1]); }, {a, w}, tol, tol);
  // The gradient of an operand broadcast over some batch dims only (summed over dim 0, kept
  // over dim 1): the full product is summed in float, so it too is rounded once.
  const auto a4 = randn<T>({2, 3, 17, 40}, gen);
  check_cpu_cuda_parity<T>([](const Inputs<T>& x) { return matmul(x[0], x[1]); }, {a4, b}, tol, tol);
}

TEST_CASE_TEMPLATE("cuda parity: 16-bit layer_norm, rms_norm, softmax and log_softmax", T, bfloat16, float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(2);
  const double tol = 4 * half_epsilon<T>;
  const auto x = randn<T>({4, 9, 96}, gen), w = randn<T>({96}, gen), b = randn<T>({96}, gen);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return rms_norm(v[0], v[1]); }, {x, w}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return softmax(v[0], -1); }, {x}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return log_softmax(v[0], 1); }, {x}, tol, tol);
}

TEST_CASE_TEMPLATE("cuda parity: 16-bit relu, gelu and silu", T, bfloat16, float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(3);
  const double tol = 2 * half_epsilon<T>;
  const auto x = randn<T>({5, 130}, gen);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return relu(v[0]); }, {x}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return gelu(v[0]); }, {x}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return gelu(v[0], GeluApproximation::Tanh); }, {x}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return silu(v[0]); }, {x}, tol, tol);
  check_cpu_cuda_parity<T>([](const Inputs<T>& v) { return tanh(v[0]) + sigmoid(v[0]); }, {x}, tol, tol);
}

TEST_CASE_TEMPLATE("cuda parity: 16-bit cross_entropy", T, bfloat16, float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(4);
  const double tol = 4 * half_epsilon<T>;
  const auto logits = randn<T>({37, 301}, gen);
  const auto targets = randint<std::int64_t>({37}, 0, 301, gen);
  for (const Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    CrossEntropyOptions options;
    options.reduction = reduction;
    options.label_smoothing = reduction == Reduction::Sum ? 0.1 : 0.0;
    check_cpu_cuda_parity<T>(
        [&](const Inputs<T>& v) { return cross_entropy(v[0], targets.to(v[0].device()), options); }, {logits}, tol, tol);
  }
  // The 16-bit kernel against the float kernel on the same device: one rounding apart.
  const auto on_gpu = logits.to(Device::cuda());
  const auto gpu_targets = targets.to(Device::cuda());
  const float direct = static_cast<float>(cross_entropy(on_gpu, gpu_targets).item());
  const float wide = cross_entropy(on_gpu.template cast<float>(), gpu_targets).item();
  CHECK(std::abs(direct - wide) <= 2 * half_epsilon<T> * std::abs(wide));
}

TEST_CASE_TEMPLATE("cuda parity: 16-bit rope with a float table, shared and per-row positions", T, bfloat16, float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(5);
  const double tol = 2 * half_epsilon<T>;
  // A transposed view ([B, T, H, D] -> [B, H, T, D]), as the attention modules pass it.
  const auto x = randn<T>({2, 7, 3, 16}, gen);
  const auto shared = from_vector<std::int64_t>({0, 1, 2, 3, 4, 5, 6}, {7});
  const auto per_row = from_vector<std::int64_t>({3, 4, 5, 6, 7, 8, 9, 0, 0, 1, 2, 3, 4, 5}, {2, 7});
  for (const auto& positions : {shared, per_row}) {
    check_cpu_cuda_parity<T>(
        [&](const Inputs<T>& v) { return rope(v[0].transpose(1, 2), positions.to(v[0].device())); }, {x}, tol, tol);
  }
}

TEST_CASE_TEMPLATE("cuda parity: 16-bit dropout draws the CPU mask and scales in float, bit for bit", T, bfloat16,
                   float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator data(5);
  const auto x = randn<T>({3, 1001}, data);
  for (double p : {0.1, 0.5}) {
    CAPTURE(p);
    Generator g_cpu(12), g_gpu(12);
    const auto y_cpu = dropout(x, p, g_cpu);
    const auto y_gpu = dropout(x.to(Device::cuda()), p, g_gpu);
    REQUIRE(y_gpu.device() == Device::cuda());
    // Bit equality also checks that the scale stays in float: a bfloat16 scale (1.109375 for
    // p = 0.1) would change most products of the random values.
    CHECK(condense::testing::bits(y_gpu.cpu()) == condense::testing::bits(y_cpu));
    CHECK(g_gpu.state() == g_cpu.state());  // one key drawn on each side
    // Gradients too, and a strided input, exactly (tolerance 0).
    check_cpu_cuda_parity<T>(
        [p](const Inputs<T>& v) {
          Generator g(13);
          return dropout(v[0].transpose(0, 1), p, g);
        },
        {x}, 0.0, 0.0);
  }
}

}  // namespace test_cuda_half_ops
