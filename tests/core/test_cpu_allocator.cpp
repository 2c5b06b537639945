// The caching CPU allocator: size classes, reuse of freed large blocks, the cache limit,
// and the byte counters.
#include <doctest/doctest.h>

#include "condense/core/cpu_allocator.hpp"
#include "test_util.hpp"

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
