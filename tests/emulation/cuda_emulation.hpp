// A CPU emulation of the parts of the CUDA execution model and runtime that the kernels of
// kernels/ use, so that they run on the host, unchanged, in every CI build: no GPU is needed
// to find an indexing, layout or launch bug in them.
//
// - Every thread of a block is a fiber on the calling OS thread; one warp of a block runs at
//   a time, as far as it can before a barrier (its lanes taking turns), warps and lanes in
//   increasing order in half the blocks and decreasing in the others, so that a missing
//   barrier shows (see run_block); blocks run one after another. __syncthreads() waits for
//   every thread of the block; a block whose threads would wait for each other forever fails.
// - The warp-collective instructions (mma.sync.m16n8k16, ldmatrix.x4 with and without
//   .trans, shfl.sync idx, up and bfly) gather the operands of the warp's 32 threads and
//   compute what the PTX ISA defines for each lane.
//   The fragment layouts here are written out from the ISA's tables, independently of
//   condense/backend/cuda/mma_layout.hpp, which the kernels use to form their addresses.
// - Shared memory: static __shared__ arrays become function-local (thread_local) statics;
//   the dynamic shared memory is one buffer per OS thread, poisoned (NaN bytes) before each
//   block; every ldmatrix and cp.async is bounds-checked against the launch's dynamic size.
//   cp.async copies at once (so a test cannot see a missing wait, only wrong addresses and
//   wrong data).
// - Launches are checked against sm_90's limits (threads per block, grid extents, dynamic
//   shared memory, the 48 KB a kernel gets without cudaFuncAttributeMaxDynamicSharedMemorySize).
//   Launches through the library's detail::launch_kernel (launch_from_runtime) also record
//   a configuration error where cudaGetLastError finds it, as on a GPU, and check that every
//   pointer argument points into memory from the emulated cudaMalloc
//   (tests/emulation/device/, which stands in for the CUDA runtime and cuBLAS).
//
// Define CONDENSE_CUDA_EMULATION, include this header, then the kernel headers; launch with
// launch(grid, block, shared_bytes, kernel, args...).
#pragma once

#ifndef CONDENSE_CUDA_EMULATION
#error "define CONDENSE_CUDA_EMULATION before including cuda_emulation.hpp"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <type_traits>
#include <ucontext.h>
#include <unordered_map>
#include <vector>

#include "emulation/device_counters.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define CONDENSE_EMULATION_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONDENSE_EMULATION_ASAN 1
#endif
#endif
#if CONDENSE_EMULATION_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// ---- the built-in variables and functions a kernel sees ---------------------------------

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
// A kernel's static __shared__ arrays become function-local statics: one copy that every
// thread (fiber) of the block sees, as on the GPU (blocks run one at a time); one per OS
// thread, so host threads may launch at the same time.
#undef __shared__
#define __shared__ static thread_local
// Dynamic shared memory: the running block's buffer.
#define CONDENSE_DYNAMIC_SHARED_MEMORY(name) unsigned char* const name = ::condense_cuda_emulation::dynamic_shared_memory()

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// min and max with the overloads CUDA declares for device code (mixed signedness gives
// the unsigned type, float and double take fmin/fmax), so a call picks the same one here.
#define CONDENSE_EMULATION_MIN_MAX(A, B, R)                                                          \
  inline R min(A a, B b) { return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); } \
  inline R max(A a, B b) { return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); }
CONDENSE_EMULATION_MIN_MAX(int, int, int)
CONDENSE_EMULATION_MIN_MAX(unsigned, unsigned, unsigned)
CONDENSE_EMULATION_MIN_MAX(int, unsigned, unsigned)
CONDENSE_EMULATION_MIN_MAX(unsigned, int, unsigned)
CONDENSE_EMULATION_MIN_MAX(long, long, long)
CONDENSE_EMULATION_MIN_MAX(unsigned long, unsigned long, unsigned long)
CONDENSE_EMULATION_MIN_MAX(long, unsigned long, unsigned long)
CONDENSE_EMULATION_MIN_MAX(unsigned long, long, unsigned long)
CONDENSE_EMULATION_MIN_MAX(long long, long long, long long)
CONDENSE_EMULATION_MIN_MAX(unsigned long long, unsigned long long, unsigned long long)
CONDENSE_EMULATION_MIN_MAX(long long, unsigned long long, unsigned long long)
CONDENSE_EMULATION_MIN_MAX(unsigned long long, long long, unsigned long long)
#undef CONDENSE_EMULATION_MIN_MAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(float a, double b) { return std::fmin(static_cast<double>(a), b); }
inline double max(float a, double b) { return std::fmax(static_cast<double>(a), b); }
inline double min(double a, float b) { return std::fmin(a, static_cast<double>(b)); }
inline double max(double a, float b) { return std::fmax(a, static_cast<double>(b)); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }

