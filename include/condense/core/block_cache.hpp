// BlockCache: the size-class caching allocator shared by the CPU allocator
// (core/cpu_allocator.hpp) and the CUDA allocator (kernels/runtime.cu). Freed blocks are
// kept per (pool, size class) and handed out again, so a training loop that allocates the
// same activation shapes every step stops paying for fresh memory each time. A pool is an
// opaque number chosen by the caller: the CUDA allocator passes the stream, so a block is
// only reused in the stream order of the work that freed it. The raw memory source is a
// parameter, which lets the tests drive the cache with a fake one.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace condense {

/// Byte counts of a caching allocator (CPU or one CUDA device).
struct MemoryStats {
  std::size_t active_bytes = 0;  ///< held by live storages (size-class rounded for cached sizes)
  std::size_t peak_bytes = 0;    ///< highest active_bytes since start or reset_peak
  std::size_t cached_bytes = 0;  ///< freed blocks kept for reuse
  std::size_t hits = 0;          ///< allocations served from the cache
  std::size_t misses = 0;        ///< cacheable allocations that needed fresh memory
};

namespace detail {

/// A caching allocator over `RawMemory`, which provides
///   void* allocate(std::size_t bytes) noexcept   (nullptr when out of memory),
///   void free(void* ptr, std::size_t bytes) noexcept,
///   static constexpr std::size_t min_cached_bytes  (smaller blocks bypass the cache),
///   static constexpr std::size_t small_granule     (sizes up to 8 granules round to a
///                                                    multiple of it; 0: no small classes).
/// Thread-safe.
template <class RawMemory>
class BlockCache {
 public:
  explicit BlockCache(RawMemory raw = RawMemory{}, std::size_t limit = std::numeric_limits<std::size_t>::max())
      : raw_(std::move(raw)), limit_(limit) {}
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;
  ~BlockCache() { empty(); }

  /// Rounds a cacheable size up to its class: a multiple of small_granule up to 8 granules,
  /// then 2^k * {1, 1.25, 1.5, 1.75} (at most 25% slack). Uncached sizes stay as they are.
  static constexpr std::size_t size_class(std::size_t bytes) {
    if (bytes < RawMemory::min_cached_bytes) return bytes;
    constexpr std::size_t granule = RawMemory::small_granule;
    if (granule > 0 && bytes <= 8 * granule) return std::max<std::size_t>(1, (bytes + granule - 1) / granule) * granule;
    if (bytes <= 4) return bytes;
    const std::size_t top = std::bit_floor(bytes);
    const std::size_t quarter = top / 4;
    return top + (bytes - top + quarter - 1) / quarter * quarter;
  }

  /// Allocates at least `bytes` (> 0) bytes for `pool`; `*granted` receives the size to pass
  /// to release(). On a failed fresh allocation the cache is emptied and the allocation
  /// retried once; returns nullptr when that fails too.
  void* acquire(std::size_t bytes, std::size_t* granted, std::uintptr_t pool = 0) {
    const std::size_t size = size_class(bytes);
    *granted = size;
    const bool cacheable = size >= RawMemory::min_cached_bytes;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cacheable) {
        auto it = free_.find({pool, size});
        if (it != free_.end() && !it->second.empty()) {
          void* p = it->second.back();
          it->second.pop_back();
          stats_.cached_bytes -= size;
          ++stats_.hits;
          note_active(size);
          return p;
        }
        ++stats_.misses;
      }
      note_active(size);
    }
    void* p = raw_.allocate(size);
    if (!p) {
      empty();
      p = raw_.allocate(size);
    }
    if (!p) {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.active_bytes -= size;
    }
    return p;
  }

  /// Returns a block from acquire() with the same `pool`; it is kept for reuse when it is
  /// cacheable and fits under the cache limit, otherwise freed.
  void release(void* p, std::size_t granted, std::uintptr_t pool = 0) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.active_bytes -= granted;
      if (granted >= RawMemory::min_cached_bytes && stats_.cached_bytes + granted <= limit_) {
        free_[{pool, granted}].push_back(p);
        stats_.cached_bytes += granted;
        return;
      }
    }
    raw_.free(p, granted);
  }

  /// Frees every cached block.
  void empty() {
    std::map<std::pair<std::uintptr_t, std::size_t>, std::vector<void*>> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      stats_.cached_bytes = 0;
    }
    for (auto& [key, list] : blocks)
      for (void* p : list) raw_.free(p, key.second);
  }

  MemoryStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }
  /// Restarts peak_bytes from the current active bytes.
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes = stats_.active_bytes;
  }
  /// Sets the most bytes kept in the cache and frees what is cached now.
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
  void note_active(std::size_t bytes) {
    stats_.active_bytes += bytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.active_bytes);
  }

  RawMemory raw_;
  mutable std::mutex mutex_;
  std::map<std::pair<std::uintptr_t, std::size_t>, std::vector<void*>> free_;
  MemoryStats stats_;
  std::size_t limit_;
};

}  // namespace detail
}  // namespace condense
