// Line-wise CUDA kernels over a contiguous tensor seen as [outer, n, inner]: inclusive scans
// (cumsum, cumprod) and cumprod's division-free backward, one thread per line walking its n
// elements (neighbouring threads take neighbouring inner positions, so loads coalesce when
// inner > 1); arg reductions (argmax/argmin with the value), one thread per line, or one
// block per line when the line is long and inner == 1 (a reduction over the vocabulary);
// and the backward of max(t, dim), which places each line's gradient at its index.
// Scans accumulate in the element type (float for the 16-bit types), as on the CPU.
#include <cstdint>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

constexpr int line_threads = 128;
constexpr int arg_block_threads = 256;

/// Thread `t`'s line: the element offset of its first element (outer index o, inner index i).
__device__ __forceinline__ std::int64_t line_base(std::int64_t line, std::int64_t n, std::int64_t inner) {
  return (line / inner) * n * inner + line % inner;
}

template <class T, class C>
__global__ void scan_lines(T* out, const T* in, std::int64_t lines, std::int64_t n, std::int64_t inner, ScanOp code,
                           bool reverse) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t line = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; line < lines; line += stride) {
    const std::int64_t base = line_base(line, n, inner);
    C acc = code == ScanOp::Sum ? C(0) : C(1);
    for (std::int64_t c = 0; c < n; ++c) {
      const std::int64_t at = base + (reverse ? n - 1 - c : c) * inner;
      const C x = static_cast<C>(load(in + at));
      if constexpr (std::is_integral_v<C>) {  // wrap around as the CPU's unsigned arithmetic does
        using U = std::make_unsigned_t<C>;
        acc = code == ScanOp::Sum ? static_cast<C>(static_cast<U>(acc) + static_cast<U>(x))
                                  : static_cast<C>(static_cast<U>(acc) * static_cast<U>(x));
      } else {
        acc = c == 0 ? x : (code == ScanOp::Sum ? acc + x : acc * x);
      }
      out[at] = to_element<T>(acc);
    }
  }
}

template <class T, class C>
__global__ void cumprod_backward_lines(T* grad, const T* x, const T* y, const T* g, std::int64_t lines, std::int64_t n,
                                       std::int64_t inner) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t line = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; line < lines; line += stride) {
    const std::int64_t base = line_base(line, n, inner);
    C s = static_cast<C>(load(g + base + (n - 1) * inner));
    for (std::int64_t k = n - 1; k > 0; --k) {
      const std::int64_t at = base + k * inner, before = at - inner;
      grad[at] = to_element<T>(static_cast<C>(load(y + before)) * s);
      s = static_cast<C>(load(g + before)) + static_cast<C>(load(x + at)) * s;
    }
    grad[base] = to_element<T>(s);
  }
}

/// A candidate of an arg reduction: the value and its position along the line.
template <class C>
struct Candidate {
  C value;
  std::int64_t index;
};

/// True when `x` (at a later position than `best`) replaces it: strictly better, or the
/// first NaN; a NaN best stays.
template <class C>
__device__ __forceinline__ bool replaces(bool is_max, C x, C best) {
  if (best != best) return false;
  return x != x || (is_max ? x > best : x < best);
}

/// The better of two candidates (the lower position on ties and between two NaNs).
template <class C>
__device__ __forceinline__ Candidate<C> better(bool is_max, Candidate<C> a, Candidate<C> b) {
  if (a.index < 0) return b;
  if (b.index < 0) return a;
  const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
  if (a_nan || b_nan) return a_nan && (!b_nan || a.index < b.index) ? a : b;
  if (a.value == b.value) return a.index < b.index ? a : b;
  return (is_max ? a.value > b.value : a.value < b.value) ? a : b;
}

template <class T, class C>
__global__ void arg_reduce_lines(T* values, std::int64_t* indices, const T* in, std::int64_t lines, std::int64_t n,
                                 std::int64_t inner, bool is_max) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t line = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; line < lines; line += stride) {
    const std::int64_t base = line_base(line, n, inner);
    C best = static_cast<C>(load(in + base));
    std::int64_t at = 0;
    for (std::int64_t k = 1; k < n; ++k) {
      const C x = static_cast<C>(load(in + base + k * inner));
      if (replaces(is_max, x, best)) {
        best = x;
        at = k;
      }
    }
    indices[line] = at;
    if (values) values[line] = in[base + at * inner];
  }
}

