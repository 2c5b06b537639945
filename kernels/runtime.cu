// The CUDA runtime behind backend/cuda/runtime.hpp: devices, per-thread current streams,
// the caching allocator (one BlockCache per device; a block is reused only on the stream it
// was allocated for), copies, memset and the TF32 switch. Every failure becomes a
// condense::Error that names the op and the CUDA error string.
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/block_cache.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using detail::check;

/// Makes `device` the calling thread's current device for its lifetime and then restores the
/// caller's (an allocation must not change cuda::current_device() under the user).
class CurrentDeviceScope {
 public:
  explicit CurrentDeviceScope(int device) noexcept {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      cudaGetLastError();
      previous_ = -1;
    }
    ok_ = previous_ == device || cudaSetDevice(device) == cudaSuccess;
  }
  ~CurrentDeviceScope() {
    int now = -1;
    if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
    cudaGetLastError();
  }
  CurrentDeviceScope(const CurrentDeviceScope&) = delete;
  CurrentDeviceScope& operator=(const CurrentDeviceScope&) = delete;
  /// Whether the device was made current.
  bool ok() const { return ok_; }

 private:
  int previous_ = -1;
  bool ok_ = false;
};

/// cudaMalloc / cudaFree of one device, for BlockCache. Every size is cached; sizes up to
/// 4 KiB round to 512 bytes.
struct DeviceRawMemory {
  static constexpr std::size_t min_cached_bytes = 1;
  static constexpr std::size_t small_granule = 512;
  int device = 0;
  void* allocate(std::size_t bytes) noexcept {
    const CurrentDeviceScope scope(device);
    void* p = nullptr;
    if (!scope.ok() || cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return p;
  }
  void free(void* p, std::size_t) noexcept {
    const CurrentDeviceScope scope(device);
    cudaFree(p);  // synchronises the device, so no queued kernel still reads the block
  }
};

using DeviceCache = condense::detail::BlockCache<DeviceRawMemory>;

/// Per-device caches and the bookkeeping of live blocks (pointer -> size and stream).
class Allocator {
 public:
  static Allocator& instance() {
    static Allocator* allocator = new Allocator();  // never destroyed: late frees still find it
    return *allocator;
  }

  DeviceCache& cache(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = caches_.at(static_cast<std::size_t>(device));
    if (!slot) slot = std::make_unique<DeviceCache>(DeviceRawMemory{device});
    return *slot;
  }

  void* allocate(std::size_t bytes, int device, std::string_view op) {
    const int count = device_count();
    CONDENSE_CHECK(device >= 0 && device < count, op, "CUDA device ", device, " requested but ", count,
                   " device(s) are available");
    CONDENSE_CHECK(device < max_devices, op, "CUDA device ", device, " is beyond the ", max_devices, " supported");
    const auto pool = reinterpret_cast<std::uintptr_t>(current_stream(device));
    std::size_t granted = 0;
    DeviceCache& c = cache(device);
    void* p = c.acquire(bytes, &granted, pool);
    if (!p) {
      const MemoryStats s = c.stats();
      std::size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      cudaGetLastError();
      fail(op, "cudaMalloc of ", bytes, " bytes on cuda:", device, " failed: out of memory (", s.active_bytes,
           " bytes in use by tensors, ", free_bytes, " of ", total_bytes, " bytes free on the device)");
    }
    detail::note_block_in_use(p, bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    live_[p] = Live{granted, pool};
    return p;
  }

  void deallocate(void* p, int device) noexcept {
    Live live;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = live_.find(p);
      if (it == live_.end()) return;
      live = it->second;
      live_.erase(it);
    }
    detail::note_block_cached(p);
    cache(device).release(p, live.bytes, live.pool);
  }

  void empty_all() {
    for (int d = 0; d < max_devices; ++d) {
      DeviceCache* c = nullptr;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        c = caches_[static_cast<std::size_t>(d)].get();
      }
      if (c) c->empty();
    }
  }

  static constexpr int max_devices = 64;

 private:
  struct Live {
    std::size_t bytes = 0;
    std::uintptr_t pool = 0;
  };
  std::mutex mutex_;
  std::array<std::unique_ptr<DeviceCache>, max_devices> caches_;
  std::unordered_map<void*, Live> live_;
};

/// The calling thread's current stream per device (nullptr: the default stream).
thread_local std::array<StreamHandle, Allocator::max_devices> current_streams{};

std::atomic<bool> tf32_allowed{false};
std::atomic<bool> bf16_matmul_allowed{false};
std::atomic<bool> bf16_attention_allowed{false};
std::atomic<bool> attention_deterministic{false};