namespace condense_cuda_emulation {

// ---- fibers: a stack per emulated thread, switched without a system call ---------------

#if defined(__x86_64__) && !defined(CONDENSE_EMULATION_UCONTEXT)
/// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
/// stores the stack pointer in *save and continues on the stack `load` (saved the same way,
/// or prepared by new_registers). ucontext's swapcontext does the same plus a system call
/// for the signal mask, which made it a hundred times slower here.
extern "C" void condense_emulation_switch_stack(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .weak condense_emulation_switch_stack
  .type condense_emulation_switch_stack, @function
condense_emulation_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size condense_emulation_switch_stack, .-condense_emulation_switch_stack
  .text
)");

/// The registers of a suspended fiber: its saved stack pointer.
struct FiberRegisters {
  void* stack_pointer = nullptr;
};
inline void switch_registers(FiberRegisters& from, const FiberRegisters& to) {
  condense_emulation_switch_stack(&from.stack_pointer, to.stack_pointer);
}
/// Prepares `fiber` to start entry() on the stack [base, base + bytes) at its first switch.
inline void new_registers(FiberRegisters& fiber, char* base, std::size_t bytes, void (*entry)(), FiberRegisters&) {
  auto top = reinterpret_cast<std::uintptr_t>(base + bytes) & ~static_cast<std::uintptr_t>(15);
  auto* slot = reinterpret_cast<std::uint64_t*>(top);
  *--slot = 0;                                        // entry() starts as if called: rsp = 8 (mod 16)
  *--slot = reinterpret_cast<std::uint64_t>(entry);   // where the first switch returns to
  for (int r = 0; r < 6; ++r) *--slot = 0;            // rbp, rbx, r12..r15
  *--slot = 0x1F80ull | (0x037Full << 32);             // MXCSR and x87 control word: the defaults
  fiber.stack_pointer = slot;
}
#else
/// The registers of a suspended fiber (ucontext elsewhere than on x86-64).
struct FiberRegisters {
  ucontext_t context{};
};
inline void switch_registers(FiberRegisters& from, const FiberRegisters& to) { swapcontext(&from.context, &to.context); }
inline void new_registers(FiberRegisters& fiber, char* base, std::size_t bytes, void (*entry)(), FiberRegisters& link) {
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = base;
  fiber.context.uc_stack.ss_size = bytes;
  fiber.context.uc_link = &link.context;
  makecontext(&fiber.context, entry, 0);
}
#endif

/// A fiber: its registers while suspended and the stack it runs on. Under AddressSanitizer
/// every switch announces the stack it moves to (__sanitizer_start_switch_fiber) and
/// confirms the arrival (__sanitizer_finish_switch_fiber), so that the kernels' stack
/// frames are checked on the fibers' stacks as on any other.
struct FiberContext {
  FiberRegisters registers;
  const void* stack_bottom = nullptr;  ///< the lowest address of the stack (null: not known yet)
  std::size_t stack_size = 0;
  void* fake_stack = nullptr;  ///< AddressSanitizer's saved fake stack while suspended
};

/// Suspends `from` and resumes `to` (until something switches back to `from`).
inline void switch_fiber(FiberContext& from, FiberContext& to) {
#if CONDENSE_EMULATION_ASAN
  __sanitizer_start_switch_fiber(&from.fake_stack, to.stack_bottom, to.stack_size);
#endif
  switch_registers(from.registers, to.registers);
#if CONDENSE_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(from.fake_stack, nullptr, nullptr);
#endif
}

/// Prepares `fiber` to start entry() on the stack [base, base + bytes) at its first switch;
/// `link` is where it goes if entry() returns (ucontext).
inline void new_fiber(FiberContext& fiber, char* base, std::size_t bytes, void (*entry)(), FiberContext& link) {
#if CONDENSE_EMULATION_ASAN
  __asan_unpoison_memory_region(base, bytes);  // frames a fiber of an earlier block left behind
#endif
  fiber.stack_bottom = base;
  fiber.stack_size = bytes;
  fiber.fake_stack = nullptr;
  new_registers(fiber.registers, base, bytes, entry, link.registers);
}

/// What a fiber does first on its own stack: completes the switch that started it and
/// learns the bounds of the stack it came from (the scheduler's), which `from` then holds.
inline void enter_new_fiber(FiberContext& from) {
#if CONDENSE_EMULATION_ASAN
  const void* bottom = nullptr;
  std::size_t size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &bottom, &size);
  from.stack_bottom = bottom;
  from.stack_size = size;
#else
  (void)from;
#endif
}

