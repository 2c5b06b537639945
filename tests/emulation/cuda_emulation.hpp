// A CPU emulation of the parts of the CUDA execution model that the tensor-core attention
// kernels (kernels/attention/flash_attention_mma.cuh) use, so that those kernels run on the
// host, unchanged, in every CI build: no GPU is needed to find an indexing or layout bug in
// them.
//
// - Every thread of a block is a fiber (ucontext) on the calling OS thread; the threads of a
//   block take turns, blocks run one after another. __syncthreads() waits for every thread
//   of the block; a block whose threads would wait for each other forever fails.
// - The warp-collective instructions (mma.sync.m16n8k16, ldmatrix.x4 with and without
//   .trans, shfl.sync idx and bfly) gather the operands of the warp's 32 threads and compute what the
//   PTX ISA defines for each lane.
//   The fragment layouts here are written out from the ISA's tables, independently of
//   condense/backend/cuda/mma_layout.hpp, which the kernels use to form their addresses.
// - Shared memory is one buffer per launch; every ldmatrix and cp.async is bounds-checked
//   against the dynamic size the launch asked for. cp.async copies at once (so the test
//   cannot see a missing wait, only wrong addresses and wrong data).
//
// Define CONDENSE_CUDA_EMULATION, include this header, then the kernel headers; define the
// kernels' `extern __shared__` arrays with CONDENSE_EMULATED_SHARED_MEMORY(namespace) in one
// translation unit and pass them to launch() (shared_array(namespace::smem)).
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
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <functional>
#include <ucontext.h>
#include <vector>

// ---- the built-in variables and functions a kernel sees ---------------------------------

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
// A kernel's static __shared__ arrays become function-local statics: one copy that every
// thread (fiber) of the block sees, as on the GPU (blocks run one at a time).
#undef __shared__
#define __shared__ static
// Dynamic shared memory: the namespace's array of CONDENSE_EMULATED_SHARED_MEMORY.
#define CONDENSE_DYNAMIC_SHARED_MEMORY(name) extern unsigned char name[]

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}