cudaMemcpyKind to_cuda(CopyKind kind) {
  switch (kind) {
    case CopyKind::HostToDevice: return cudaMemcpyHostToDevice;
    case CopyKind::DeviceToHost: return cudaMemcpyDeviceToHost;
    case CopyKind::DeviceToDevice: return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

/// Whether `host` lies in page-locked host memory (cudaMallocHost, cudaHostRegister).
bool is_page_locked(const void* host, std::string_view op) {
  cudaPointerAttributes attributes{};
  check(cudaPointerGetAttributes(&attributes, host), op, "cudaPointerGetAttributes");
  return attributes.type == cudaMemoryTypeHost;
}

void check_device_index(int device, std::string_view op) {
  const int count = device_count();
  CONDENSE_CHECK(device >= 0 && device < count && device < Allocator::max_devices, op, "CUDA device ", device,
                 " requested but ", count, " device(s) are available");
}

}  // namespace

int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

namespace {

/// An integer attribute of `device`, read once per device into `known` (attributes that
/// kernels launched on every call ask for).
int cached_attribute(std::array<std::atomic<int>, Allocator::max_devices>& known, cudaDeviceAttr attribute, int device,
                     std::string_view op) {
  if (device >= 0 && device < Allocator::max_devices) {
    const int cached = known[static_cast<std::size_t>(device)].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  check_device_index(device, op);
  int value = 0;
  check(cudaDeviceGetAttribute(&value, attribute, device), op, "cudaDeviceGetAttribute");
  known[static_cast<std::size_t>(device)].store(value, std::memory_order_relaxed);
  return value;
}

}  // namespace

int multiprocessor_count(int device, std::string_view op) {
  // The decode kernels ask on every attention call of a decoding step.
  static std::array<std::atomic<int>, Allocator::max_devices> known{};
  return cached_attribute(known, cudaDevAttrMultiProcessorCount, device, op);
}

std::size_t max_shared_memory_per_block(int device, std::string_view op) {
  // Every attention call asks before it picks its kernels.
  static std::array<std::atomic<int>, Allocator::max_devices> known{};
  return static_cast<std::size_t>(cached_attribute(known, cudaDevAttrMaxSharedMemoryPerBlockOptin, device, op));
}

int current_device() {
  int device = 0;
  check(cudaGetDevice(&device), "cuda::current_device", "cudaGetDevice");
  return device;
}

void set_device(int device, std::string_view op) {
  check_device_index(device, op);
  check(cudaSetDevice(device), op, "cudaSetDevice");
}

void synchronize(int device, std::string_view op) {
  check_device_index(device, op);
  check(cudaSetDevice(device), op, "cudaSetDevice");
  check(cudaDeviceSynchronize(), op, "cudaDeviceSynchronize");
}

StreamHandle current_stream(int device) {
  if (device < 0 || device >= Allocator::max_devices) return nullptr;
  return current_streams[static_cast<std::size_t>(device)];
}

void set_current_stream(int device, StreamHandle stream) {
  check_device_index(device, "cuda::set_current_stream");
  current_streams[static_cast<std::size_t>(device)] = stream;
}

void* allocate(std::size_t bytes, int device, std::string_view op) {
  return Allocator::instance().allocate(bytes, device, op);
}

void deallocate(void* ptr, int device) noexcept {
  if (ptr) Allocator::instance().deallocate(ptr, device);
}

MemoryStats memory_stats(int device) {
  check_device_index(device, "cuda::memory_stats");
  return Allocator::instance().cache(device).stats();
}

void reset_peak_memory(int device) {
  check_device_index(device, "cuda::reset_peak_memory");
  Allocator::instance().cache(device).reset_peak();
}

void empty_cache() { Allocator::instance().empty_all(); }

void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind, int device, std::string_view op) {
  detail::use_device(device, op);
  const cudaStream_t stream = detail::stream_of(device);
  check(cudaMemcpyAsync(dst, src, bytes, to_cuda(kind), stream), op, "cudaMemcpyAsync");
  // The host waits only where it must: for a download to land, and for an upload from
  // page-locked memory, which the device reads while the copy runs. An upload from pageable
  // memory (every CPU tensor the library allocates) is staged by the driver before
  // cudaMemcpyAsync returns, so the source may be freed at once and the host runs ahead.
  const bool host_must_wait =
      kind == CopyKind::DeviceToHost || (kind == CopyKind::HostToDevice && is_page_locked(src, op));
  if (host_must_wait) check(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");
}

void memset_zero(void* ptr, std::size_t bytes, int device, std::string_view op) {
  detail::use_device(device, op);
  check(cudaMemsetAsync(ptr, 0, bytes, detail::stream_of(device)), op, "cudaMemsetAsync");
}

void set_allow_tf32(bool allow) noexcept { tf32_allowed.store(allow); }
bool allow_tf32() noexcept { return tf32_allowed.load(); }
void set_allow_bf16_matmul(bool allow) noexcept { bf16_matmul_allowed.store(allow); }
bool allow_bf16_matmul() noexcept { return bf16_matmul_allowed.load(); }
void set_allow_bf16_attention(bool allow) noexcept { bf16_attention_allowed.store(allow); }
bool allow_bf16_attention() noexcept { return bf16_attention_allowed.load(); }
void set_deterministic_attention(bool deterministic) noexcept { attention_deterministic.store(deterministic); }
bool deterministic_attention() noexcept { return attention_deterministic.load(); }

}  // namespace condense::cuda