/// The words one lane hands to a warp-collective instruction, and the words it gets back.
using Payload = std::array<std::uint32_t, 10>;
using Result = std::array<std::uint32_t, 4>;
using WarpPayloads = std::array<Payload, 32>;
using WarpResults = std::array<Result, 32>;

/// One block in flight. Its threads are fibers taking turns on the calling OS
/// thread: a thread runs until it waits at a barrier or a warp-collective instruction, then
/// the next one runs. The last thread of a warp to arrive at a collective computes the
/// results of all 32 lanes; the last thread of the block to arrive at __syncthreads
/// releases the others.
struct Block {
  Block(int thread_count, unsigned char* shared_memory, std::size_t bytes)
      : threads(thread_count), warps((thread_count + 31) / 32), shared(shared_memory), shared_bytes(bytes) {
    contexts.resize(static_cast<std::size_t>(threads));
    done.assign(static_cast<std::size_t>(threads), false);
    warp_arrived.assign(static_cast<std::size_t>(warps), 0);
    warp_generation.assign(static_cast<std::size_t>(warps), 0);
    payloads.resize(static_cast<std::size_t>(warps));
    results.resize(static_cast<std::size_t>(warps));
  }
  int threads, warps;
  unsigned char* shared;
  std::size_t shared_bytes;
  std::vector<FiberContext> contexts;
  FiberContext scheduler;
  std::vector<bool> done;
  int current = 0;                  ///< the thread running now
  std::function<void()> body;       ///< the kernel call every thread makes
  int barrier_arrived = 0;
  unsigned barrier_generation = 0;
  std::vector<int> warp_arrived;
  std::vector<unsigned> warp_generation;
  std::vector<WarpPayloads> payloads;
  std::vector<WarpResults> results;
  long long switches = 0;  ///< bumped by every arrival: progress, for the deadlock check
  std::string error;       ///< the first failed check of any thread
};

inline thread_local Block* current_block = nullptr;

/// The running thread's lane and warp: its linear index in the block (x fastest) split
/// into warps of 32, as on the GPU.
inline int lane() { return current_block->current % 32; }
inline int warp() { return current_block->current / 32; }

/// Records a failed check (the first one wins); the launch throws it after the block.
inline void fail(const std::string& what) {
  if (current_block->error.empty()) current_block->error = what;
}

/// Hands the OS thread back to the block's scheduler until it resumes this thread.
inline void yield() {
  Block& b = *current_block;
  switch_fiber(b.contexts[static_cast<std::size_t>(b.current)], b.scheduler);
}

/// The bytes [address, address + bytes) of the block's shared memory, checked.
inline unsigned char* shared_at(unsigned address, std::size_t bytes, const char* op) {
  static unsigned char scratch[16];
  if (static_cast<std::size_t>(address) + bytes > current_block->shared_bytes) {
    fail(std::string(op) + ": shared address " + std::to_string(address) + " + " + std::to_string(bytes) +
         " past the " + std::to_string(current_block->shared_bytes) + " bytes of the launch");
    return scratch;
  }
  return current_block->shared + address;
}

/// A warp-collective instruction: each lane hands `mine` to the warp and waits; the last
/// to arrive runs compute_all(payloads, results) for every lane; each gets its result.
template <class ComputeAll>
Result warp_collective(const Payload& mine, ComputeAll compute_all) {
  Block& b = *current_block;
  const auto w = static_cast<std::size_t>(warp()), l = static_cast<std::size_t>(lane());
  const int lanes = std::min(32, b.threads - 32 * static_cast<int>(w));
  b.payloads[w][l] = mine;
  ++b.switches;
  const unsigned generation = b.warp_generation[w];
  if (++b.warp_arrived[w] == lanes) {
    compute_all(b.payloads[w], b.results[w]);
    b.warp_arrived[w] = 0;
    ++b.warp_generation[w];
  } else {
    while (b.warp_generation[w] == generation) yield();
  }
  return b.results[w][l];  // read before this lane can arrive at the warp's next collective
}

