// The multi-tensor optimizer kernels (kernels/detail/optim_kernels.cuh) run on the CPU
// through tests/emulation/cuda_emulation.hpp, packed into launches by the same plans as
// cuda::adamw_step_list, adamw_master_step_list, sgd_step_list, sum_of_squares_list and
// scale_list: 140 tensors of sizes 0 to 60000 (more than the 64 of one launch), every
// element of every tensor updated once with the update's own formula; the 16-bit master
// update; and sums of squares over a tensor of 2100 chunks, which continues across
// launches of 2048 blocks, exact on whole numbers.
#define CONDENSE_CUDA_EMULATION 1
#include "emulation/cuda_emulation.hpp"
// The emulation header must come first: the kernels see its threadIdx, __syncthreads, ...
#include "detail/optim_kernels.cuh"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace test_optim_kernels_emulated {

using namespace condense;
namespace od = condense::cuda::optim_detail;
namespace emu = condense_cuda_emulation;

namespace {

/// Sizes of 140 tensors: empty, tiny, around one chunk (16384), several chunks.
std::vector<std::int64_t> tensor_sizes() {
  std::vector<std::int64_t> sizes;
  for (int i = 0; i < 140; ++i) sizes.push_back((i * 7919) % 5 == 0 ? 0 : (i * 104729) % 60000);
  sizes[3] = 16384;
  sizes[4] = 16385;
  sizes[5] = 1;
  return sizes;
}

std::vector<float> random_values(std::int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

cuda::AdamWStepArgs adamw_args(int i) {
  cuda::AdamWStepArgs a;
  a.decay = i % 3 == 0 ? 1.0 : 1.0 - 1e-3 * 0.1;
  a.step_size = 1e-3 / (1 - std::pow(0.9, 3));
  a.bias2_sqrt = std::sqrt(1 - std::pow(0.999, 3));
  a.one_minus_beta1 = 0.1;
  a.beta2 = 0.999;
  a.one_minus_beta2 = 0.001;
  a.eps = 1e-8;
  return a;
}

/// The AdamW formula of cuda::AdamWStepArgs for one element, in float.
void adamw_reference(float& p, float g, float& m, float& v, const cuda::AdamWStepArgs& a) {
  if (static_cast<float>(a.decay) != 1.f) p *= static_cast<float>(a.decay);
  m += static_cast<float>(a.one_minus_beta1) * (g - m);
  v = static_cast<float>(a.beta2) * v + static_cast<float>(a.one_minus_beta2) * (g * g);
  p -= static_cast<float>(a.step_size) * (m / (std::sqrt(v) / static_cast<float>(a.bias2_sqrt) + static_cast<float>(a.eps)));
}

}  // namespace

TEST_CASE("emulated optimizer kernels: multi-tensor AdamW updates every element of 140 tensors once") {
  std::mt19937 rng(17);
  const auto sizes = tensor_sizes();
  std::vector<std::vector<float>> param, grad, m, v;
  for (const auto n : sizes) {
    param.push_back(random_values(n, rng));
    grad.push_back(random_values(n, rng));
    m.push_back(random_values(n, rng));
    auto second = random_values(n, rng);
    for (auto& x : second) x = x * x;
    v.push_back(second);
  }
  auto expected_p = param, expected_m = m, expected_v = v;
  std::vector<cuda::AdamWListEntry> entries(sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    entries[i] = {param[i].data(), grad[i].data(), m[i].data(), v[i].data(), nullptr, sizes[i], adamw_args(static_cast<int>(i))};
    for (std::size_t j = 0; j < param[i].size(); ++j)
      adamw_reference(expected_p[i][j], grad[i][j], expected_m[i][j], expected_v[i][j], entries[i].args);
  }
  int launches = 0;
  od::for_each_adamw_launch<float>(entries.data(), entries.size(), [&](const od::AdamWLaunch<float>& batch, int blocks) {
    ++launches;
    emu::launch(dim3(static_cast<unsigned>(blocks)), dim3(od::list_threads), 0,
                od::adamw_list_kernel<float, false>, batch);
  });
  std::size_t nonempty = 0;
  for (const auto n : sizes) nonempty += n > 0 ? 1 : 0;
  CHECK(nonempty > 64);
  CHECK(launches == static_cast<int>((nonempty + 63) / 64));  // at most 64 tensors per launch
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    CAPTURE(i);
    bool same = true;
    for (std::size_t j = 0; j < param[i].size(); ++j)
      same = same && std::abs(param[i][j] - expected_p[i][j]) <= 1e-6f * (1 + std::abs(expected_p[i][j])) &&
             std::abs(m[i][j] - expected_m[i][j]) <= 1e-6f * (1 + std::abs(expected_m[i][j])) &&
             std::abs(v[i][j] - expected_v[i][j]) <= 1e-6f * (1 + std::abs(expected_v[i][j]));
    CHECK(same);
  }
}

