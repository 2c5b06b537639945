// Smoke mode of the GPU benchmarks: with CONDENSE_BENCH_SMOKE set (to anything but "0")
// every benchmark runs once on tiny sizes. The build runs the bench_cuda_* binaries that
// way against the emulated CUDA backend (bench/CMakeLists.txt), so that a benchmark that
// would throw, skip or fail its own checks on a GPU is found before any device time is
// spent on it. Smoke-mode figures mean nothing.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace condense::bench {

/// Whether CONDENSE_BENCH_SMOKE asks for smoke mode.
inline bool smoke_mode() {
  static const bool smoke = [] {
    const char* value = std::getenv("CONDENSE_BENCH_SMOKE");
    return value != nullptr && *value != '\0' && std::strcmp(value, "0") != 0;
  }();
  return smoke;
}

/// `full`, or `smoke` in smoke mode.
inline std::int64_t bench_size(std::int64_t full, std::int64_t smoke) { return smoke_mode() ? smoke : full; }

/// For Benchmark::Apply: one iteration in smoke mode, the library's own choice otherwise.
inline void once_in_smoke_mode(benchmark::internal::Benchmark* b) {
  if (smoke_mode()) b->Iterations(1);
}

}  // namespace condense::bench