/// The float value of a 16-bit element (bfloat16 or float16 bits).
inline float widen(std::uint16_t bits, bool bf16) {
  if (bf16) return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
  return __half2float(__ushort_as_half(bits));
}
inline std::uint16_t half_of(std::uint32_t reg, int h) { return static_cast<std::uint16_t>(h ? reg >> 16 : reg & 0xffffu); }

/// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: d = a b + d. With g = lane / 4 and
/// t = lane % 4 (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
/// A (16 x 16): a0..a7 at rows g (a0, a1, a4, a5) or g + 8 (a2, a3, a6, a7), columns
///   2t + (i & 1), plus 8 for a4..a7; register r holds a(2r) low and a(2r+1) high.
/// B (16 x 8): b0..b3 at rows (k) 2t + (i & 1), plus 8 for b2, b3; column g.
/// C, D (16 x 8): c0..c3 at rows g (c0, c1) or g + 8 (c2, c3), columns 2t + (i & 1).
inline void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1, bool bf16) {
  Payload mine{a[0], a[1], a[2], a[3], b0, b1};
  for (int i = 0; i < 4; ++i) mine[static_cast<std::size_t>(6 + i)] = std::bit_cast<std::uint32_t>(d[i]);
  const Result out = warp_collective(mine, [bf16](const WarpPayloads& in, WarpResults& results) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; ++l) {
      const auto& p = in[static_cast<std::size_t>(l)];
      const int g = l / 4, t = l % 4;
      for (int i = 0; i < 8; ++i)
        A[g + ((i / 2) % 2) * 8][2 * t + (i & 1) + (i / 4) * 8] = widen(half_of(p[static_cast<std::size_t>(i / 2)], i & 1), bf16);
      for (int i = 0; i < 4; ++i)
        B[2 * t + (i & 1) + (i / 2) * 8][g] = widen(half_of(p[static_cast<std::size_t>(4 + i / 2)], i & 1), bf16);
      for (int i = 0; i < 4; ++i) C[g + (i / 2) * 8][2 * t + (i & 1)] = std::bit_cast<float>(p[static_cast<std::size_t>(6 + i)]);
    }
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = g + (i / 2) * 8, col = 2 * t + (i & 1);
        float sum = C[row][col];
        for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
        results[static_cast<std::size_t>(l)][static_cast<std::size_t>(i)] = std::bit_cast<std::uint32_t>(sum);
      }
    }
  });
  for (int i = 0; i < 4; ++i) d[i] = std::bit_cast<float>(out[static_cast<std::size_t>(i)]);
}

/// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lane l gives the address of row l % 8
/// of matrix l / 8 (8 elements, 16 bytes). Without .trans, register i of lane l holds
/// elements 2 (l % 4) and 2 (l % 4) + 1 of row l / 4 of matrix i; with .trans, the element
/// at column l / 4 of rows 2 (l % 4) and 2 (l % 4) + 1.
inline void ldmatrix_x4(std::uint32_t (&r)[4], unsigned address, bool trans) {
  if (address % 16 != 0) fail("ldmatrix: row address " + std::to_string(address) + " is not 16-byte aligned");
  const Result out = warp_collective(Payload{address}, [trans](const WarpPayloads& in, WarpResults& results) {
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 4; ++i) {
        std::uint16_t half[2];
        for (int h = 0; h < 2; ++h) {
          const int row = trans ? 2 * (l % 4) + h : l / 4, col = trans ? l / 4 : 2 * (l % 4) + h;
          const unsigned row_address = in[static_cast<std::size_t>(8 * i + row)][0];
          std::memcpy(&half[h], shared_at(row_address + 2u * static_cast<unsigned>(col), 2, "ldmatrix"), 2);
        }
        results[static_cast<std::size_t>(l)][static_cast<std::size_t>(i)] =
            static_cast<std::uint32_t>(half[0]) | (static_cast<std::uint32_t>(half[1]) << 16);
      }
    }
  });
  for (int i = 0; i < 4; ++i) r[i] = out[static_cast<std::size_t>(i)];
}

