// CUDA parity of layer_norm, rms_norm and rope: values and every gradient (x, weight,
// bias) against the CPU path over row lengths that take each kernel shape (one warp, four
// warps and eight warps per row, partial column slabs), row counts from 0 to several row
// chunks of the weight/bias reduction, non-contiguous inputs, bitwise reproducible weight
// gradients, rope with shared and per-row positions and tables on either device, and the
// mixed-device errors. Every test skips with a message when no CUDA device is present.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"

namespace test_cuda_norms {

using namespace condense;
using condense::testing::allclose;
using condense::testing::check_cpu_cuda_parity;
using condense::testing::max_abs_diff;
using condense::testing::values;

namespace {

template <FloatingElement T>
using Fn = std::function<Tensor<T>(const std::vector<Tensor<T>>&)>;

/// Tolerances per element type. Float sums over thousands of rows (the weight/bias
/// gradients) are accumulated in a different order on each side, so their absolute error
/// grows with the row count; a wrong formula is off by O(1).
template <FloatingElement T>
double norm_rtol() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-10;
}
template <FloatingElement T>
double norm_atol(std::int64_t rows) {
  if constexpr (std::is_same_v<T, float>) return rows > 100 ? 2e-3 : 1e-4;
  return rows > 100 ? 1e-9 : 1e-11;
}

/// Row lengths: 1, odd, one warp per row (<= 1024), four warps (<= 4096), eight warps
/// (> 4096, with a partial slab of 32 columns). Row counts: none, one, fewer than a chunk of
/// the weight/bias reduction (norm_param_min_chunk_rows), and 301, which every row length
/// splits into 4 chunks of 76 rows with a shorter last one.
const std::vector<std::int64_t> norm_cols = {1, 3, 64, 768, 1500, 4100};
const std::vector<std::int64_t> norm_rows = {0, 1, 5, 301};

/// Inputs of a norm test: x [rows, D] with a non-zero mean, weight and bias [D].
template <FloatingElement T>
std::vector<Tensor<T>> norm_inputs(std::int64_t rows, std::int64_t cols, Generator& gen) {
  return {randn<T>({rows, cols}, gen, 0.5, 2.0), randn<T>({cols}, gen, 1.0, 0.5), randn<T>({cols}, gen)};
}

}  // namespace

TEST_CASE_TEMPLATE("cuda parity: layer_norm with and without weight and bias", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(11);
  for (const std::int64_t cols : norm_cols) {
    for (const std::int64_t rows : norm_rows) {
      CAPTURE(rows);
      CAPTURE(cols);
      const auto in = norm_inputs<T>(rows, cols, gen);
      const double rtol = norm_rtol<T>(), atol = norm_atol<T>(rows);
      check_cpu_cuda_parity<T>([](const auto& v) { return layer_norm(v[0]); }, {in[0]}, rtol, atol);
      check_cpu_cuda_parity<T>([](const auto& v) { return layer_norm(v[0], v[1]); }, {in[0], in[1]}, rtol, atol);
      check_cpu_cuda_parity<T>([](const auto& v) { return layer_norm(v[0], Tensor<T>(), v[1]); }, {in[0], in[2]}, rtol,
                               atol);
      check_cpu_cuda_parity<T>([](const auto& v) { return layer_norm(v[0], v[1], v[2], 1e-3); }, in, rtol, atol);
    }
  }
}

TEST_CASE_TEMPLATE("cuda parity: rms_norm with and without weight", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(12);
  for (const std::int64_t cols : norm_cols) {
    for (const std::int64_t rows : norm_rows) {
      CAPTURE(rows);
      CAPTURE(cols);
      const auto in = norm_inputs<T>(rows, cols, gen);
      const double rtol = norm_rtol<T>(), atol = norm_atol<T>(rows);
      check_cpu_cuda_parity<T>([](const auto& v) { return rms_norm(v[0]); }, {in[0]}, rtol, atol);
      check_cpu_cuda_parity<T>([](const auto& v) { return rms_norm(v[0], v[1]); }, {in[0], in[1]}, rtol, atol);
      check_cpu_cuda_parity<T>([](const auto& v) { return rms_norm(v[0], v[1], 1e-2); }, {in[0], in[1]}, rtol, atol);
    }
  }
}

