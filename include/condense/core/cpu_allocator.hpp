// The CPU block allocator behind Storage: 64-byte aligned blocks; large blocks are kept in a
// size-class cache when freed and handed out again, so a training loop that allocates the
// same activation shapes every step stops paying for fresh pages (mmap + page faults) each
// time. cpu_memory_stats(), cpu_empty_cache() and set_cpu_cache_limit() control it.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace condense {

/// Byte counts of the CPU allocator.
struct CpuMemoryStats {
  std::size_t active_bytes = 0;  ///< held by live storages (size-class rounded for cached sizes)
  std::size_t peak_bytes = 0;    ///< highest active_bytes since start or reset_peak
  std::size_t cached_bytes = 0;  ///< freed blocks kept for reuse
  std::size_t hits = 0;          ///< allocations served from the cache
  std::size_t misses = 0;        ///< cacheable allocations that needed fresh memory
};

namespace detail {

/// Process-wide CPU block cache. Blocks below `min_cached_bytes` go straight to the system
/// allocator (it is fast for them); larger sizes are rounded up to one of four classes per
/// power of two (at most 25% slack) and reused by exact class.
class CpuBlockCache {
 public:
  static constexpr std::size_t alignment = 64;
  static constexpr std::size_t min_cached_bytes = std::size_t{1} << 16;

  static CpuBlockCache& instance() {
    // Never destroyed: storages freed during static destruction still find it.
    static CpuBlockCache* cache = new CpuBlockCache();
    return *cache;
  }

  /// Rounds a cacheable size up to its class: 2^k * {1, 1.25, 1.5, 1.75}.
  static std::size_t size_class(std::size_t bytes) {
    if (bytes <= min_cached_bytes) return bytes;
    const std::size_t top = std::bit_floor(bytes);
    const std::size_t quarter = top / 4;
    return top + (bytes - top + quarter - 1) / quarter * quarter;
  }

  /// Allocates at least `bytes` (> 0) bytes; `*granted` receives the size to pass to release().
  void* acquire(std::size_t bytes, std::size_t* granted) {
    if (bytes < min_cached_bytes) {
      *granted = bytes;
      void* p = ::operator new(bytes, std::align_val_t{alignment});
      std::lock_guard<std::mutex> lock(mutex_);
      note_active(bytes);
      return p;
    }
    const std::size_t size = size_class(bytes);
    *granted = size;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= size;
        ++stats_.hits;
        note_active(size);
        return p;
      }
      ++stats_.misses;
      note_active(size);
    }
    try {
      return ::operator new(size, std::align_val_t{alignment});
    } catch (...) {
      empty();  // give cached memory back and retry once
      try {
        return ::operator new(size, std::align_val_t{alignment});
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.active_bytes -= size;
        throw;
      }
    }
  }

  /// Returns a block from acquire(); it is cached when it fits under the cache limit.
  void release(void* p, std::size_t granted) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.active_bytes -= granted;
      if (granted >= min_cached_bytes && stats_.cached_bytes + granted <= limit_) {
        free_[granted].push_back(p);
        stats_.cached_bytes += granted;
        return;
      }
    }
    ::operator delete(p, std::align_val_t{alignment});
  }

  /// Frees every cached block.
  void empty() {
    std::map<std::size_t, std::vector<void*>> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      stats_.cached_bytes = 0;
    }
    for (auto& [size, list] : blocks) {
      for (void* p : list) ::operator delete(p, std::align_val_t{alignment});
    }
  }

  CpuMemoryStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes = stats_.active_bytes;
  }
  void set_limit(std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
    }
    empty();
  }
  std::size_t limit() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }

 private:
  CpuBlockCache() = default;
  void note_active(std::size_t bytes) {
    stats_.active_bytes += bytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.active_bytes);
  }

  mutable std::mutex mutex_;
  std::map<std::size_t, std::vector<void*>> free_;
  CpuMemoryStats stats_;
  std::size_t limit_ = std::size_t{1} << 30;
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
