// CUDA storage and copies (built with the CUDA backend): allocation, host <-> device
// round trips for contiguous and strided views, uploads that do not make the host wait,
// zeros, and errors. Each test skips with a message when no CUDA device is present.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/factories.hpp"
#include "condense/ops/norms.hpp"
#include "cuda/cuda_test_util.hpp"
#include "emulation/device_counters.hpp"

namespace test_cuda_storage {

using namespace condense;
using condense::testing::values;

TEST_CASE("cuda: the backend is compiled in") {
  CHECK(cuda::built_with_cuda);
  CHECK(cuda::device_count() >= 0);
}

TEST_CASE("cuda: host -> device -> host round trip") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  auto h = arange<float>(24).reshape({2, 3, 4});
  auto d = h.to(Device::cuda());
  CHECK(d.device() == Device::cuda(0));
  CHECK(values(d.cpu()) == values(h));
  // strided device views come back in logical order
  auto dt = d.transpose(0, 2).slice(1, 0, 3, 2);
  CHECK(values(dt.cpu()) == values(h.transpose(0, 2).slice(1, 0, 3, 2)));
  CHECK(values(dt.contiguous().cpu()) == values(h.transpose(0, 2).slice(1, 0, 3, 2)));
  CHECK(values(zeros<double>({5}, Device::cuda())) == std::vector<double>(5, 0.0));
  CHECK(values(full<std::int64_t>({3}, 9, Device::cuda())) == std::vector<double>{9, 9, 9});
  CHECK(values(h.to(Device::cuda()).clone().cpu()) == values(h));
}

TEST_CASE("cuda: an upload does not make the host wait, and its source may be reused at once") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  using condense_cuda_emulation::DeviceCounts;
  // Queued device work ahead of each upload; every host tensor is overwritten and freed right
  // after its upload returns, so a copy that read its source late would land the wrong values.
  auto busy = ones<float>({1 << 20}, Device::cuda());
  std::vector<Tensor<float>> uploaded;
  const DeviceCounts before = DeviceCounts::now();
  for (int i = 0; i < 8; ++i) {
    busy = busy * 1.5f + 1.0f;
    auto host = full<float>({4099}, static_cast<float>(i));
    uploaded.push_back(host.to(Device::cuda()));
    std::fill(host.data(), host.data() + host.numel(), -1.0f);
  }
  const DeviceCounts during = DeviceCounts::now() - before;
  CHECK(during.host_waits == 0);
  for (int i = 0; i < 8; ++i) CHECK(values(uploaded[static_cast<std::size_t>(i)].cpu()) == std::vector<double>(4099, i));
  CHECK(values(busy.narrow(0, 0, 1).cpu()) == std::vector<double>{std::pow(1.5, 8) * 3 - 2});
}

TEST_CASE("cuda: gradients flow back across devices") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  auto x = tensor<double>({1, 2, 3}).requires_grad_();
  auto y = x.to(Device::cuda()).cpu();
  sum(y * y).backward();
  CHECK(values(x.grad()) == std::vector<double>{2, 4, 6});
}

TEST_CASE("cuda: a bad device index and mixed devices throw") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  CHECK_THROWS_WITH_AS(zeros<float>({2}, Device::cuda(cuda::device_count())), doctest::Contains("requested but"), Error);
  auto d = ones<float>({2, 3}, Device::cuda());
  CHECK_THROWS_WITH_AS(d + ones<float>({2, 3}), doctest::Contains("different devices"), Error);
  CHECK_THROWS_WITH_AS(cuda::multiprocessor_count(cuda::device_count()), doctest::Contains("requested but"), Error);
  CHECK_THROWS_WITH_AS(cuda::multiprocessor_count(-1), doctest::Contains("requested but"), Error);
  CHECK_THROWS_WITH_AS(cuda::max_shared_memory_per_block(cuda::device_count()), doctest::Contains("requested but"), Error);
  CHECK_THROWS_WITH_AS(cuda::max_shared_memory_per_block(-1), doctest::Contains("requested but"), Error);
}

TEST_CASE("cuda: the multiprocessor count is read once per device and stays the same") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const int count = cuda::multiprocessor_count(0);
  CHECK(count > 0);
  CHECK(cuda::multiprocessor_count(0) == count);
}

TEST_CASE("cuda: the shared memory a block may have is read once per device and stays the same") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // sm_80 and later allow at least 99 KiB per block once a kernel asks for it.
  const std::size_t bytes = cuda::max_shared_memory_per_block(0);
  CHECK(bytes >= 99 * 1024);
  CHECK(cuda::max_shared_memory_per_block(0) == bytes);
}

}  // namespace test_cuda_storage