/// ex2.approx.ftz.f32: 2^x with results below the smallest normal float flushed to +0
/// (the hardware's approximation error is not modelled).
inline float ex2_approx_ftz(float x) {
  const float y = std::exp2(x);
  return y < std::numeric_limits<float>::min() ? 0.f : y;
}

/// shfl.sync: the value v of lane source(l) for each lane l (a float or a double).
template <class V, class Source>
V shuffle(V v, Source source) {
  static_assert(sizeof(V) <= 8);
  Payload mine{};
  std::memcpy(mine.data(), &v, sizeof(V));
  const Result out = warp_collective(mine, [source](const WarpPayloads& in, WarpResults& results) {
    for (int l = 0; l < 32; ++l) {
      const auto& from = in[static_cast<std::size_t>(source(l))];
      results[static_cast<std::size_t>(l)][0] = from[0];
      results[static_cast<std::size_t>(l)][1] = from[1];
    }
  });
  V result;
  std::memcpy(&result, out.data(), sizeof(V));
  return result;
}

/// vote.sync.any: whether `predicate` holds on any lane of the warp (every lane gets the answer).
inline bool vote_any(bool predicate) {
  const Result out = warp_collective(Payload{predicate ? 1u : 0u}, [](const WarpPayloads& in, WarpResults& results) {
    std::uint32_t any = 0;
    for (int l = 0; l < 32; ++l) any |= in[static_cast<std::size_t>(l)][0];
    for (int l = 0; l < 32; ++l) results[static_cast<std::size_t>(l)][0] = any;
  });
  return out[0] != 0;
}

/// __syncthreads(): waits until every thread of the block has arrived.
inline void block_barrier() {
  Block& b = *current_block;
  ++b.switches;
  const unsigned generation = b.barrier_generation;
  if (++b.barrier_arrived == b.threads) {
    b.barrier_arrived = 0;
    ++b.barrier_generation;
  } else {
    while (b.barrier_generation == generation) yield();
  }
}

/// cp.async.cg.shared.global with 16 bytes, `valid` false filling zeros (done at once).
inline void copy_async_16(unsigned address, const void* src, bool valid) {
  unsigned char* dst = shared_at(address, 16, "cp.async");
  if (address % 16 != 0) fail("cp.async: shared address " + std::to_string(address) + " is not 16-byte aligned");
  if (valid) {
    std::memcpy(dst, src, 16);
  } else {
    std::memset(dst, 0, 16);
  }
}

/// The most dynamic shared memory a block can have (sm_90: 227 KB), and the most a kernel
/// gets unless cudaFuncAttributeMaxDynamicSharedMemorySize raised its limit.
inline constexpr std::size_t max_shared_bytes = 232448;
inline constexpr std::size_t default_shared_bytes = 48 * 1024;

/// The most dynamic shared memory a block may have on the emulated device: sm_90's
/// max_shared_bytes, or CONDENSE_EMULATED_SHARED_BYTES (at least default_shared_bytes, at
/// most max_shared_bytes) to stand for a device with less (sm_86 and sm_89: 101376, 99 KiB),
/// so that a test run can check that the launchers pick kernels that fit it.
inline std::size_t device_shared_bytes() {
  static const std::size_t bytes = [] {
    if (const char* text = std::getenv("CONDENSE_EMULATED_SHARED_BYTES")) {
      char* end = nullptr;
      const unsigned long long value = std::strtoull(text, &end, 10);
      if (end != text && *end == '\0' && value >= default_shared_bytes && value <= max_shared_bytes)
        return static_cast<std::size_t>(value);
      throw std::invalid_argument(std::string("CONDENSE_EMULATED_SHARED_BYTES: '") + text + "' is not a byte count from " +
                                  std::to_string(default_shared_bytes) + " to " + std::to_string(max_shared_bytes));
    }
    return max_shared_bytes;
  }();
  return bytes;
}

/// The calling OS thread's dynamic shared memory: 16-byte aligned, reused by every block.
inline unsigned char* shared_memory_buffer() {
  struct alignas(16) Chunk {
    unsigned char bytes[16];
  };
  thread_local const std::unique_ptr<Chunk[]> buffer(new Chunk[max_shared_bytes / sizeof(Chunk)]);
  return reinterpret_cast<unsigned char*>(buffer.get());
}

