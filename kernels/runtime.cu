// The CUDA runtime behind condense::cuda's header declarations (backend/cuda/runtime.hpp):
// device count, allocation, copies, memset — each failure becomes a condense::Error that
// names the op and the CUDA error string.
#include <cuda_runtime.h>

#include <string>

#include "condense/backend/cuda/runtime.hpp"

namespace condense::cuda {
namespace {

void check(cudaError_t status, std::string_view op, const char* what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error state where possible
    fail(op, what, " failed: ", cudaGetErrorString(status));
  }
}

cudaMemcpyKind to_cuda(CopyKind kind) {
  switch (kind) {
    case CopyKind::HostToDevice: return cudaMemcpyHostToDevice;
    case CopyKind::DeviceToHost: return cudaMemcpyDeviceToHost;
    case CopyKind::DeviceToDevice: return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
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

void* allocate(std::size_t bytes, int device, std::string_view op) {
  const int count = device_count();
  CONDENSE_CHECK(device >= 0 && device < count, op, "CUDA device ", device, " requested but ", count,
                 " device(s) are available");
  check(cudaSetDevice(device), op, "cudaSetDevice");
  void* ptr = nullptr;
  check(cudaMalloc(&ptr, bytes), op, (std::string("cudaMalloc of ") + std::to_string(bytes) + " bytes").c_str());
  return ptr;
}

void deallocate(void* ptr, int device) noexcept {
  if (!ptr) return;
  cudaSetDevice(device);
  cudaFree(ptr);
}

void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind, int device, std::string_view op) {
  check(cudaSetDevice(device), op, "cudaSetDevice");
  check(cudaMemcpy(dst, src, bytes, to_cuda(kind)), op, "cudaMemcpy");
}

void memset_zero(void* ptr, std::size_t bytes, int device, std::string_view op) {
  check(cudaSetDevice(device), op, "cudaSetDevice");
  check(cudaMemset(ptr, 0, bytes), op, "cudaMemset");
}

}  // namespace condense::cuda
