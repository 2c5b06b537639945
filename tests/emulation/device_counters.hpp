// What the library has asked of the emulated CUDA device so far: kernel launches, cuBLAS
// products, host waits, copies, memsets and allocations, counted by the emulated launches
// (cuda_emulation.hpp) and runtime (device/). Tests read differences of these counts around
// a call to check how much device work it makes and where it makes the host wait, which on
// a GPU decide whether the host keeps ahead of the device (tests/emulation/checks).
#pragma once

#include <atomic>

namespace condense_cuda_emulation {

/// Running counts of the requests made of the emulated device (all threads together).
struct DeviceCounters {
  std::atomic<unsigned long long> launches{0};        ///< kernel launches
  std::atomic<unsigned long long> gemms{0};           ///< cuBLAS products (one per batched call)
  std::atomic<unsigned long long> host_waits{0};      ///< cudaStreamSynchronize + cudaDeviceSynchronize
  std::atomic<unsigned long long> copies_to_host{0};  ///< device-to-host cudaMemcpyAsync
  std::atomic<unsigned long long> copies_to_device{0};  ///< host-to-device cudaMemcpyAsync
  std::atomic<unsigned long long> device_copies{0};   ///< device-to-device cudaMemcpyAsync
  std::atomic<unsigned long long> memsets{0};         ///< cudaMemsetAsync and cudaMemset2DAsync
  std::atomic<unsigned long long> mallocs{0};         ///< cudaMalloc calls that returned memory
  std::atomic<unsigned long long> frees{0};           ///< cudaFree calls of device memory
};

/// The emulated device's counters (one instance per program).
inline DeviceCounters& device_counters() {
  static DeviceCounters counters;
  return counters;
}

/// A copy of the counts at one moment, and the difference of two.
struct DeviceCounts {
  unsigned long long launches = 0, gemms = 0, host_waits = 0, copies_to_host = 0, copies_to_device = 0,
                     device_copies = 0, memsets = 0, mallocs = 0, frees = 0;

  /// The counts now.
  static DeviceCounts now() {
    const DeviceCounters& c = device_counters();
    return {c.launches.load(), c.gemms.load(), c.host_waits.load(), c.copies_to_host.load(),
            c.copies_to_device.load(), c.device_copies.load(), c.memsets.load(), c.mallocs.load(),
            c.frees.load()};
  }

  /// What was counted between `before` and this moment's counts.
  DeviceCounts operator-(const DeviceCounts& before) const {
    return {launches - before.launches, gemms - before.gemms, host_waits - before.host_waits,
            copies_to_host - before.copies_to_host, copies_to_device - before.copies_to_device,
            device_copies - before.device_copies, memsets - before.memsets, mallocs - before.mallocs,
            frees - before.frees};
  }
};

}  // namespace condense_cuda_emulation
