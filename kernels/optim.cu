// CUDA launchers of the optimizers and of gradient clipping (kernels and launch plans in
// detail/optim_kernels.cuh): the fused AdamW update over a list of parameter tensors (a few
// launches for all of them, detail/tensor_list.cuh; the CPU loop's formulas in the same
// order), also for 16-bit parameters through float master weights in one pass; the fused
// SGD update, over a list too; the sum of squares of every gradient behind the global
// gradient norm (per-chunk partial sums in double, then one block per tensor adding its
// partials in order, so each result depends on the tensor's size alone and never on
// timing); and the scaling of every gradient by the clipping factor.
#include <algorithm>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "condense/backend/cuda/optim_kernels.hpp"
#include "detail/common.cuh"
#include "detail/optim_kernels.cuh"
#include "detail/tensor_list.cuh"

namespace condense::cuda {
namespace {

using namespace detail;
using namespace optim_detail;

void check_count(std::int64_t n, std::string_view op) { CONDENSE_CHECK(n >= 0, op, "negative element count ", n); }

}  // namespace

namespace {

/// Queues the multi-tensor AdamW launches over `entries` (Master: through float masters).
template <class T, bool Master>
void launch_adamw_list(int device, const AdamWListEntry* entries, std::size_t count, std::string_view op) {
  const cudaStream_t stream = stream_of(device);
  for_each_adamw_launch<T>(entries, count, [&](const AdamWLaunch<compute_t<T>>& batch, int blocks) {
    detail::launch_kernel(adamw_list_kernel<T, Master>, static_cast<unsigned>(blocks), list_threads, 0, stream, batch);
    check_launch(op);
  });
}

/// Checks the entries of a list launcher: counts >= 0, the pointers of non-empty tensors set
/// (masters too when `master`).
void check_entries(const AdamWListEntry* entries, std::size_t count, bool master, std::string_view op) {
  CONDENSE_CHECK(count == 0 || entries != nullptr, op, "no AdamW entries for ", count, " tensors");
  for (std::size_t i = 0; i < count; ++i) {
    const AdamWListEntry& e = entries[i];
    check_count(e.n, op);
    CONDENSE_CHECK(e.n == 0 || (e.param && e.grad && e.exp_avg && e.exp_avg_sq && (!master || e.master)), op,
                   "AdamW entry ", i, " of ", e.n, " elements misses a buffer");
  }
}

}  // namespace

void adamw_step_list(DType dtype, int device, const AdamWListEntry* entries, std::size_t count, std::string_view op) {
  check_entries(entries, count, false, op);
  if (count == 0) return;
  use_device(device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    launch_adamw_list<decltype(tag), false>(device, entries, count, op);
  });
}

void adamw_master_step_list(DType dtype, int device, const AdamWListEntry* entries, std::size_t count,
                            std::string_view op) {
  CONDENSE_CHECK(dtype == DType::BFloat16 || dtype == DType::Float16, op,
                 "the master-weight AdamW step takes bfloat16 or float16 parameters, got ", dtype_name(dtype));
  check_entries(entries, count, true, op);
  if (count == 0) return;
  use_device(device, op);
  dispatch_dtype<::condense::bfloat16, ::condense::float16>(dtype, op, [&](auto tag) {
    launch_adamw_list<decltype(tag), true>(device, entries, count, op);
  });
}

void sgd_step_list(DType dtype, int device, const SGDListEntry* entries, std::size_t count, std::string_view op) {
  CONDENSE_CHECK(count == 0 || entries != nullptr, op, "no SGD entries for ", count, " tensors");
  for (std::size_t i = 0; i < count; ++i) {
    const SGDListEntry& e = entries[i];
    check_count(e.n, op);
    CONDENSE_CHECK(e.n == 0 || (e.param && e.grad), op, "SGD entry ", i, " of ", e.n, " elements misses a buffer");
    CONDENSE_CHECK(!e.args.use_momentum || e.momentum_buffer != nullptr || e.n == 0, op, "SGD with momentum needs a buffer");
  }
  if (count == 0) return;
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    for_each_sgd_launch<T>(entries, count, [&](const SGDLaunch<C>& batch, int blocks) {
      detail::launch_kernel(sgd_list_kernel<T>, static_cast<unsigned>(blocks), list_threads, 0, stream, batch);
      check_launch(op);
    });
  });
}

void sum_of_squares_list(DType dtype, int device, const void* const* xs, const std::int64_t* ns, std::size_t count,
                         double* out, std::string_view op) {
  CONDENSE_CHECK(count == 0 || (xs && ns && out), op, "no sum-of-squares operands for ", count, " tensors");
  std::int64_t partials = 0;
  for (std::size_t i = 0; i < count; ++i) {
    check_count(ns[i], op);
    CONDENSE_CHECK(ns[i] == 0 || xs[i], op, "sum-of-squares operand ", i, " of ", ns[i], " elements is null");
    partials += list_chunks(ns[i]);
  }
  if (count == 0) return;
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  std::vector<std::int64_t> first;
  partial_layout(ns, count, first);
  const DeviceScratch scratch(static_cast<std::size_t>(partials) * sizeof(double), device, op);
  double* partial = static_cast<double*>(scratch.get());
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    for_each_squares_launch(xs, ns, count, first, [&](const SquaresLaunch& batch, int blocks) {
      detail::launch_kernel(sum_of_squares_chunks<T>, static_cast<unsigned>(blocks), list_threads, 0, stream, batch,
                            partial);
      check_launch(op);
    });
  });
  for_each_partial_sums_launch(ns, count, first, [&](const PartialRanges& ranges, std::size_t tensors, std::size_t begin) {
    detail::launch_kernel(sum_tensor_partials, static_cast<unsigned>(tensors), list_threads, 0, stream, partial, ranges,
                          out + begin);
    check_launch(op);
  });
}

void scale_list(DType dtype, int device, void* const* dsts, const void* const* srcs, const std::int64_t* ns,
                std::size_t count, double coef, std::string_view op) {
  CONDENSE_CHECK(count == 0 || (dsts && srcs && ns), op, "no operands to scale for ", count, " tensors");
  for (std::size_t i = 0; i < count; ++i) {
    check_count(ns[i], op);
    CONDENSE_CHECK(ns[i] == 0 || (dsts[i] && srcs[i]), op, "scaled tensor ", i, " of ", ns[i], " elements is null");
  }
  if (count == 0) return;
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    for_each_scale_launch(dsts, srcs, ns, count, [&](const ScaleLaunch& batch, int blocks) {
      detail::launch_kernel(scale_chunks<T>, static_cast<unsigned>(blocks), list_threads, 0, stream, batch,
                            static_cast<compute_t<T>>(coef));
      check_launch(op);
    });
  });
}

}  // namespace condense::cuda