TEST_CASE("emulated optimizer kernels: the 16-bit AdamW through float masters and SGD with momentum") {
  std::mt19937 rng(19);
  const std::vector<std::int64_t> sizes = {5000, 0, 40000, 17};
  std::vector<std::vector<float>> master, m, v, expected_master, expected_m, expected_v;
  std::vector<std::vector<bfloat16>> param, grad;
  std::vector<cuda::AdamWListEntry> entries;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    master.push_back(random_values(sizes[i], rng));
    m.push_back(random_values(sizes[i], rng));
    v.push_back(std::vector<float>(static_cast<std::size_t>(sizes[i]), 0.25f));
    std::vector<bfloat16> p16, g16;
    for (const float x : master.back()) p16.push_back(bfloat16(x));
    for (const float x : random_values(sizes[i], rng)) g16.push_back(bfloat16(x));
    param.push_back(p16);
    grad.push_back(g16);
  }
  expected_master = master, expected_m = m, expected_v = v;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    entries.push_back({param[i].data(), grad[i].data(), m[i].data(), v[i].data(), master[i].data(), sizes[i], adamw_args(1)});
    for (std::size_t j = 0; j < master[i].size(); ++j)
      adamw_reference(expected_master[i][j], static_cast<float>(grad[i][j]), expected_m[i][j], expected_v[i][j], entries[i].args);
  }
  od::for_each_adamw_launch<bfloat16>(entries.data(), entries.size(), [&](const od::AdamWLaunch<float>& batch, int blocks) {
    emu::launch(dim3(static_cast<unsigned>(blocks)), dim3(od::list_threads), 0,
                od::adamw_list_kernel<bfloat16, true>, batch);
  });
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    for (std::size_t j = 0; j < master[i].size(); ++j) {
      REQUIRE(std::abs(master[i][j] - expected_master[i][j]) <= 1e-6f * (1 + std::abs(expected_master[i][j])));
      REQUIRE(param[i][j].bits == bfloat16(master[i][j]).bits);  // the parameter is the rounded master
    }
  }

  // SGD with momentum (not the first step) and Nesterov on one tensor, plain on another.
  std::vector<float> p1 = random_values(30000, rng), g1 = random_values(30000, rng), b1 = random_values(30000, rng);
  std::vector<float> p2 = random_values(100, rng), g2 = random_values(100, rng);
  auto e1 = p1, e2 = p2, eb = b1;
  cuda::SGDStepArgs with_momentum{0.1, 0.01, 0.9, 1.0, true, true, false, true}, plain{0.1, 0, 0, 1, false, false, false, false};
  for (std::size_t j = 0; j < e1.size(); ++j) {
    const float g = g1[j] + 0.01f * e1[j];
    eb[j] = 0.9f * eb[j] + 1.0f * g;
    e1[j] -= 0.1f * (g + 0.9f * eb[j]);
  }
  for (std::size_t j = 0; j < e2.size(); ++j) e2[j] -= 0.1f * g2[j];
  const std::vector<cuda::SGDListEntry> sgd = {{p1.data(), g1.data(), b1.data(), 30000, with_momentum},
                                               {p2.data(), g2.data(), nullptr, 100, plain}};
  od::for_each_sgd_launch<float>(sgd.data(), sgd.size(), [&](const od::SGDLaunch<float>& batch, int blocks) {
    emu::launch(dim3(static_cast<unsigned>(blocks)), dim3(od::list_threads), 0, od::sgd_list_kernel<float>,
                batch);
  });
  for (std::size_t j = 0; j < e1.size(); ++j) {
    REQUIRE(p1[j] == doctest::Approx(e1[j]).epsilon(1e-6));
    REQUIRE(b1[j] == doctest::Approx(eb[j]).epsilon(1e-6));
  }
  for (std::size_t j = 0; j < e2.size(); ++j) REQUIRE(p2[j] == doctest::Approx(e2[j]).epsilon(1e-6));
}

