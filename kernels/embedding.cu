// Embedding CUDA kernels. Forward: a grid-stride gather of table rows by id that copies
// 16-, 8-, 4-, 2- or 1-byte units (the widest the row size and both pointers' alignment
// allow), so it serves every element type. Backward: the gradient table is zeroed with one
// memset, then only the rows some id hits are written, from a plan built on the host (see
// EmbeddingGradWork): each work item sums the gradient rows of at most embedding_grad_chunk
// sorted positions, in order, into its table row or into a partial row; a second kernel
// sums the partial rows of the often-hit ids in order. No atomics: the result is
// deterministic. Accumulation in float for float and the 16-bit types, double for double.
#include <cstdint>

#include "condense/backend/cuda/lookup_kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

constexpr int gather_threads = 256;
constexpr int grad_threads = 256;

/// out[i] = table[ids[i / units_per_row] * units_per_row + i % units_per_row] for the
/// n * units_per_row units of the output.
template <class Unit, class I>
__global__ void gather_rows(Unit* out, const Unit* table, const I* ids, std::int64_t n, std::int64_t units_per_row) {
  const std::int64_t total = n * units_per_row;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const std::int64_t position = i / units_per_row;
    const std::int64_t unit = i - position * units_per_row;
    out[i] = table[static_cast<std::int64_t>(ids[position]) * units_per_row + unit];
  }
}

/// True when rows of `row_bytes` at `a` and `b` can be copied in units of `Unit`.
template <class Unit>
bool copies_in(const void* a, const void* b, std::int64_t row_bytes) {
  constexpr auto size = static_cast<std::int64_t>(sizeof(Unit));
  return row_bytes % size == 0 && reinterpret_cast<std::uintptr_t>(a) % size == 0 &&
         reinterpret_cast<std::uintptr_t>(b) % size == 0;
}

template <class Unit, class I>
void launch_gather(void* out, const void* table, std::int64_t row_bytes, const I* ids, std::int64_t n, cudaStream_t stream) {
  const std::int64_t units = row_bytes / static_cast<std::int64_t>(sizeof(Unit));
  detail::launch_kernel(gather_rows<Unit, I>, grid_for(n * units, gather_threads), gather_threads, 0, stream,
                        static_cast<Unit*>(out), static_cast<const Unit*>(table), ids, n, units);
}

/// Threads of a block form groups of `lanes` threads (a power of two, 32..grad_threads);
/// each group takes one work item at a time and its lanes stride over the dim columns.
int lanes_for(std::int64_t dim) {
  int lanes = 32;
  while (lanes < grad_threads && lanes < dim) lanes *= 2;
  return lanes;
}

/// Each item sums grad_out rows order[begin] .. order[end - 1], in that order, into table
/// row `destination` (>= 0) or partial row -1 - destination.
template <class T, class A>
__global__ void sum_items(T* grad_table, A* partials, const T* grad_out, const std::int64_t* order,
                          const std::int64_t* items, std::int64_t item_count, std::int64_t dim, int lanes) {
  const int groups = blockDim.x / lanes;
  const int group = threadIdx.x / lanes, lane = threadIdx.x % lanes;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * groups;
  for (std::int64_t item = static_cast<std::int64_t>(blockIdx.x) * groups + group; item < item_count; item += stride) {
    const std::int64_t destination = items[3 * item], begin = items[3 * item + 1], end = items[3 * item + 2];
    for (std::int64_t j = lane; j < dim; j += lanes) {
      A acc = 0;
#pragma unroll 8
      for (std::int64_t k = begin; k < end; ++k) acc += static_cast<A>(load(grad_out + order[k] * dim + j));
      if (destination >= 0) {
        grad_table[destination * dim + j] = to_element<T>(acc);
      } else {
        partials[(-1 - destination) * dim + j] = acc;
      }
    }
  }
}