TEST_CASE_TEMPLATE("cuda parity: norms of non-contiguous and higher-rank inputs", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(13);
  const double rtol = norm_rtol<T>(), atol = norm_atol<T>(1000);
  // x [rows, D] as the transpose of [D, rows]; the weight a strided slice; the output
  // gradient of a transposed use is strided too.
  const auto xt = randn<T>({200, 37}, gen, -1.0, 3.0);
  const auto wide = randn<T>({400}, gen);
  const auto bias = randn<T>({200}, gen);
  const Fn<T> strided_ln = [](const auto& v) {
    return layer_norm(v[0].transpose(0, 1), v[1].slice(0, 0, 400, 2), v[2]).transpose(0, 1);
  };
  check_cpu_cuda_parity<T>(strided_ln, {xt, wide, bias}, rtol, atol);
  const Fn<T> strided_rms = [](const auto& v) { return rms_norm(v[0].transpose(0, 1), v[1].slice(0, 1, 400, 2)); };
  check_cpu_cuda_parity<T>(strided_rms, {xt, wide}, rtol, atol);
  // [B, T, D] rows, and a [B, H, T, D] view transposed from [B, T, H, D].
  const auto x3 = randn<T>({3, 17, 96}, gen);
  const auto w3 = randn<T>({96}, gen);
  check_cpu_cuda_parity<T>([](const auto& v) { return layer_norm(v[0], v[1], v[1]); }, {x3, w3}, rtol, atol);
  const auto x4 = randn<T>({2, 9, 4, 64}, gen);
  check_cpu_cuda_parity<T>([](const auto& v) { return rms_norm(v[0].transpose(1, 2), v[1]); },
                           {x4, randn<T>({64}, gen)}, rtol, atol);
  // Only the weight requires grad (no dx is computed): dweight still matches.
  const auto x = randn<T>({300, 130}, gen).to(Device::cuda());
  auto w_gpu = randn<T>({130}, gen).to(Device::cuda()).detach();
  w_gpu.requires_grad_();
  auto w_cpu = w_gpu.cpu().detach();
  w_cpu.requires_grad_();
  sum(layer_norm(x, w_gpu) * x).backward();
  sum(layer_norm(x.cpu(), w_cpu) * x.cpu()).backward();
  CHECK_MESSAGE(allclose(w_gpu.grad().cpu(), w_cpu.grad(), rtol, atol), "dweight differs by ",
                max_abs_diff(w_gpu.grad().cpu(), w_cpu.grad()));
}

TEST_CASE_TEMPLATE("cuda: norm weight and bias gradients are bitwise reproducible", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(14);
  const auto x = randn<T>({5000, 1000}, gen).to(Device::cuda());
  const auto g = randn<T>({5000, 1000}, gen).to(Device::cuda());
  const auto w0 = randn<T>({1000}, gen).to(Device::cuda());
  const auto b0 = randn<T>({1000}, gen).to(Device::cuda());
  std::vector<std::vector<double>> runs;
  for (int run = 0; run < 3; ++run) {
    auto w = w0.clone().detach().requires_grad_();
    auto b = b0.clone().detach().requires_grad_();
    sum(layer_norm(x, w, b) * g).backward();
    std::vector<double> got = values(w.grad().cpu());
    const std::vector<double> db = values(b.grad().cpu());
    got.insert(got.end(), db.begin(), db.end());
    runs.push_back(got);
  }
  CHECK(runs[0] == runs[1]);
  CHECK(runs[0] == runs[2]);
}

TEST_CASE("cuda: norms with arguments on different devices throw naming both") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const auto x_gpu = ones<float>({4, 8}, Device::cuda());
  const auto w_cpu = ones<float>({8});
  const auto w_gpu = ones<float>({8}, Device::cuda());
  CHECK_THROWS_WITH_AS(layer_norm(x_gpu, w_cpu), doctest::Contains("different devices"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x_gpu, w_cpu), doctest::Contains("float32 (8) cpu"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x_gpu, w_cpu), doctest::Contains("float32 (4x8) cuda:0"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x_gpu, w_gpu, w_cpu), doctest::Contains("bias"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x_gpu.cpu(), w_gpu), doctest::Contains("different devices"), Error);
  CHECK_THROWS_WITH_AS(rms_norm(x_gpu, w_cpu), doctest::Contains("different devices"), Error);
  CHECK_THROWS_WITH_AS(rms_norm(x_gpu.cpu(), w_gpu), doctest::Contains("different devices"), Error);
  // Shape errors are the CPU ones.
  CHECK_THROWS_WITH_AS(rms_norm(x_gpu, ones<float>({7}, Device::cuda())), doctest::Contains("does not match"), Error);
  const auto empty_rows = zeros<float>({3, 0}, Device::cuda());
  CHECK_THROWS_WITH_AS(layer_norm(empty_rows), doctest::Contains("empty last dimension"), Error);
}