/// What a kernel's CONDENSE_DYNAMIC_SHARED_MEMORY names: the running block's shared memory.
inline unsigned char* dynamic_shared_memory() { return current_block->shared; }

/// Stack bytes of one emulated thread.
inline constexpr std::size_t fiber_stack_bytes = 256 * 1024;

/// The stack of emulated thread t of the calling OS thread's blocks (kept for later launches).
inline char* fiber_stack(std::size_t t) {
  thread_local std::vector<std::unique_ptr<char[]>> stacks;
  while (stacks.size() <= t) stacks.emplace_back(new char[fiber_stack_bytes]);
  return stacks[t].get();
}

/// The entry of every fiber: the kernel call, then back to the scheduler for good.
inline void fiber_entry() {
  Block& b = *current_block;
  enter_new_fiber(b.scheduler);
  b.body();
  b.done[static_cast<std::size_t>(b.current)] = true;
  for (;;) yield();  // never resumed once done
}

/// Runs the threads of `b` until all have returned; false when they wait for each other
/// forever (a barrier or collective that not every thread reaches).
///
/// One warp runs at a time, as far as it can: its lanes take turns (so warp collectives
/// complete) until each has returned or waits at a barrier for the rest of the block; then
/// the next warp runs. A warp thus runs ahead of the others up to the next barrier, which
/// is one of the orders a GPU may pick, and the one that shows a missing barrier: a warp
/// that reads shared memory another warp has not written yet, or overwrites what another
/// warp has not read yet, gets or leaves the wrong values. With `reverse` the warps, and
/// the lanes within each, go in decreasing order, so a hazard in either direction shows in
/// one of the two orders.
inline bool run_block(Block& b, bool reverse) {
  for (int t = 0; t < b.threads; ++t)
    new_fiber(b.contexts[static_cast<std::size_t>(t)], fiber_stack(static_cast<std::size_t>(t)), fiber_stack_bytes,
              fiber_entry, b.scheduler);
  const auto run = [&b](int t) {
    b.current = t;
    const auto linear = static_cast<unsigned>(t);
    threadIdx = uint3{linear % blockDim.x, (linear / blockDim.x) % blockDim.y, linear / (blockDim.x * blockDim.y)};
    switch_fiber(b.scheduler, b.contexts[static_cast<std::size_t>(t)]);
  };
  int remaining = b.threads;
  while (remaining > 0) {
    const long long round_start = b.switches;
    for (int i = 0; i < b.warps; ++i) {
      const int w = reverse ? b.warps - 1 - i : i;
      const int first = 32 * w, end = std::min(b.threads, first + 32);
      for (;;) {  // this warp's lanes in turn until none of them moves on
        const long long pass_start = b.switches;
        bool running = false;
        for (int j = first; j < end; ++j) {
          const int t = reverse ? first + end - 1 - j : j;
          if (b.done[static_cast<std::size_t>(t)]) continue;
          running = true;
          run(t);
        }
        if (!running || b.switches == pass_start) break;
      }
    }
    remaining = static_cast<int>(std::count(b.done.begin(), b.done.end(), false));
    if (remaining > 0 && b.switches == round_start) return false;
  }
  return true;
}

/// Why sm_90 (or a device with device_shared_bytes()) would refuse to launch `grid` blocks of `block` threads with `shared_bytes` of
/// dynamic shared memory (empty when it would not).
inline std::string configuration_error(dim3 grid, dim3 block, std::size_t shared_bytes) {
  const auto text = [](dim3 d) {
    return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
  };
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64)
    return "a block of " + text(block) + " threads (1 to 1024, z at most 64)";
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    return "a grid of " + text(grid) + " blocks (x 1 to 2^31 - 1, y and z 1 to 65535)";
  if (shared_bytes > device_shared_bytes())
    return std::to_string(shared_bytes) + " bytes of dynamic shared memory (at most " +
           std::to_string(device_shared_bytes()) + ")";
  return {};
}

/// Launches made so far on the calling OS thread.
inline thread_local unsigned long long launches_so_far = 0;