TEST_CASE("emulated optimizer kernels: sums of squares continue across launches, and scaling covers every element") {
  // 2100 chunks in one tensor (more than one launch of 2048 blocks; not the launch's first
  // tensor, so its description moves to the next launch's first slot), small whole numbers
  // so that every partial and total is exact in double.
  std::vector<std::int64_t> sizes = {3, 2100 * od::list_chunk - 5, 0, 70000};
  std::vector<std::vector<bfloat16>> xs;
  std::vector<double> expected;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::vector<bfloat16> x(static_cast<std::size_t>(sizes[i]));
    double sum = 0;
    for (std::size_t j = 0; j < x.size(); ++j) {
      const float value = static_cast<float>(static_cast<int>((j * 31 + i) % 7) - 3);
      x[j] = bfloat16(value);
      sum += double(value) * value;
    }
    xs.push_back(std::move(x));
    expected.push_back(sum);
  }
  std::vector<const void*> pointers;
  for (const auto& x : xs) pointers.push_back(x.data());
  std::vector<std::int64_t> first;
  const std::int64_t partials = od::partial_layout(sizes.data(), sizes.size(), first);
  std::vector<double> partial(static_cast<std::size_t>(partials)), out(sizes.size(), -1.0);
  int launches = 0;
  od::for_each_squares_launch(pointers.data(), sizes.data(), sizes.size(), first, [&](const od::SquaresLaunch& batch, int blocks) {
    ++launches;
    emu::launch(dim3(static_cast<unsigned>(blocks)), dim3(od::list_threads), 0,
                od::sum_of_squares_chunks<bfloat16>, batch, partial.data());
  });
  CHECK(launches == 2);
  od::for_each_partial_sums_launch(sizes.data(), sizes.size(), first, [&](const od::PartialRanges& ranges, std::size_t tensors,
                                                                          std::size_t begin) {
    emu::launch(dim3(static_cast<unsigned>(tensors)), dim3(od::list_threads), 0,
                od::sum_tensor_partials, static_cast<const double*>(partial.data()), ranges, out.data() + begin);
  });
  CHECK(out == expected);

  // dst = src * coef over the same tensors (in place for the big one, tensor 1).
  std::vector<std::vector<bfloat16>> scaled(xs.size());
  std::vector<void*> dsts;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    scaled[i].assign(xs[i].size(), bfloat16(7.f));
    dsts.push_back(i == 1 ? static_cast<void*>(xs[1].data()) : static_cast<void*>(scaled[i].data()));
  }
  const std::vector<bfloat16> original_big = xs[1];
  od::for_each_scale_launch(dsts.data(), pointers.data(), sizes.data(), sizes.size(), [&](const od::ScaleLaunch& batch, int blocks) {
    emu::launch(dim3(static_cast<unsigned>(blocks)), dim3(od::list_threads), 0, od::scale_chunks<bfloat16>,
                batch, 0.5f);
  });
  bool all = true;
  for (std::size_t j = 0; j < original_big.size(); ++j) all = all && xs[1][j].bits == bfloat16(static_cast<float>(original_big[j]) * 0.5f).bits;
  for (std::size_t i = 0; i < xs.size(); ++i)
    if (i != 1)
      for (std::size_t j = 0; j < xs[i].size(); ++j) all = all && scaled[i][j].bits == bfloat16(static_cast<float>(xs[i][j]) * 0.5f).bits;
  CHECK(all);
}

}  // namespace test_optim_kernels_emulated
