// The caching CPU allocator: size classes, reuse of freed large blocks, the cache limit,
// and the byte counters.
#include <doctest/doctest.h>

#include "condense/core/cpu_allocator.hpp"
#include "test_util.hpp"

namespace test_cpu_allocator {

using namespace condense;
using detail::CpuBlockCache;

TEST_CASE("cpu allocator: size classes round up by at most a quarter") {
  CHECK(CpuBlockCache::size_class(1000) == 1000);
  CHECK(CpuBlockCache::size_class(1 << 16) == (1 << 16));
  CHECK(CpuBlockCache::size_class((1 << 20) + 1) == (1 << 20) + (1 << 18));
  CHECK(CpuBlockCache::size_class((1 << 20) + (1 << 18)) == (1 << 20) + (1 << 18));
  CHECK(CpuBlockCache::size_class((1 << 21) - 64) == (1 << 21));
  for (std::size_t n = 1 << 16; n < (std::size_t{1} << 26); n = n * 13 / 10 + 64) {
    const std::size_t c = CpuBlockCache::size_class(n);
    CHECK(c >= n);
    CHECK(c <= n + n / 4);
    CHECK(c % 64 == 0);
  }
}

TEST_CASE("cpu allocator: a freed large block is reused and the counters follow") {
  cpu_empty_cache();
  const auto before = cpu_memory_stats();
  const void* first = nullptr;
  {
    auto t = Tensor<float>::empty({1000, 1000});
    first = t.data();
    CHECK(cpu_memory_stats().active_bytes >= before.active_bytes + 4000000);
  }
  const auto after_free = cpu_memory_stats();
  CHECK(after_free.active_bytes == before.active_bytes);
  CHECK(after_free.cached_bytes >= 4000000);
  CHECK(after_free.peak_bytes >= before.active_bytes + 4000000);
  {
    auto t = Tensor<float>::empty({999, 1001});  // same size class
    CHECK(static_cast<const void*>(t.data()) == first);
    CHECK(cpu_memory_stats().hits == after_free.hits + 1);
  }
  cpu_empty_cache();
  CHECK(cpu_memory_stats().cached_bytes == 0);
}

TEST_CASE("cpu allocator: a zero limit disables the cache; small blocks are never cached") {
  set_cpu_cache_limit(0);
  { auto t = zeros<double>({512, 512}); }
  CHECK(cpu_memory_stats().cached_bytes == 0);
  set_cpu_cache_limit(std::size_t{1} << 30);
  cpu_empty_cache();
  { auto t = zeros<float>({16}); }
  CHECK(cpu_memory_stats().cached_bytes == 0);
}

TEST_CASE("cpu allocator: reused blocks hold correct results") {
  Generator gen(3);
  for (int round = 0; round < 3; ++round) {
    const auto a = randn<double>({300, 300}, gen);
    const auto b = full<double>({300, 300}, 2.0);
    const auto c = add(a, b);
    const auto av = a.to_vector(), cv = c.to_vector();
    for (std::size_t i = 0; i < av.size(); i += 997) CHECK(cv[i] == doctest::Approx(av[i] + 2.0));
  }
}

namespace {

/// Fake raw memory for BlockCache: hands out distinct addresses from a counter, fails
/// once `capacity` bytes are live, and counts calls.
struct FakeRawMemory {
  static constexpr std::size_t min_cached_bytes = 1;
  static constexpr std::size_t small_granule = 512;
  struct Counters {
    std::size_t live = 0, capacity = 1 << 20, allocations = 0, frees = 0;
    std::uintptr_t next = 0x1000;
  };
  Counters* counters;
  void* allocate(std::size_t bytes) noexcept {
    if (counters->live + bytes > counters->capacity) return nullptr;
    counters->live += bytes;
    ++counters->allocations;
    void* p = reinterpret_cast<void*>(counters->next);
    counters->next += bytes;
    return p;
  }
  void free(void*, std::size_t bytes) noexcept {
    counters->live -= bytes;
    ++counters->frees;
  }
};

}  // namespace

TEST_CASE("block cache: small sizes round to the granule, large ones to quarter classes") {
  using Cache = detail::BlockCache<FakeRawMemory>;
  CHECK(Cache::size_class(1) == 512);
  CHECK(Cache::size_class(512) == 512);
  CHECK(Cache::size_class(513) == 1024);
  CHECK(Cache::size_class(4096) == 4096);
  CHECK(Cache::size_class(4097) == 5120);
  CHECK(Cache::size_class((1 << 20) + 1) == (1 << 20) + (1 << 18));
}

TEST_CASE("block cache: blocks are reused within their pool only") {
  FakeRawMemory::Counters counters;
  detail::BlockCache<FakeRawMemory> cache(FakeRawMemory{&counters});
  std::size_t granted = 0;
  void* a = cache.acquire(3000, &granted, /*pool=*/7);
  CHECK(granted == 3072);
  cache.release(a, granted, 7);
  CHECK(cache.stats().cached_bytes == 3072);
  CHECK(cache.stats().active_bytes == 0);
  std::size_t other = 0;
  void* b = cache.acquire(3000, &other, /*pool=*/8);  // another stream: fresh memory
  CHECK(b != a);
  CHECK(counters.allocations == 2);
  void* c = cache.acquire(2900, &granted, 7);  // same pool, same class: the cached block
  CHECK(c == a);
  CHECK(cache.stats().hits == 1);
  CHECK(cache.stats().misses == 2);
  CHECK(cache.stats().active_bytes == 2 * 3072);
  CHECK(cache.stats().peak_bytes == 2 * 3072);
  cache.release(b, other, 8);
  cache.release(c, granted, 7);
  cache.empty();
  CHECK(counters.frees == 2);
  CHECK(counters.live == 0);
  CHECK(cache.stats().cached_bytes == 0);
}

TEST_CASE("block cache: when fresh memory runs out the cache is emptied and the allocation retried") {
  FakeRawMemory::Counters counters;
  counters.capacity = 10000;
  detail::BlockCache<FakeRawMemory> cache(FakeRawMemory{&counters});
  std::size_t g1 = 0, g2 = 0, g3 = 0;
  void* a = cache.acquire(4096, &g1, 1);
  cache.release(a, g1, 1);  // cached, still counted live by the raw memory
  void* b = cache.acquire(8000, &g2, 2);  // needs the cached block's memory back
  CHECK(b != nullptr);
  CHECK(counters.frees == 1);
  CHECK(cache.stats().cached_bytes == 0);
  CHECK(cache.acquire(8000, &g3, 2) == nullptr);  // nothing left to give back
  CHECK(cache.stats().active_bytes == g2);
  cache.release(b, g2, 2);
}

TEST_CASE("block cache: the limit bounds what is kept") {
  FakeRawMemory::Counters counters;
  detail::BlockCache<FakeRawMemory> cache(FakeRawMemory{&counters}, 4096);
  std::size_t g1 = 0, g2 = 0;
  void* a = cache.acquire(4096, &g1);
  void* b = cache.acquire(4096, &g2);
  cache.release(a, g1);
  cache.release(b, g2);  // over the limit: freed at once
  CHECK(cache.stats().cached_bytes == 4096);
  CHECK(counters.frees == 1);
  cache.set_limit(0);
  CHECK(counters.frees == 2);
}

}  // namespace test_cpu_allocator