/// Each heavy row (row, first, count) sums partial rows first .. first + count - 1 in order
/// into its table row.
template <class T, class A>
__global__ void sum_partials(T* grad_table, const A* partials, const std::int64_t* heavy, std::int64_t heavy_count,
                             std::int64_t dim, int lanes) {
  const int groups = blockDim.x / lanes;
  const int group = threadIdx.x / lanes, lane = threadIdx.x % lanes;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * groups;
  for (std::int64_t h = static_cast<std::int64_t>(blockIdx.x) * groups + group; h < heavy_count; h += stride) {
    const std::int64_t row = heavy[3 * h], first = heavy[3 * h + 1], count = heavy[3 * h + 2];
    for (std::int64_t j = lane; j < dim; j += lanes) {
      A acc = 0;
#pragma unroll 4
      for (std::int64_t p = first; p < first + count; ++p) acc += partials[p * dim + j];
      grad_table[row * dim + j] = to_element<T>(acc);
    }
  }
}

unsigned blocks_for(std::int64_t tasks, int groups) {
  return capped_blocks((tasks + groups - 1) / groups);
}

}  // namespace

void embedding_gather(void* out, const void* table, std::int64_t row_bytes, const void* ids, DType id_dtype,
                      std::int64_t n, int device, std::string_view op) {
  CONDENSE_CHECK(n >= 0 && row_bytes >= 0, op, "CUDA embedding gather of ", n, " rows of ", row_bytes, " bytes");
  if (n == 0 || row_bytes == 0) return;
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  dispatch_dtype<std::int32_t, std::int64_t>(id_dtype, op, [&](auto tag) {
    using I = decltype(tag);
    const I* id = static_cast<const I*>(ids);
    if (copies_in<uint4>(out, table, row_bytes)) {
      launch_gather<uint4, I>(out, table, row_bytes, id, n, stream);
    } else if (copies_in<uint2>(out, table, row_bytes)) {
      launch_gather<uint2, I>(out, table, row_bytes, id, n, stream);
    } else if (copies_in<unsigned>(out, table, row_bytes)) {
      launch_gather<unsigned, I>(out, table, row_bytes, id, n, stream);
    } else if (copies_in<unsigned short>(out, table, row_bytes)) {
      launch_gather<unsigned short, I>(out, table, row_bytes, id, n, stream);
    } else {
      launch_gather<unsigned char, I>(out, table, row_bytes, id, n, stream);
    }
  });
  check_launch(op);
}

void embedding_grad(void* grad_table, const void* grad_out, DType dtype, std::int64_t rows, std::int64_t dim,
                    const EmbeddingGradWork& work, int device, std::string_view op) {
  CONDENSE_CHECK(rows >= 0 && dim >= 0 && work.positions >= 0 && work.items >= 0 && work.heavy_rows >= 0, op,
                 "CUDA embedding backward of a [", rows, ", ", dim, "] table");
  CONDENSE_CHECK(work.items == 0 || work.plan != nullptr, op, "CUDA embedding backward without a plan");
  CONDENSE_CHECK(work.heavy_rows == 0 || (work.partials != nullptr && work.partial_rows > 0), op,
                 "CUDA embedding backward without a partial-sum workspace");
  if (rows == 0 || dim == 0) return;
  use_device(device, op);
  const cudaStream_t stream = stream_of(device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    T* out = static_cast<T*>(grad_table);
    check(cudaMemsetAsync(out, 0, static_cast<std::size_t>(rows * dim) * sizeof(T), stream), op, "cudaMemsetAsync");
    if (work.items == 0) return;
    const int lanes = lanes_for(dim);
    const int groups = grad_threads / lanes;
    const std::int64_t* order = work.plan;
    const std::int64_t* items = order + work.positions;
    const std::int64_t* heavy = items + 3 * work.items;
    A* partials = static_cast<A*>(work.partials);
    detail::launch_kernel(sum_items<T, A>, blocks_for(work.items, groups), grad_threads, 0, stream, out, partials,
                          static_cast<const T*>(grad_out), order, items, work.items, dim, lanes);
    check_launch(op);
    if (work.heavy_rows > 0) {
      detail::launch_kernel(sum_partials<T, A>, blocks_for(work.heavy_rows, groups), grad_threads, 0, stream, out,
                            partials, heavy, work.heavy_rows, dim, lanes);
    }
  });
  check_launch(op);
}

}  // namespace condense::cuda
