// The CPU block allocator behind Storage: 64-byte aligned blocks; large blocks are kept in a
// size-class cache when freed and handed out again, so a training loop that allocates the
// same activation shapes every step stops paying for fresh pages (mmap + page faults) each
// time. cpu_memory_stats(), cpu_empty_cache() and set_cpu_cache_limit() control it.
#pragma once

#include <cstddef>
#include <new>

#include "condense/core/block_cache.hpp"

namespace condense {

/// Byte counts of the CPU allocator.
using CpuMemoryStats = MemoryStats;

namespace detail {

/// Host memory for the CPU block cache: 64-byte aligned operator new. Blocks below 64 KiB go
/// straight to the system allocator (it is fast for them) and are never cached.
struct CpuRawMemory {
  static constexpr std::size_t alignment = 64;
  static constexpr std::size_t min_cached_bytes = std::size_t{1} << 16;
  static constexpr std::size_t small_granule = 0;
  void* allocate(std::size_t bytes) noexcept { return ::operator new(bytes, std::align_val_t{alignment}, std::nothrow); }
  void free(void* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{alignment}); }
};

/// Process-wide CPU block cache (1 GiB of freed blocks at most by default).
class CpuBlockCache : public BlockCache<CpuRawMemory> {
 public:
  static constexpr std::size_t alignment = CpuRawMemory::alignment;
  static constexpr std::size_t min_cached_bytes = CpuRawMemory::min_cached_bytes;

  static CpuBlockCache& instance() {
    // Never destroyed: storages freed during static destruction still find it.
    static CpuBlockCache* cache = new CpuBlockCache();
    return *cache;
  }

  /// Allocates at least `bytes` (> 0) bytes; throws std::bad_alloc when the system has none.
  void* acquire(std::size_t bytes, std::size_t* granted) {
    void* p = BlockCache::acquire(bytes, granted);
    if (!p) throw std::bad_alloc();
    return p;
  }

 private:
  CpuBlockCache() : BlockCache(CpuRawMemory{}, std::size_t{1} << 30) {}
};

}  // namespace detail

/// Current CPU allocator byte counts.
inline CpuMemoryStats cpu_memory_stats() { return detail::CpuBlockCache::instance().stats(); }
/// Frees the CPU blocks kept for reuse.
inline void cpu_empty_cache() { detail::CpuBlockCache::instance().empty(); }
/// Sets the most bytes of freed CPU blocks kept for reuse (default 1 GiB; 0 disables the
/// cache) and frees what is cached now.
inline void set_cpu_cache_limit(std::size_t bytes) { detail::CpuBlockCache::instance().set_limit(bytes); }
/// Restarts peak_bytes from the current active bytes.
inline void reset_cpu_peak_memory() { detail::CpuBlockCache::instance().reset_peak(); }

}  // namespace condense
