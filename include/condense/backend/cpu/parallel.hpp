// CPU threading: set_num_threads / get_num_threads (OpenMP, shared with Eigen's GEMM) and
// parallel_for, which splits an index range into one contiguous chunk per thread.
#pragma once

#include <algorithm>
#include <cstdint>

#include <omp.h>

#include "condense/core/error.hpp"

namespace condense {

/// Sets the number of CPU threads used by condense's loops and Eigen's GEMM.
inline void set_num_threads(int threads) {
  CONDENSE_CHECK(threads >= 1, "set_num_threads", "need at least one thread, got ", threads);
  omp_set_num_threads(threads);
}

/// Number of CPU threads condense's loops use.
inline int get_num_threads() { return omp_get_max_threads(); }

namespace cpu {

/// Calls fn(chunk_begin, chunk_end) over [begin, end) split across threads; ranges shorter
/// than 2*grain run on the calling thread. `fn` must not throw.
template <class Fn>
void parallel_for(std::int64_t begin, std::int64_t end, std::int64_t grain, Fn&& fn) {
  const std::int64_t n = end - begin;
  if (n <= 0) return;
  const std::int64_t max_by_grain = std::max<std::int64_t>(1, n / std::max<std::int64_t>(grain, 1));
  const int threads = omp_in_parallel() ? 1 : static_cast<int>(std::min<std::int64_t>(omp_get_max_threads(), max_by_grain));
  if (threads <= 1) {
    fn(begin, end);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const std::int64_t nt = omp_get_num_threads();
    const std::int64_t t = omp_get_thread_num();
    const std::int64_t chunk = (n + nt - 1) / nt;
    const std::int64_t b = begin + t * chunk;
    const std::int64_t e = std::min(end, b + chunk);
    if (b < e) fn(b, e);
  }
}

}  // namespace cpu
}  // namespace condense