/// Runs kernel(args...) over `grid` blocks of `block` threads with `shared_bytes` of
/// dynamic shared memory; throws the first failed check of any thread, when the threads of
/// a block wait for each other forever, or when sm_90 would refuse the configuration.
template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, std::size_t shared_bytes, Kernel kernel, const Args&... args) {
  if (const std::string error = configuration_error(grid, block, shared_bytes); !error.empty())
    throw std::runtime_error("emulated launch: " + error);
  const int threads = static_cast<int>(block.x * block.y * block.z);
  unsigned char* const shared = shared_memory_buffer();
#if CONDENSE_EMULATION_ASAN
  // Under AddressSanitizer any access past the launch's dynamic shared memory is reported,
  // not only those of ldmatrix and cp.async.
  __asan_unpoison_memory_region(shared, shared_bytes);
  __asan_poison_memory_region(shared + shared_bytes, max_shared_bytes - shared_bytes);
#endif
  const unsigned long long launch_number = launches_so_far++;
  ++device_counters().launches;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        // Poison the shared memory: a kernel that reads what it never wrote sees NaNs.
        std::memset(shared, 0xff, shared_bytes);
        Block state(threads, shared, shared_bytes);
        state.body = [&] { kernel(args...); };
        Block* const outer = current_block;
        current_block = &state;
        blockIdx = uint3{bx, by, bz};
        blockDim = block;
        gridDim = grid;
        // Every other block runs its threads in reverse order (see run_block); which ones
        // alternates from launch to launch, so that one-block launches get both orders too.
        const bool reverse = (launch_number + (bz * grid.y + by) * grid.x + bx) % 2 == 1;
        const bool finished = run_block(state, reverse);
        current_block = outer;
        const std::string where =
            "block (" + std::to_string(bx) + ", " + std::to_string(by) + ", " + std::to_string(bz) + "): ";
        if (!finished)
          throw std::runtime_error(where + "its threads wait for each other forever (a barrier or collective not every thread reaches)");
        if (!state.error.empty()) throw std::runtime_error(where + state.error);
      }
    }
  }
}

// ---- what the emulated runtime (tests/emulation/device/) shares with the launches ------

/// One emulated cudaMalloc allocation and what the library's caching allocator does with it.
struct DeviceAllocation {
  std::size_t bytes = 0;   ///< as asked of cudaMalloc
  std::size_t in_use = 0;  ///< the leading bytes a live tensor (or scratch buffer) owns
  bool cached = false;     ///< freed into the caching allocator: no copy or launch may touch it
};

/// The emulated device's memory (host memory from the emulated cudaMalloc) and the kernels'
/// raised shared-memory limits (cudaFuncSetAttribute).
struct DeviceState {
  std::mutex mutex;
  std::map<std::uintptr_t, DeviceAllocation> allocations;  ///< by base address
  std::size_t allocated_bytes = 0;
  std::unordered_map<const void*, std::size_t> shared_limits;  ///< kernel -> max dynamic shared bytes
};
inline DeviceState& device_state() {
  static DeviceState* state = new DeviceState();  // never destroyed: late frees still find it
  return *state;
}

/// The allocation that holds address p (or ends at p), or nullptr; the caller holds s.mutex.
inline const DeviceAllocation* allocation_at(DeviceState& s, std::uintptr_t address, std::uintptr_t* base) {
  auto it = s.allocations.upper_bound(address);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  if (address - it->first > it->second.bytes) return nullptr;
  *base = it->first;
  return &it->second;
}

/// Whether the bytes [p, p + bytes) lie in the in-use part of one emulated device allocation
/// that is not cached (p may be that part's end when bytes is 0).
inline bool is_device_range(const void* p, std::size_t bytes) {
  DeviceState& s = device_state();
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  const std::lock_guard<std::mutex> lock(s.mutex);
  std::uintptr_t base = 0;
  const DeviceAllocation* a = allocation_at(s, address, &base);
  return a && !a->cached && address - base <= a->in_use && bytes <= a->in_use - (address - base);
}

/// Whether p points into (or at the end of) any emulated device allocation, cached or not.
inline bool in_device_memory(const void* p) {
  DeviceState& s = device_state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  std::uintptr_t base = 0;
  return allocation_at(s, reinterpret_cast<std::uintptr_t>(p), &base) != nullptr;
}

