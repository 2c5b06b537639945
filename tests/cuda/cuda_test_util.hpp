// Helpers of the CUDA parity tests: the skip-without-device guard, the skip for element
// types this build has no attention kernels for, and CPU-vs-CUDA comparisons of values and
// gradients.
#pragma once

#include <doctest/doctest.h>

#include <functional>
#include <type_traits>
#include <vector>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/tensor.hpp"
#include "test_util.hpp"

/// Ends the test with a message when no CUDA device is present (ctest reports it skipped).
#define CONDENSE_REQUIRE_CUDA_DEVICE()    \
  do {                                    \
    if (!::condense::cuda::is_available()) { \
      MESSAGE("SKIPPED: no CUDA device"); \
      return;                             \
    }                                     \
  } while (0)

/// Skips the test (with a message) when this build has no CUDA attention kernels for element
/// type T: double attention needs CONDENSE_CUDA_ATTENTION_ALL (float16 without it runs on the
/// float kernels, so it needs nothing).
#if defined(CONDENSE_CUDA_ATTENTION_ALL) && CONDENSE_CUDA_ATTENTION_ALL
#define CONDENSE_REQUIRE_CUDA_ATTENTION_FOR(T) \
  do {                                         \
  } while (0)
#else
#define CONDENSE_REQUIRE_CUDA_ATTENTION_FOR(T)                                                        \
  do {                                                                                               \
    if (std::is_same_v<T, double>) {                                                                 \
      MESSAGE("SKIPPED: no double CUDA attention kernels in this build (CONDENSE_CUDA_ATTENTION_ALL)"); \
      return;                                                                                        \
    }                                                                                                \
  } while (0)
#endif

namespace condense::testing {

/// A leaf copy of `t` on `device` that requires grad.
template <DifferentiableElement T>
Tensor<T> leaf_on(const Tensor<T>& t, Device device) {
  Tensor<T> out = t.detach().to(device).clone().detach();
  out.requires_grad_();
  return out;
}

/// Runs `f` on CPU copies and on CUDA copies of `inputs`, back-propagates the same random
/// weighting of the output on both, and checks values and input gradients agree within
/// atol + rtol * |cpu|.
template <DifferentiableElement T>
void check_cpu_cuda_parity(const std::function<Tensor<T>(const std::vector<Tensor<T>>&)>& f,
                           const std::vector<Tensor<T>>& inputs, double rtol, double atol, std::uint64_t seed = 7) {
  std::vector<Tensor<T>> cpu_in, gpu_in;
  for (const auto& t : inputs) {
    cpu_in.push_back(leaf_on(t, Device::cpu()));
    gpu_in.push_back(leaf_on(t, Device::cuda()));
  }
  const Tensor<T> y_cpu = f(cpu_in);
  const Tensor<T> y_gpu = f(gpu_in);
  REQUIRE(y_gpu.device() == Device::cuda());
  CHECK_MESSAGE(allclose(y_gpu.cpu(), y_cpu, rtol, atol), "forward differs by ", max_abs_diff(y_gpu.cpu(), y_cpu));
  Generator gen(seed);
  const Tensor<T> w = randn<T>(y_cpu.shape(), gen);
  sum(y_cpu * w).backward();
  sum(y_gpu * w.to(Device::cuda())).backward();
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    REQUIRE(cpu_in[i].grad().defined());
    REQUIRE(gpu_in[i].grad().defined());
    CHECK(gpu_in[i].grad().device() == Device::cuda());
    CHECK_MESSAGE(allclose(gpu_in[i].grad().cpu(), cpu_in[i].grad(), rtol, atol), "gradient of input ", i, " differs by ",
                  max_abs_diff(gpu_in[i].grad().cpu(), cpu_in[i].grad()));
  }
}

}  // namespace condense::testing
