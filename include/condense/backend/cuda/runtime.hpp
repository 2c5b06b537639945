// The CUDA runtime surface the header-only side needs: devices, the current stream, the
// caching allocator and its counters, copies, and the TF32 switch. Plain C++ declarations:
// no CUDA header reaches a CPU translation unit. The definitions live in the compiled
// condense::cuda library (kernels/runtime.cu); in a build without CUDA the inline fallbacks
// below report no device and throw condense::Error naming the op on use.
#pragma once

#include <cstddef>
#include <string_view>

#include "condense/core/block_cache.hpp"
#include "condense/core/config.hpp"
#include "condense/core/error.hpp"

namespace condense::cuda {

/// Direction of a copy between host and device memory.
enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };

/// An opaque CUDA stream (a cudaStream_t); nullptr is the device's default stream.
using StreamHandle = void*;

#if CONDENSE_WITH_CUDA
/// Number of usable CUDA devices (0 when there is no driver or no device).
int device_count() noexcept;
/// The calling thread's current device.
int current_device();
/// Makes `device` the calling thread's current device; throws naming `op` when it does not exist.
void set_device(int device, std::string_view op = "cuda::set_device");
/// Waits for all work queued on `device`.
void synchronize(int device, std::string_view op = "cuda::synchronize");
/// The number of streaming multiprocessors of `device` (how the split-key kernels size
/// their grids); throws naming `op` when it cannot be read.
int multiprocessor_count(int device, std::string_view op = "cuda::multiprocessor_count");
/// The most dynamic shared memory one block of a kernel may have on `device`, in bytes,
/// once the kernel has asked for it (the opt-in limit: 227 KiB on sm_90 and sm_80's 163 KiB,
/// 99 KiB on sm_86 and sm_89); the attention launcher picks kernels that fit. Throws naming
/// `op` when it cannot be read.
std::size_t max_shared_memory_per_block(int device, std::string_view op = "cuda::max_shared_memory_per_block");
/// The stream the calling thread queues work for `device` on (default: nullptr, the
/// default stream).
StreamHandle current_stream(int device);
/// Sets the stream the calling thread queues work for `device` on.
void set_current_stream(int device, StreamHandle stream);
/// Allocates `bytes` on `device` through the caching allocator, for the current stream;
/// throws condense::Error naming `op` (with the CUDA error string) on failure.
void* allocate(std::size_t bytes, int device, std::string_view op);
/// Returns memory from allocate() to the cache of the stream it was allocated for.
void deallocate(void* ptr, int device) noexcept;
/// Byte counts of the caching allocator of `device`.
MemoryStats memory_stats(int device = 0);
/// Restarts peak_bytes of `device` from its active bytes.
void reset_peak_memory(int device = 0);
/// Frees the cached blocks of every device (after waiting for their work).
void empty_cache();
/// Copies `bytes` on the current stream; host copies wait for it; throws naming `op`.
void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind, int device, std::string_view op);
/// Sets `bytes` of device memory to zero on the current stream; throws naming `op`.
void memset_zero(void* ptr, std::size_t bytes, int device, std::string_view op);
/// Lets float GEMMs use TF32 tensor cores (off by default, like PyTorch's matmul).
void set_allow_tf32(bool allow) noexcept;
/// Whether float GEMMs may use TF32.
bool allow_tf32() noexcept;
/// Lets float GEMMs (matmul, bmm, linear and their backward products) read their operands
/// rounded to bfloat16: bf16 tensor cores with fp32 accumulation and fp32 outputs, the
/// GEMM part of mixed-precision training (off by default; takes precedence over TF32).
void set_allow_bf16_matmul(bool allow) noexcept;
/// Whether float GEMMs round their operands to bfloat16.
bool allow_bf16_matmul() noexcept;
/// Lets attention() on float CUDA tensors with head dim <= 128 round q, k, v and the bias
/// to bfloat16 and run the tensor-core flash kernels (fp32 accumulation, fp32 outputs and
/// gradients); off by default. A backward pass uses the setting of its forward call.
void set_allow_bf16_attention(bool allow) noexcept;
/// Whether float attention runs on the bf16 tensor cores.
bool allow_bf16_attention() noexcept;
/// Makes the tensor-core attention backward compute dq in its own kernel (recomputing the
/// scores: seven products instead of five) so that every gradient is the same, bit for bit,
/// from run to run. Off by default: dq is then summed over key tiles in float with atomics
/// inside the dk/dv kernel (as FlashAttention-2 does), whose order varies between runs.
void set_deterministic_attention(bool deterministic) noexcept;
/// Whether the attention backward is bitwise reproducible (see set_deterministic_attention).
bool deterministic_attention() noexcept;
inline constexpr bool built_with_cuda = true;
#else
inline constexpr bool built_with_cuda = false;
[[noreturn]] inline void throw_no_cuda(std::string_view op) {
  fail(op, "CUDA device requested but condense was built without CUDA "
           "(configure with -DCONDENSE_CUDA=ON and link condense::cuda)");
}
inline int device_count() noexcept { return 0; }
inline int current_device() { throw_no_cuda("cuda::current_device"); }
inline void set_device(int, std::string_view op = "cuda::set_device") { throw_no_cuda(op); }
inline void synchronize(int, std::string_view op = "cuda::synchronize") { throw_no_cuda(op); }
inline int multiprocessor_count(int, std::string_view op = "cuda::multiprocessor_count") { throw_no_cuda(op); }
inline std::size_t max_shared_memory_per_block(int, std::string_view op = "cuda::max_shared_memory_per_block") {
  throw_no_cuda(op);
}
inline StreamHandle current_stream(int) { throw_no_cuda("cuda::current_stream"); }
inline void set_current_stream(int, StreamHandle) { throw_no_cuda("cuda::set_current_stream"); }
inline void* allocate(std::size_t, int, std::string_view op) { throw_no_cuda(op); }
inline void deallocate(void*, int) noexcept {}
inline MemoryStats memory_stats(int = 0) { return {}; }
inline void reset_peak_memory(int = 0) {}
inline void empty_cache() {}
inline void copy(void*, const void*, std::size_t, CopyKind, int, std::string_view op) { throw_no_cuda(op); }
inline void memset_zero(void*, std::size_t, int, std::string_view op) { throw_no_cuda(op); }
inline void set_allow_tf32(bool) noexcept {}
inline bool allow_tf32() noexcept { return false; }
inline void set_allow_bf16_matmul(bool) noexcept {}
inline bool allow_bf16_matmul() noexcept { return false; }
inline void set_allow_bf16_attention(bool) noexcept {}
inline bool allow_bf16_attention() noexcept { return false; }
inline void set_deterministic_attention(bool) noexcept {}
inline bool deterministic_attention() noexcept { return true; }
#endif

/// True when this build has the CUDA backend and at least one device is present.
inline bool is_available() noexcept { return device_count() > 0; }

/// Makes a stream current for `device` in this scope and restores the previous one after.
class StreamGuard {
 public:
  StreamGuard(int device, StreamHandle stream) : device_(device), previous_(current_stream(device)) {
    set_current_stream(device, stream);
  }
  ~StreamGuard() {
    try {
      set_current_stream(device_, previous_);
    } catch (...) {
    }
  }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  StreamHandle previous_;
};

}  // namespace condense::cuda
