// Host-side pieces of the CUDA optimizer, clipping and dropout path that run without a GPU:
// the dropout bit generator shared by the CPU loop and the CUDA kernel (it defines the CPU
// mask, and its threshold means "keep when the 53-bit uniform is >= p"), optimizer state
// saved to and loaded from CPU tensors of any layout, and, in a CPU-only build, the
// launchers' errors naming the op.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "condense/backend/cuda/optim_kernels.hpp"
#include "condense/core/factories.hpp"
#include "condense/ops/dropout.hpp"
#include "condense/optim/adamw.hpp"
#include "condense/optim/sgd.hpp"
#include "test_util.hpp"

namespace test_cuda_optim_host {

using namespace condense;
using condense::testing::values;

TEST_CASE("dropout_keep is the CPU dropout mask of the drawn key") {
  Generator data(1);
  const auto x = uniform<double>({33, 65}, 1.0, 2.0, data);  // no zeros: y != 0 exactly where kept
  for (double p : {0.0625, 0.3, 0.75}) {
    Generator gen(5);
    Generator copy = gen;
    const std::uint64_t key = copy.next_u64();  // the one draw dropout makes
    const auto y = values(dropout(x, p, gen));
    CHECK(gen.state() == copy.state());
    const std::uint64_t threshold = detail::dropout_threshold(p);
    std::int64_t mismatches = 0;
    for (std::size_t i = 0; i < y.size(); ++i)
      mismatches += (y[i] != 0.0) != detail::dropout_keep(key, static_cast<std::uint64_t>(i), threshold);
    CHECK(mismatches == 0);
  }
}

TEST_CASE("dropout_keep keeps exactly the uniforms at or above p") {
  // The integer comparison agrees with u * 2^-53 >= p on random keys and at the boundary.
  for (double p : {0.0, 1e-9, 0.1, 0.5, 0.999999}) {
    const std::uint64_t threshold = detail::dropout_threshold(p);
    for (std::uint64_t i = 0; i < 4096; ++i) {
      const std::uint64_t u = detail::dropout_bits(0x1234abcdULL, i) >> 11;
      CHECK(detail::dropout_keep(0x1234abcdULL, i, threshold) == (std::ldexp(static_cast<double>(u), -53) >= p));
    }
    if (threshold > 0) CHECK(std::ldexp(static_cast<double>(threshold - 1), -53) < p);
    CHECK(std::ldexp(static_cast<double>(threshold), -53) >= p);
  }
  // Splitmix64's published first output for seed 0 (key 0, element 0).
  CHECK(detail::dropout_bits(0, 0) == 0xe220a8397b1dcdafULL);
}

TEST_CASE("optimizer state loads from strided CPU tensors and saves contiguous copies") {
  Generator gen(2);
  auto w = randn<float>({3, 4}, gen).requires_grad_();
  optim::SGD<float> sgd({{"w", w}}, {.lr = 0.1, .momentum = 0.9});
  // A transposed (non-contiguous) buffer of the right shape is read in row-major order.
  const auto buffer_t = randn<float>({4, 3}, gen);
  sgd.load_state({{"w.momentum_buffer", buffer_t.transpose(0, 1)}, {"w.step", full<float>({1}, 1.0f)}}, 1);
  const auto state = sgd.state();
  REQUIRE(state.size() == 2);
  CHECK(state[0].second.is_contiguous());
  CHECK(values(state[0].second) == values(buffer_t.transpose(0, 1).contiguous()));
  CHECK(state[1].second.item() == 1.0f);
  // The saved copy shares nothing with the optimizer.
  state[0].second.data()[0] = 1e6f;
  CHECK(sgd.state()[0].second.data()[0] != 1e6f);
}

#if !CONDENSE_WITH_CUDA
TEST_CASE("optimizer and dropout launchers name the op in a CPU-only build") {
  float p = 0, g = 0, m = 0, v = 0;
  double out = 0;
  const cuda::AdamWListEntry entry{&p, &g, &m, &v, nullptr, 1, {}};
  CHECK_THROWS_WITH_AS(cuda::adamw_step_list(DType::Float32, 0, &entry, 1, "AdamW"),
                       doctest::Contains("[AdamW] CUDA device requested but condense was built without CUDA"), Error);
  CHECK_THROWS_WITH_AS(cuda::adamw_master_step_list(DType::BFloat16, 0, &entry, 1, "AdamW"),
                       doctest::Contains("[AdamW] CUDA device"), Error);
  const cuda::SGDListEntry sgd_entry{&p, &g, &m, 1, {}};
  CHECK_THROWS_WITH_AS(cuda::sgd_step_list(DType::Float32, 0, &sgd_entry, 1, "SGD"), doctest::Contains("[SGD] CUDA device"),
                       Error);
  const void* grads[] = {&g};
  void* scaled[] = {&p};
  const std::int64_t counts[] = {1};
  CHECK_THROWS_WITH_AS(cuda::sum_of_squares_list(DType::Float32, 0, grads, counts, 1, &out, "clip_grad_norm"),
                       doctest::Contains("[clip_grad_norm] CUDA device"), Error);
  CHECK_THROWS_WITH_AS(cuda::scale_list(DType::Float32, 0, scaled, grads, counts, 1, 0.5, "clip_grad_norm"),
                       doctest::Contains("[clip_grad_norm] CUDA device"), Error);
  CHECK_THROWS_WITH_AS(cuda::dropout_forward({}, nullptr, {}, 0, 0, 1.0, "dropout"), doctest::Contains("[dropout] CUDA device"),
                       Error);
  CHECK_THROWS_WITH_AS(cuda::dropout_backward({}, nullptr, {}, 1.0, "dropout"), doctest::Contains("[dropout] CUDA device"),
                       Error);
}
#endif

}  // namespace test_cuda_optim_host