namespace condense_cuda_emulation {

// ---- fibers: a stack per emulated thread, switched without a system call ---------------

#if defined(__x86_64__) && !defined(CONDENSE_EMULATION_UCONTEXT)
/// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
/// stores the stack pointer in *save and continues on the stack `load` (saved the same way,
/// or prepared by new_fiber_stack). ucontext's swapcontext does the same plus a system call
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

/// A suspended fiber: its saved stack pointer.
struct FiberContext {
  void* stack_pointer = nullptr;
};
inline void switch_fiber(FiberContext& from, const FiberContext& to) {
  condense_emulation_switch_stack(&from.stack_pointer, to.stack_pointer);
}
/// Prepares `fiber` to start entry() on the stack [base, base + bytes) at its first switch.
inline void new_fiber(FiberContext& fiber, char* base, std::size_t bytes, void (*entry)(), FiberContext&) {
  auto top = reinterpret_cast<std::uintptr_t>(base + bytes) & ~static_cast<std::uintptr_t>(15);
  auto* slot = reinterpret_cast<std::uint64_t*>(top);
  *--slot = 0;                                        // entry() starts as if called: rsp = 8 (mod 16)
  *--slot = reinterpret_cast<std::uint64_t>(entry);   // where the first switch returns to
  for (int r = 0; r < 6; ++r) *--slot = 0;            // rbp, rbx, r12..r15
  *--slot = 0x1F80ull | (0x037Full << 32);             // MXCSR and x87 control word: the defaults
  fiber.stack_pointer = slot;
}
#else
/// A suspended fiber (ucontext elsewhere than on x86-64).
struct FiberContext {
  ucontext_t context{};
};
inline void switch_fiber(FiberContext& from, const FiberContext& to) { swapcontext(&from.context, &to.context); }
inline void new_fiber(FiberContext& fiber, char* base, std::size_t bytes, void (*entry)(), FiberContext& link) {
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = base;
  fiber.context.uc_stack.ss_size = bytes;
  fiber.context.uc_link = &link.context;
  makecontext(&fiber.context, entry, 0);
}
#endif

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

/// The array a kernel declares as `extern __shared__` (its namespace's `smem`, defined by
/// CONDENSE_EMULATED_SHARED_MEMORY), which every launch of that kernel uses.
struct SharedArray {
  unsigned char* base = nullptr;
  std::size_t capacity = 0;
};
template <std::size_t N>
SharedArray shared_array(unsigned char (&array)[N]) {
  return {array, N};
}

/// Stack bytes of one emulated thread.
inline constexpr std::size_t fiber_stack_bytes = 256 * 1024;

/// The entry of every fiber: the kernel call, then back to the scheduler for good.
inline void fiber_entry() {
  Block& b = *current_block;
  b.body();
  b.done[static_cast<std::size_t>(b.current)] = true;
  for (;;) yield();  // never resumed once done
}

/// Runs the threads of `b` until all have returned; false when they wait for each other
/// forever (a barrier or collective that not every thread reaches).
inline bool run_block(Block& b, std::vector<std::unique_ptr<char[]>>& stacks) {
  for (int t = 0; t < b.threads; ++t)
    new_fiber(b.contexts[static_cast<std::size_t>(t)], stacks[static_cast<std::size_t>(t)].get(), fiber_stack_bytes, fiber_entry,
              b.scheduler);
  int remaining = b.threads;
  while (remaining > 0) {
    const long long before = b.switches;
    remaining = 0;
    for (int t = 0; t < b.threads; ++t) {
      if (b.done[static_cast<std::size_t>(t)]) continue;
      b.current = t;
      const auto linear = static_cast<unsigned>(t);
      threadIdx = uint3{linear % blockDim.x, (linear / blockDim.x) % blockDim.y, linear / (blockDim.x * blockDim.y)};
      switch_fiber(b.scheduler, b.contexts[static_cast<std::size_t>(t)]);
      if (!b.done[static_cast<std::size_t>(t)]) ++remaining;
    }
    if (remaining > 0 && b.switches == before) return false;
  }
  return true;
}

/// Runs kernel(args...) over `grid` blocks of `block` threads with `shared_bytes` of
/// dynamic shared memory; throws the first failed check of any thread, or when the
/// threads of a block wait for each other forever.
template <class Kernel, class... Args>
void launch(SharedArray shared, dim3 grid, dim3 block, std::size_t shared_bytes, Kernel kernel, const Args&... args) {
  if (shared_bytes > shared.capacity)
    throw std::runtime_error("emulated launch asks for " + std::to_string(shared_bytes) + " bytes of shared memory, more than " +
                             std::to_string(shared.capacity));
  if (grid.z != 1) throw std::runtime_error("emulated launch: 1-D and 2-D grids only");
  const int threads = static_cast<int>(block.x * block.y * block.z);
  std::vector<std::unique_ptr<char[]>> stacks;
  for (int t = 0; t < threads; ++t) stacks.push_back(std::make_unique<char[]>(fiber_stack_bytes));
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      // Poison the shared memory: a kernel that reads what it never wrote sees NaNs.
      std::memset(shared.base, 0xff, shared_bytes);
      Block state(threads, shared.base, shared_bytes);
      state.body = [&] { kernel(args...); };
      Block* const outer = current_block;
      current_block = &state;
      blockIdx = uint3{bx, by, 0};
      blockDim = block;
      gridDim = grid;
      const bool finished = run_block(state, stacks);
      current_block = outer;
      const std::string where = "block (" + std::to_string(bx) + ", " + std::to_string(by) + "): ";
      if (!finished) throw std::runtime_error(where + "its threads wait for each other forever (a barrier or collective not every thread reaches)");
      if (!state.error.empty()) throw std::runtime_error(where + state.error);
    }
  }
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
/// shfl.sync.up: the value of lane - offset, or the lane's own below `offset`.
template <class V>
V __shfl_up_sync(unsigned, V v, unsigned offset) {
  return condense_cuda_emulation::shuffle(v, [offset](int l) { return l >= static_cast<int>(offset) ? l - static_cast<int>(offset) : l; });
}

/// Defines the `extern __shared__` array `smem` the kernels of namespace NS declare (in one
/// translation unit), with the largest dynamic shared memory of a block on sm_90.
#define CONDENSE_EMULATED_SHARED_MEMORY(NS) \
  namespace NS {                            \
  alignas(16) unsigned char smem[232448];   \
  }