TEST_CASE_TEMPLATE("cuda parity: rope with shared and per-row positions", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(15);
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  for (const std::int64_t head_dim : {2, 64, 128}) {
    CAPTURE(head_dim);
    const std::int64_t B = 2, H = 3, L = 7;
    const auto shared = randint<std::int64_t>({L}, 0, 4096, gen);
    const auto per_row = randint<std::int64_t>({B, L}, 0, 4096, gen);
    const auto x = randn<T>({B, H, L, head_dim}, gen);
    // Positions on the CPU: the table is built there and copied to x's device.
    check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0], shared); }, {x}, tol, tol);
    check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0], per_row, 500.0); }, {x}, tol, tol);
    // A table built from positions on the device gives the same bits as the CPU table.
    const auto table_gpu = rope_table<T>(per_row.to(Device::cuda()), head_dim);
    const auto table_cpu = rope_table<T>(per_row, head_dim);
    CHECK(table_gpu.cos.device() == Device::cuda());
    CHECK(values(table_gpu.cos.cpu()) == values(table_cpu.cos));
    CHECK(values(table_gpu.sin.cpu()) == values(table_cpu.sin));
    const auto x_gpu = x.to(Device::cuda());
    CHECK(max_abs_diff(rope(x_gpu, table_gpu).cpu(), rope(x, table_cpu)) <= tol);
    // The rotation by the negated positions undoes it.
    const auto back = rope(rope(x_gpu, shared.to(Device::cuda())), neg(shared).to(Device::cuda()));
    CHECK(max_abs_diff(back.cpu(), x) <= 10 * tol);
  }
}

TEST_CASE_TEMPLATE("cuda parity: rope of strided, broadcast and empty inputs", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(16);
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  const auto pos = randint<std::int64_t>({5}, 0, 100, gen);
  const auto pos_rows = randint<std::int64_t>({3, 5}, 0, 100, gen);
  // [B, T, H, D] -> [B, H, T, D], as attention feeds it.
  check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0].transpose(1, 2), pos_rows); },
                           {randn<T>({3, 5, 4, 64}, gen)}, tol, tol);
  // Head-dim stride 2.
  check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0].slice(3, 1, 128, 2), pos); },
                           {randn<T>({2, 3, 5, 128}, gen)}, tol, tol);
  // A stride-0 (expanded) batch dim, and a batch of 1 with per-row positions.
  check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0].expand({3, 2, 5, 8}), pos_rows); },
                           {randn<T>({1, 2, 5, 8}, gen)}, tol, tol);
  check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0], pos_rows.slice(0, 1, 2)); },
                           {randn<T>({1, 2, 5, 8}, gen)}, tol, tol);
  // Empty: no positions, and an empty batch.
  const auto none = zeros<std::int64_t>({0});
  check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0], none); }, {randn<T>({2, 3, 0, 4}, gen)}, tol, tol);
  check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0], pos); }, {randn<T>({0, 3, 5, 4}, gen)}, tol, tol);
}

TEST_CASE("cuda: rope tables across devices") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(17);
  const auto x = randn<float>({2, 2, 4, 16}, gen);
  const auto pos = randint<std::int64_t>({4}, 0, 50, gen);
  const auto expected = rope(x, pos);
  // A CUDA table with a CPU x, and a CPU table with a CUDA x: the table is copied to x's device.
  const auto table_gpu = rope_table<float>(pos.to(Device::cuda()), 16);
  CHECK(max_abs_diff(rope(x, table_gpu), expected) == 0.0);
  const auto y = rope(x.to(Device::cuda()), rope_table<float>(pos, 16));
  CHECK(y.device() == Device::cuda());
  CHECK(max_abs_diff(y.cpu(), expected) <= 2e-6);
  // cos and sin on different devices, or of the wrong shape, throw.
  auto split = rope_table<float>(pos, 16);
  split.sin = split.sin.to(Device::cuda());
  CHECK_THROWS_WITH_AS(rope(x.to(Device::cuda()), split), doctest::Contains("different devices"), Error);
  CHECK_THROWS_WITH_AS(rope(x, split), doctest::Contains("cuda:0"), Error);
  auto short_table = rope_table<float>(pos, 16);
  short_table.sin = short_table.sin.slice(2, 0, 4);
  CHECK_THROWS_WITH_AS(rope(x.to(Device::cuda()), short_table), doctest::Contains("must both be"), Error);
  CHECK_THROWS_WITH_AS(rope(x.to(Device::cuda()), rope_table<float>(pos, 8)), doctest::Contains("head dim"), Error);
}

}  // namespace test_cuda_norms