/// One block per line of contiguous elements (inner == 1).
template <class T, class C>
__global__ void arg_reduce_rows(T* values, std::int64_t* indices, const T* in, std::int64_t rows, std::int64_t n, bool is_max) {
  __shared__ C shared_value[arg_block_threads];
  __shared__ std::int64_t shared_index[arg_block_threads];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * n;
    Candidate<C> mine{C(0), -1};
    for (std::int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const C x = static_cast<C>(load(row + k));
      if (mine.index < 0 || replaces(is_max, x, mine.value)) mine = {x, k};
    }
    shared_value[threadIdx.x] = mine.value;
    shared_index[threadIdx.x] = mine.index;
    __syncthreads();
    for (int width = blockDim.x / 2; width > 0; width /= 2) {
      if (threadIdx.x < width) {
        const Candidate<C> merged = better(is_max, Candidate<C>{shared_value[threadIdx.x], shared_index[threadIdx.x]},
                                           Candidate<C>{shared_value[threadIdx.x + width], shared_index[threadIdx.x + width]});
        shared_value[threadIdx.x] = merged.value;
        shared_index[threadIdx.x] = merged.index;
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      indices[r] = shared_index[0];
      if (values) values[r] = row[shared_index[0]];
    }
    __syncthreads();
  }
}

template <class T>
__global__ void place_at_indices_kernel(T* grad, const T* g, const std::int64_t* indices, std::int64_t total, std::int64_t n,
                                        std::int64_t inner) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const std::int64_t i = e % inner, k = (e / inner) % n, o = e / (inner * n);
    const std::int64_t line = o * inner + i;
    grad[e] = indices[line] == k ? g[line] : to_element<T>(0.0f);
  }
}

#define CONDENSE_CUDA_SCAN_TYPES CONDENSE_CUDA_FLOAT_TYPES, std::int32_t, std::int64_t

void check_geometry(const LineGeometry& g, std::string_view op) {
  CONDENSE_CHECK(g.outer >= 0 && g.n >= 0 && g.inner >= 0, op, "CUDA line geometry [", g.outer, ", ", g.n, ", ", g.inner,
                 "] has a negative extent");
}

}  // namespace

void scan(ScanOp code, bool reverse, void* out, const void* in, const LineGeometry& g, std::string_view op) {
  check_geometry(g, op);
  const std::int64_t lines = g.outer * g.inner;
  if (lines == 0 || g.n == 0) return;
  use_device(g.device, op);
  dispatch_dtype<CONDENSE_CUDA_SCAN_TYPES>(g.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    scan_lines<T, compute_t<T>><<<grid_for(lines, line_threads), line_threads, 0, stream_of(g.device)>>>(
        static_cast<T*>(out), static_cast<const T*>(in), lines, g.n, g.inner, code, reverse);
  });
  check_launch(op);
}

void cumprod_backward(void* grad, const void* x, const void* y, const void* g, const LineGeometry& geo, std::string_view op) {
  check_geometry(geo, op);
  const std::int64_t lines = geo.outer * geo.inner;
  if (lines == 0 || geo.n == 0) return;
  use_device(geo.device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(geo.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    cumprod_backward_lines<T, compute_t<T>><<<grid_for(lines, line_threads), line_threads, 0, stream_of(geo.device)>>>(
        static_cast<T*>(grad), static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(g), lines, geo.n,
        geo.inner);
  });
  check_launch(op);
}

void place_at_indices(void* grad, const void* g, const std::int64_t* indices, const LineGeometry& geo, std::string_view op) {
  check_geometry(geo, op);
  const std::int64_t total = geo.outer * geo.n * geo.inner;
  if (total == 0) return;
  use_device(geo.device, op);
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(geo.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    place_at_indices_kernel<<<grid_for(total, 256), 256, 0, stream_of(geo.device)>>>(
        static_cast<T*>(grad), static_cast<const T*>(g), indices, total, geo.n, geo.inner);
  });
  check_launch(op);
}

void arg_reduce(bool is_max, void* values, std::int64_t* indices, const void* in, const LineGeometry& g, std::string_view op) {
  check_geometry(g, op);
  const std::int64_t lines = g.outer * g.inner;
  if (lines == 0) return;
  CONDENSE_CHECK(g.n > 0, op, "CUDA arg reduction over an empty dim");
  use_device(g.device, op);
  const cudaStream_t stream = stream_of(g.device);
  dispatch_dtype<CONDENSE_CUDA_SCAN_TYPES>(g.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    T* v = static_cast<T*>(values);
    const T* x = static_cast<const T*>(in);
    if (g.inner == 1 && g.n >= 1024) {
      const unsigned blocks = static_cast<unsigned>(lines < 65535 * 8 ? lines : 65535 * 8);
      arg_reduce_rows<T, C><<<blocks, arg_block_threads, 0, stream>>>(v, indices, x, lines, g.n, is_max);
    } else {
      arg_reduce_lines<T, C><<<grid_for(lines, line_threads), line_threads, 0, stream>>>(v, indices, x, lines, g.n, g.inner,
                                                                                          is_max);
    }
  });
  check_launch(op);
}

}  // namespace condense::cuda
