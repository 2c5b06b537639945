// gather and scatter_add CUDA kernels along one dim. Every operand is described over the
// index's shape with its own strides and split at the indexed dim into [outer, k, inner]
// (outer: the dims before it, inner: the dims after it). gather runs one thread per index
// position; scatter_add runs one thread per (outer, inner) line, which walks the k index
// positions of its line in order and adds into its own line of the output: two threads
// never add into one element, so there are no atomics and the sums are deterministic (the
// CPU splits the work the same way).
#include <cstdint>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

constexpr int threads_per_block = 256;

/// An operand split at the indexed dim: the layouts of the outer and inner dims and the
/// stride along the indexed one.
struct SplitLayout {
  Layout outer, inner;
  std::int64_t along = 0;

  __device__ __forceinline__ std::int64_t offset(std::int64_t o, std::int64_t k, std::int64_t i) const {
    return outer.offset(o) + k * along + inner.offset(i);
  }
};

SplitLayout split(const StridedArg& a, int dim) {
  SplitLayout s;
  for (int d = 0; d < a.ndim; ++d) {
    if (d < dim) {
      s.outer.sizes[s.outer.ndim] = a.sizes[d];
      s.outer.strides[s.outer.ndim++] = a.strides[d];
    } else if (d > dim) {
      s.inner.sizes[s.inner.ndim] = a.sizes[d];
      s.inner.strides[s.inner.ndim++] = a.strides[d];
    }
  }
  s.along = a.strides[dim];
  return s;
}

template <class T, class I>
__global__ void gather_kernel(T* out, const T* in, SplitLayout in_layout, const I* index, SplitLayout index_layout,
                              std::int64_t outer, std::int64_t k, std::int64_t inner) {
  const std::int64_t total = outer * k * inner;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const std::int64_t i = e % inner, j = (e / inner) % k, o = e / (inner * k);
    const auto at = static_cast<std::int64_t>(index[index_layout.offset(o, j, i)]);
    out[e] = in[in_layout.offset(o, at, i)];
  }
}

template <class T, class C, class I>
__global__ void scatter_add_kernel(T* out, SplitLayout out_layout, const T* src, SplitLayout src_layout, const I* index,
                                   SplitLayout index_layout, std::int64_t outer, std::int64_t k, std::int64_t inner) {
  const std::int64_t lines = outer * inner;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t line = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; line < lines; line += stride) {
    const std::int64_t o = line / inner, i = line % inner;
    for (std::int64_t j = 0; j < k; ++j) {
      const auto at = static_cast<std::int64_t>(index[index_layout.offset(o, j, i)]);
      T* target = out + out_layout.offset(o, at, i);
      *target = to_element<T>(static_cast<C>(load(target)) + static_cast<C>(load(src + src_layout.offset(o, j, i))));
    }
  }
}

/// [outer, k, inner] of the index's shape split at `dim`; checks the operands' ranks.
void index_walk(const StridedArg& index, std::initializer_list<const StridedArg*> others, int dim, std::int64_t& outer,
                std::int64_t& k, std::int64_t& inner, std::string_view op) {
  CONDENSE_CHECK(dim >= 0 && dim < index.ndim, op, "CUDA indexing along dim ", dim, " of a ", index.ndim, "-dim index");
  for (const StridedArg* a : others)
    CONDENSE_CHECK(a->ndim == index.ndim && a->device == index.device, op,
                   "CUDA indexing operands of different ranks or devices");
  outer = 1;
  inner = 1;
  for (int d = 0; d < dim; ++d) outer *= index.sizes[d];
  for (int d = dim + 1; d < index.ndim; ++d) inner *= index.sizes[d];
  k = index.sizes[dim];
}

}  // namespace

void gather(const StridedArg& out, const StridedArg& in, const StridedArg& index, int dim, std::string_view op) {
  std::int64_t outer = 0, k = 0, inner = 0;
  index_walk(index, {&out, &in}, dim, outer, k, inner, op);
  CONDENSE_CHECK(out.is_contiguous() && out.dtype == in.dtype, op, "CUDA gather needs a contiguous output of the input's type");
  const std::int64_t total = outer * k * inner;
  if (total == 0) return;
  use_device(out.device, op);
  const cudaStream_t stream = stream_of(out.device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES, std::int32_t, std::int64_t, bool>(in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    dispatch_dtype<std::int32_t, std::int64_t>(index.dtype, op, [&](auto index_tag) {
      using I = decltype(index_tag);
      detail::launch_kernel(gather_kernel<T, I>, grid_for(total, threads_per_block), threads_per_block, 0, stream,
                            static_cast<T*>(out.data), static_cast<const T*>(in.data), split(in, dim),
                            static_cast<const I*>(index.data), split(index, dim), outer, k, inner);
    });
  });
  check_launch(op);
}

void scatter_add(const StridedArg& out, const StridedArg& src, const StridedArg& index, int dim, std::string_view op) {
  std::int64_t outer = 0, k = 0, inner = 0;
  index_walk(index, {&out, &src}, dim, outer, k, inner, op);
  CONDENSE_CHECK(out.dtype == src.dtype, op, "CUDA scatter_add of ", dtype_name(src.dtype), " into ", dtype_name(out.dtype));
  const std::int64_t lines = outer * inner;
  if (lines == 0 || k == 0) return;
  use_device(out.device, op);
  const cudaStream_t stream = stream_of(out.device);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES, std::int32_t, std::int64_t>(out.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    dispatch_dtype<std::int32_t, std::int64_t>(index.dtype, op, [&](auto index_tag) {
      using I = decltype(index_tag);
      detail::launch_kernel(scatter_add_kernel<T, compute_t<T>, I>, grid_for(lines, threads_per_block),
                            threads_per_block, 0, stream, static_cast<T*>(out.data), split(out, dim),
                            static_cast<const T*>(src.data), split(src, dim), static_cast<const I*>(index.data),
                            split(index, dim), outer, k, inner);
    });
  });
  check_launch(op);
}

}  // namespace condense::cuda
