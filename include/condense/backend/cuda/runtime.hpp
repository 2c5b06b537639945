// The CUDA runtime surface the header-only side needs: device count, allocation and
// copies. Plain C++ declarations: no CUDA header reaches a CPU translation unit. The
// definitions live in the compiled condense::cuda library (kernels/runtime.cu); in a build
// without CUDA the inline fallbacks below report no device and throw on use.
#pragma once

#include <cstddef>
#include <string_view>

#include "condense/core/config.hpp"
#include "condense/core/error.hpp"

namespace condense::cuda {

/// Direction of a copy between host and device memory.
enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };

#if CONDENSE_WITH_CUDA
/// Number of usable CUDA devices (0 when there is no driver or no device).
int device_count() noexcept;
/// Allocates `bytes` on device `device`; throws condense::Error naming `op` on failure.
void* allocate(std::size_t bytes, int device, std::string_view op);
/// Frees memory from allocate().
void deallocate(void* ptr, int device) noexcept;
/// Copies `bytes` and waits for the copy to finish; throws condense::Error naming `op`.
void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind, int device, std::string_view op);
/// Sets `bytes` of device memory to zero; throws condense::Error naming `op`.
void memset_zero(void* ptr, std::size_t bytes, int device, std::string_view op);
inline constexpr bool built_with_cuda = true;
#else
inline constexpr bool built_with_cuda = false;
[[noreturn]] inline void throw_no_cuda(std::string_view op) {
  fail(op, "CUDA device requested but condense was built without CUDA "
           "(configure with -DCONDENSE_CUDA=ON and link condense::cuda)");
}
inline int device_count() noexcept { return 0; }
inline void* allocate(std::size_t, int, std::string_view op) { throw_no_cuda(op); }
inline void deallocate(void*, int) noexcept {}
inline void copy(void*, const void*, std::size_t, CopyKind, int, std::string_view op) { throw_no_cuda(op); }
inline void memset_zero(void*, std::size_t, int, std::string_view op) { throw_no_cuda(op); }
#endif

/// True when this build has the CUDA backend and at least one device is present.
inline bool is_available() noexcept { return device_count() > 0; }

}  // namespace condense::cuda