/// The library's caching allocator hands the block at p (from the emulated cudaMalloc) to a
/// tensor that needs its first `bytes`: copies, memsets and launches may use those bytes
/// only, and under AddressSanitizer the rest of the block is poisoned, so that a kernel
/// reading or writing past its tensor inside the rounded-up block is reported.
inline void block_in_use(void* p, std::size_t bytes) {
  DeviceState& s = device_state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  const auto it = s.allocations.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == s.allocations.end() || bytes > it->second.bytes)
    throw std::logic_error("emulated device: a block in use that cudaMalloc did not hand out");
  it->second.in_use = bytes;
  it->second.cached = false;
#if CONDENSE_EMULATION_ASAN
  __asan_unpoison_memory_region(p, bytes);
  __asan_poison_memory_region(static_cast<char*>(p) + bytes, it->second.bytes - bytes);
#endif
}

/// The caching allocator keeps the block at p for reuse: any copy, memset or launch that
/// touches it fails, and under AddressSanitizer a kernel's access to it is reported.
inline void block_cached(void* p) {
  DeviceState& s = device_state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  const auto it = s.allocations.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == s.allocations.end())
    throw std::logic_error("emulated device: a cached block that cudaMalloc did not hand out");
  it->second.in_use = 0;
  it->second.cached = true;
#if CONDENSE_EMULATION_ASAN
  __asan_poison_memory_region(p, it->second.bytes);
#endif
}

/// The error the next cudaGetLastError returns on the calling thread (launch configuration
/// errors land here, as on a GPU).
inline thread_local cudaError_t last_error = cudaSuccess;

/// A launch made by the library (detail::launch_kernel): a configuration sm_90 would refuse
/// sets the error cudaGetLastError returns, as on a GPU, and launches nothing; a pointer
/// argument outside the emulated device memory throws; the kernel then runs at once
/// (stream order is kept by running everything in call order).
template <class... Params, class... Args>
void launch_from_runtime(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t,
                         Args&&... args) {
  std::size_t limit = default_shared_bytes;
  {
    DeviceState& s = device_state();
    const std::lock_guard<std::mutex> lock(s.mutex);
    const auto it = s.shared_limits.find(reinterpret_cast<const void*>(kernel));
    if (it != s.shared_limits.end()) limit = it->second;
  }
  if (!configuration_error(grid, block, shared_bytes).empty()) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (shared_bytes > limit) {
    last_error = cudaErrorInvalidValue;  // what a launch above the kernel's limit returns
    return;
  }
  int position = 0;
  const auto check_pointer = [&position](const auto& arg) {
    ++position;
    if constexpr (std::is_pointer_v<std::decay_t<decltype(arg)>>) {
      if (arg != nullptr && !is_device_range(arg, 0))
        throw std::runtime_error("emulated launch: kernel argument " + std::to_string(position) +
                                 " points outside the device memory");
    }
  };
  (check_pointer(args), ...);
  launch(grid, block, shared_bytes, kernel, static_cast<Params>(std::forward<Args>(args))...);
}

}  // namespace condense_cuda_emulation

inline unsigned long long __cvta_generic_to_shared(const void* p) {
  const auto* byte = static_cast<const unsigned char*>(p);
  return static_cast<unsigned long long>(byte - condense_cuda_emulation::current_block->shared);
}
inline void __syncthreads() { condense_cuda_emulation::block_barrier(); }
/// shfl.sync.bfly (the value of lane ^ lane_mask) and shfl.sync.idx (the value of lane
/// `source`), for values of up to 8 bytes.
template <class V>
V __shfl_xor_sync(unsigned, V v, int lane_mask) {
  return condense_cuda_emulation::shuffle(v, [lane_mask](int l) { return l ^ lane_mask; });
}
template <class V>
V __shfl_sync(unsigned, V v, int source) {
  return condense_cuda_emulation::shuffle(v, [source](int) { return source % 32; });
}
/// vote.sync.any.pred: nonzero when `predicate` is nonzero on any lane of the warp.
inline int __any_sync(unsigned, int predicate) { return condense_cuda_emulation::vote_any(predicate != 0) ? 1 : 0; }
/// shfl.sync.up: the value of lane - offset, or the lane's own below `offset`.
template <class V>
V __shfl_up_sync(unsigned, V v, unsigned offset) {
  return condense_cuda_emulation::shuffle(v, [offset](int l) { return l >= static_cast<int>(offset) ? l - static_cast<int>(offset) : l; });
}

