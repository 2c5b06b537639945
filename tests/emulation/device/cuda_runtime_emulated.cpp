// The CUDA runtime functions kernels/*.cu call, for the emulated CUDA backend
// (condense_cuda_emulated, tests/CMakeLists.txt): one device, whose memory is host memory
// handed out by cudaMalloc and checked by every copy, memset and launch, and whose work runs
// at once in call order (streams are accepted and ignored). Errors follow the runtime's
// documented returns, so the library's error paths run as they would on a GPU.
#include "emulation/cuda_emulation.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

namespace {

namespace emu = condense_cuda_emulation;

/// The emulated device's memory: 4 GiB, or CONDENSE_EMULATED_DEVICE_BYTES. It is host memory,
/// so it is kept to what a CI machine has; tests that need more skip, as on a small GPU.
const std::size_t device_bytes = [] {
  if (const char* text = std::getenv("CONDENSE_EMULATED_DEVICE_BYTES")) {
    char* end = nullptr;
    const unsigned long long bytes = std::strtoull(text, &end, 10);
    if (end != text && *end == '\0' && bytes > 0) return static_cast<std::size_t>(bytes);
  }
  return std::size_t{4} << 30;
}();

thread_local int current_device = 0;

cudaError_t fail_with(cudaError_t error) {
  emu::last_error = error;
  return error;
}

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail_with(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}

/// The emulated device has 4 multiprocessors (few, so that grids sized by them split
/// work several ways in small tests) and emu::device_shared_bytes() of shared memory per
/// block; no other attribute is read by the library.
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail_with(cudaErrorInvalidValue);
  if (attr != cudaDevAttrMultiProcessorCount && attr != cudaDevAttrMaxSharedMemoryPerBlockOptin)
    return fail_with(cudaErrorInvalidValue);
  if (device != 0) return fail_with(cudaErrorInvalidDevice);
  *value = attr == cudaDevAttrMultiProcessorCount ? 4 : static_cast<int>(emu::device_shared_bytes());
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail_with(cudaErrorInvalidValue);
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device != 0) return fail_with(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, std::size_t bytes) {
  if (!ptr) return fail_with(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  emu::DeviceState& s = emu::device_state();
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    if (bytes > device_bytes - s.allocated_bytes) return fail_with(cudaErrorMemoryAllocation);
  }
  // 256-byte aligned, as cudaMalloc's blocks are; not zeroed, as on a GPU.
  const std::size_t rounded = (bytes + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded);
  if (!p) return fail_with(cudaErrorMemoryAllocation);
#if CONDENSE_EMULATION_ASAN
  __asan_poison_memory_region(static_cast<char*>(p) + bytes, rounded - bytes);  // the alignment's padding
#endif
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.allocations[reinterpret_cast<std::uintptr_t>(p)] = emu::DeviceAllocation{bytes, bytes, false};
  s.allocated_bytes += bytes;
  ++emu::device_counters().mallocs;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  emu::DeviceState& s = emu::device_state();
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    const auto it = s.allocations.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == s.allocations.end()) return fail_with(cudaErrorInvalidValue);
    s.allocated_bytes -= it->second.bytes;
#if CONDENSE_EMULATION_ASAN
    __asan_unpoison_memory_region(ptr, (it->second.bytes + 255) / 256 * 256);  // poisoned in parts
#endif
    s.allocations.erase(it);
  }
  ++emu::device_counters().frees;
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return fail_with(cudaErrorInvalidValue);
  emu::DeviceState& s = emu::device_state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  *free_bytes = device_bytes - s.allocated_bytes;
  *total_bytes = device_bytes;
  return cudaSuccess;
}

/// Copies at once; the ends named device memory by `kind` must lie in the in-use part of one
/// allocation and the host ends must not lie in device memory (a GPU would fault or copy the
/// wrong bytes).
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return fail_with(cudaErrorInvalidValue);
  const bool dst_device = emu::is_device_range(dst, bytes), src_device = emu::is_device_range(src, bytes);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_device && !emu::in_device_memory(src); break;
    case cudaMemcpyDeviceToHost: ok = src_device && !emu::in_device_memory(dst); break;
    case cudaMemcpyDeviceToDevice: ok = dst_device && src_device; break;
    case cudaMemcpyHostToHost: ok = !emu::in_device_memory(dst) && !emu::in_device_memory(src); break;
    case cudaMemcpyDefault: break;
    default: ok = false;
  }
  if (!ok) return fail_with(cudaErrorInvalidValue);
  emu::DeviceCounters& counters = emu::device_counters();
  ++(kind == cudaMemcpyHostToDevice   ? counters.copies_to_device
     : kind == cudaMemcpyDeviceToHost ? counters.copies_to_host
                                      : counters.device_copies);
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

/// Device memory for pointers into an allocation, unregistered host memory for the rest (the
/// emulated runtime has no page-locked host memory).
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  if (!attributes) return fail_with(cudaErrorInvalidValue);
  *attributes = cudaPointerAttributes{};
  if (emu::in_device_memory(ptr)) {
    attributes->type = cudaMemoryTypeDevice;
    attributes->device = 0;
    attributes->devicePointer = const_cast<void*>(ptr);
  } else {
    attributes->type = cudaMemoryTypeUnregistered;
    attributes->device = -2;
  }
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, std::size_t bytes, cudaStream_t) {
  if (bytes == 0) return cudaSuccess;
  if (!emu::is_device_range(ptr, bytes)) return fail_with(cudaErrorInvalidValue);
  ++emu::device_counters().memsets;
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

/// `height` rows of `width` bytes, `pitch` bytes apart; every row must lie in device memory
/// and the pitch must cover the width.
cudaError_t cudaMemset2DAsync(void* ptr, std::size_t pitch, int value, std::size_t width, std::size_t height,
                              cudaStream_t) {
  if (width == 0 || height == 0) return cudaSuccess;
  if (!ptr || pitch < width) return fail_with(cudaErrorInvalidValue);
  auto* rows = static_cast<unsigned char*>(ptr);
  for (std::size_t r = 0; r < height; ++r)
    if (!emu::is_device_range(rows + r * pitch, width)) return fail_with(cudaErrorInvalidValue);
  ++emu::device_counters().memsets;
  for (std::size_t r = 0; r < height; ++r) std::memset(rows + r * pitch, value, width);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  ++emu::device_counters().host_waits;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  ++emu::device_counters().host_waits;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t error = emu::last_error;
  emu::last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() { return emu::last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "unknown error (emulated runtime)";
  }
}

/// Records a kernel's raised dynamic shared-memory limit (the only attribute the library sets).
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (!func) return fail_with(cudaErrorInvalidDeviceFunction);
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return fail_with(cudaErrorInvalidValue);
  if (value < 0 || static_cast<std::size_t>(value) > emu::device_shared_bytes()) return fail_with(cudaErrorInvalidValue);
  emu::DeviceState& s = emu::device_state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.shared_limits[func] = static_cast<std::size_t>(value);
  return cudaSuccess;
}

}  // extern "C"
