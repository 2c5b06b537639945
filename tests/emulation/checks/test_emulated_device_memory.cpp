// Checks of the emulated CUDA backend itself (linked into condense_cuda_emulated_tests only):
// the emulated runtime holds copies, memsets and launches to the bytes a live tensor owns,
// so that an overrun inside a block the caching allocator rounded up, or a use of a freed
// (cached) block, fails as it could on a GPU instead of passing silently.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/factories.hpp"

namespace test_emulated_device_memory {

using namespace condense;

TEST_CASE("emulated device memory: copies and memsets stay within the bytes a tensor owns") {
  // 3 floats: 12 bytes of a 512-byte block.
  auto t = zeros<float>({3}, Device::cuda());
  std::vector<float> host(8, 1.0f);
  cuda::copy(t.data(), host.data(), 12, cuda::CopyKind::HostToDevice, 0, "test");
  cuda::copy(host.data(), t.data(), 12, cuda::CopyKind::DeviceToHost, 0, "test");
  cuda::memset_zero(t.data(), 12, 0, "test");
  CHECK_THROWS_WITH_AS(cuda::copy(t.data(), host.data(), 16, cuda::CopyKind::HostToDevice, 0, "test"),
                       "[test] cudaMemcpyAsync failed: invalid argument", Error);
  CHECK_THROWS_WITH_AS(cuda::copy(host.data(), t.data() + 1, 12, cuda::CopyKind::DeviceToHost, 0, "test"),
                       "[test] cudaMemcpyAsync failed: invalid argument", Error);
  CHECK_THROWS_WITH_AS(cuda::memset_zero(t.data(), 13, 0, "test"), "[test] cudaMemsetAsync failed: invalid argument",
                       Error);
  // A host pointer named as device memory, and device memory named as host memory.
  CHECK_THROWS_WITH_AS(cuda::copy(host.data(), host.data() + 4, 4, cuda::CopyKind::DeviceToHost, 0, "test"),
                       "[test] cudaMemcpyAsync failed: invalid argument", Error);
  auto u = zeros<float>({3}, Device::cuda());
  CHECK_THROWS_WITH_AS(cuda::copy(u.data(), t.data(), 12, cuda::CopyKind::HostToDevice, 0, "test"),
                       "[test] cudaMemcpyAsync failed: invalid argument", Error);
}

TEST_CASE("emulated device memory: a block back in the cache cannot be copied to, set or launched on") {
  auto t = zeros<float>({5}, Device::cuda());
  float* stale = t.data();
  t = Tensor<float>();  // the block goes back to the caching allocator
  std::vector<float> host(5, 1.0f);
  CHECK_THROWS_WITH_AS(cuda::copy(stale, host.data(), 4, cuda::CopyKind::HostToDevice, 0, "test"),
                       "[test] cudaMemcpyAsync failed: invalid argument", Error);
  CHECK_THROWS_WITH_AS(cuda::memset_zero(stale, 4, 0, "test"), "[test] cudaMemsetAsync failed: invalid argument",
                       Error);
  // The same block handed out again is usable for the new tensor's bytes.
  auto again = zeros<float>({5}, Device::cuda());
  CHECK(again.data() == stale);
  cuda::copy(again.data(), host.data(), 20, cuda::CopyKind::HostToDevice, 0, "test");
  CHECK(again.cpu().data()[4] == 1.0f);
}

TEST_CASE("emulated device: reports the shared memory per block it stands for") {
  // sm_90's 227 KiB, or CONDENSE_EMULATED_SHARED_BYTES (the run of tests/CMakeLists.txt
  // that stands for an sm_86 / sm_89 device sets 101376).
  const char* text = std::getenv("CONDENSE_EMULATED_SHARED_BYTES");
  const std::size_t expected = text ? static_cast<std::size_t>(std::stoull(text)) : std::size_t{232448};
  CHECK(cuda::max_shared_memory_per_block(0) == expected);
}

}  // namespace test_emulated_device_memory
