// Elementwise CUDA kernels: unary and binary maps selected by op code (backend/cuda/
// kernels.hpp), strided copies with element-type conversion, and fills. Contiguous operands
// take a vectorised path (16-byte loads and stores where the pointers allow); views take a
// strided path over the coalesced dims, with 31-bit indices split by multiply-shift
// dividers (Index32) when every offset fits, 64-bit division otherwise. Copies between
// views of one element type move raw units, up to 16 bytes wide where the innermost dim is
// contiguous in both (a transposing copy of [B, T, H, 64] bfloat16 moves 16-byte pieces of
// each head row). Arithmetic happens in float for the 16-bit types.
#include <cmath>
#include <cstdint>
#include <utility>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

using namespace detail;

// ---- the maps --------------------------------------------------------------------------

/// x^e with the CPU op's exact forms for e in {0, 1, 2, 3, -1, -2, 0.5} (ops/unary.hpp), so
/// pow(x, 2) is x * x on both devices; other exponents use pow.
template <class C>
__device__ __forceinline__ C pow_scalar(C x, C e) {
  if (e == C(2)) return x * x;
  if (e == C(1)) return x;
  if (e == C(0)) return C(1);
  if (e == C(3)) return x * x * x;
  if (e == C(-1)) return C(1) / x;
  if (e == C(-2)) return C(1) / (x * x);
  if (e == C(0.5)) return x == -C(INFINITY) ? C(INFINITY) : d_sqrt(x) + C(0);  // as pow: +0 and +inf
  return d_pow(x, e);
}

template <class C>
struct UnaryFn {
  UnaryOp code;
  C s0, s1;
  __device__ __forceinline__ C operator()(C x) const {
    switch (code) {
      case UnaryOp::Neg: return -x;
      case UnaryOp::Abs: return d_abs(x);  // abs(-0) = +0, as std::abs
      case UnaryOp::Square: return x * x;
      case UnaryOp::Exp: return d_exp(x);
      case UnaryOp::Log: return d_log(x);
      case UnaryOp::Sqrt: return d_sqrt(x);
      case UnaryOp::Rsqrt: return d_rsqrt(x);
      case UnaryOp::Tanh: return d_tanh(x);
      case UnaryOp::Sigmoid: return d_sigmoid(x);
      case UnaryOp::Relu: return x < C(0) ? C(0) : x;
      case UnaryOp::Silu: return x * d_sigmoid(x);
      case UnaryOp::GeluErf: return x * (C(1) + d_erf(x * C(0.70710678118654752440))) / C(2);
      case UnaryOp::GeluTanh: {
        const C u = C(0.79788456080286535588) * (x + C(0.044715) * x * x * x);
        return x * (C(1) + d_tanh(u)) / C(2);
      }
      case UnaryOp::AddScalar: return x + s0;
      case UnaryOp::MulScalar: return x * s0;
      case UnaryOp::RDivScalar: return s0 / x;
      case UnaryOp::PowScalar: return pow_scalar(x, s0);
      case UnaryOp::Clamp: return x != x ? x : (x < s0 ? s0 : (x > s1 ? s1 : x));
      case UnaryOp::ClampMin: return x < s0 ? s0 : x;
      case UnaryOp::ClampMax: return x > s0 ? s0 : x;
    }
    return x;
  }
};

template <class C>
struct BinaryFn {
  BinaryOp code;
  C s0, s1;
  __device__ __forceinline__ C operator()(C a, C b) const {
    switch (code) {
      case BinaryOp::Add: return a + b;
      case BinaryOp::Sub: return a - b;
      case BinaryOp::Mul: return a * b;
      case BinaryOp::Div: return a / b;
      case BinaryOp::Maximum: return (a != a || a > b) ? a : b;
      case BinaryOp::Minimum: return (a != a || a < b) ? a : b;
      case BinaryOp::DivGradDenominator: return -a / (b * b);
      case BinaryOp::RDivGrad: return -a * s0 / (b * b);
      case BinaryOp::SqrtGrad: return a / (C(2) * b);
      case BinaryOp::RsqrtGrad: return C(-0.5) * a * b * b * b;
      case BinaryOp::AbsGrad: return b > C(0) ? a : (b < C(0) ? -a : C(0));
      case BinaryOp::SquareGrad: return C(2) * a * b;
      case BinaryOp::PowGrad: return s0 * a * pow_scalar(b, s0 - C(1));
      case BinaryOp::TanhGrad: return a * (C(1) - b * b);
      case BinaryOp::SigmoidGrad: return a * b * (C(1) - b);
      case BinaryOp::ReluGrad: return b > C(0) ? a : C(0);
      case BinaryOp::SiluGrad: {
        const C s = d_sigmoid(b);
        return a * s * (C(1) + b * (C(1) - s));
      }
      case BinaryOp::GeluErfGrad: {
        const C cdf = (C(1) + d_erf(b * C(0.70710678118654752440))) / C(2);
        const C pdf = d_exp(-b * b / C(2)) * C(0.39894228040143267794);
        return a * (cdf + b * pdf);
      }
      case BinaryOp::GeluTanhGrad: {
        const C k = C(0.79788456080286535588), c = C(0.044715);
        const C t = d_tanh(k * (b + c * b * b * b));
        const C du = k * (C(1) + C(3) * c * b * b);
        return a * ((C(1) + t) / C(2) + b * (C(1) - t * t) * du / C(2));
      }
      case BinaryOp::ClampGrad: return (b >= s0 && b <= s1) ? a : C(0);
    }
    return a;
  }
};

/// Integer maps: only the codes that make sense on integers reach them (the ops check).
template <class C>
  requires std::is_integral_v<C>
struct IntUnaryFn {
  UnaryOp code;
  C s0, s1;
  __device__ __forceinline__ C operator()(C x) const {
    using U = std::make_unsigned_t<C>;
    switch (code) {
      case UnaryOp::Neg: return static_cast<C>(U(0) - static_cast<U>(x));
      case UnaryOp::Abs: return x < 0 ? static_cast<C>(U(0) - static_cast<U>(x)) : x;
      case UnaryOp::Square: return static_cast<C>(static_cast<U>(x) * static_cast<U>(x));
      case UnaryOp::Relu: return x < 0 ? C(0) : x;
      case UnaryOp::AddScalar: return static_cast<C>(static_cast<U>(x) + static_cast<U>(s0));
      case UnaryOp::MulScalar: return static_cast<C>(static_cast<U>(x) * static_cast<U>(s0));
      case UnaryOp::Clamp: return x < s0 ? s0 : (x > s1 ? s1 : x);
      case UnaryOp::ClampMin: return x < s0 ? s0 : x;
      case UnaryOp::ClampMax: return x > s0 ? s0 : x;
      case UnaryOp::PowScalar: {  // s0 >= 0 (the op checks); wraps on overflow like the CPU
        U base = static_cast<U>(x), result = 1;
        for (auto k = static_cast<U>(s0); k != 0; k >>= 1) {
          if (k & 1u) result = static_cast<U>(result * base);
          base = static_cast<U>(base * base);
        }
        return static_cast<C>(result);
      }
      default: return x;
    }
  }
};

template <class C>
  requires std::is_integral_v<C>
struct IntBinaryFn {
  BinaryOp code;
  C s0, s1;
  __device__ __forceinline__ C operator()(C a, C b) const {
    using U = std::make_unsigned_t<C>;
    switch (code) {
      case BinaryOp::Add: return static_cast<C>(static_cast<U>(a) + static_cast<U>(b));
      case BinaryOp::Sub: return static_cast<C>(static_cast<U>(a) - static_cast<U>(b));
      case BinaryOp::Mul: return static_cast<C>(static_cast<U>(a) * static_cast<U>(b));
      case BinaryOp::Div: return b == 0 ? C(0) : a / b;  // the op rejects zero divisors first
      case BinaryOp::Maximum: return a > b ? a : b;
      case BinaryOp::Minimum: return a < b ? a : b;
      default: return a;
    }
  }
};

// ---- kernels ---------------------------------------------------------------------------

constexpr int threads_per_block = 256;

/// Elements of T in one 16-byte vector.
template <class T>
constexpr int vector_width = sizeof(T) <= 16 ? static_cast<int>(16 / sizeof(T)) : 1;

template <class T, int N>
struct alignas(16) Pack {
  T v[N];
};

/// The K input pointers of a map (passed to kernels by value).
template <class T, int K>
struct Inputs {
  const T* p[K];
};

/// The layouts of the K inputs of a strided map.
template <int K>
struct InputLayouts {
  Layout l[K];
};

/// f applied to the K loaded inputs.
template <class F, class C, std::size_t... I>
__device__ __forceinline__ C apply(const F& f, const C (&x)[sizeof...(I)], std::index_sequence<I...>) {
  return f(x[I]...);
}

/// out[i] = f(in0[i], ..., in{K-1}[i]) for contiguous operands; 16-byte vectors when
/// `vectorised` (all pointers 16-byte aligned), with the tail done one element at a time.
template <class T, int K, class F>
__global__ void map_contiguous(T* __restrict__ out, Inputs<T, K> in, std::int64_t n, F f, bool vectorised) {
  using C = compute_t<T>;
  constexpr int N = vector_width<T>;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t done = 0;
  if (vectorised) {
    const std::int64_t packs = n / N;
    for (std::int64_t p = start; p < packs; p += stride) {
      Pack<T, N> x[K];
#pragma unroll
      for (int k = 0; k < K; ++k) x[k] = reinterpret_cast<const Pack<T, N>*>(in.p[k])[p];
      Pack<T, N> y;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        C args[K];
#pragma unroll
        for (int k = 0; k < K; ++k) args[k] = load(&x[k].v[j]);
        y.v[j] = to_element<T>(apply(f, args, std::make_index_sequence<K>{}));
      }
      reinterpret_cast<Pack<T, N>*>(out)[p] = y;
    }
    done = packs * N;
  }
  for (std::int64_t i = done + start; i < n; i += stride) {
    C args[K];
#pragma unroll
    for (int k = 0; k < K; ++k) args[k] = load(in.p[k] + i);
    out[i] = to_element<T>(apply(f, args, std::make_index_sequence<K>{}));
  }
}

/// The same map over views whose offsets fit in 31 bits: one split of the index gives every
/// operand's offset (operand 0 is the output).
template <class T, int K, class F>
__global__ void map_strided32(T* out, Inputs<T, K> in, Index32<K + 1> index, std::uint32_t n, F f) {
  using C = compute_t<T>;
  const std::uint32_t stride = gridDim.x * blockDim.x;  // i + stride < 2^32 as n < 2^31
  for (std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    std::int32_t off[K + 1];
    index.offsets(i, off);
    C args[K];
#pragma unroll
    for (int k = 0; k < K; ++k) args[k] = load(in.p[k] + off[k + 1]);
    out[off[0]] = to_element<T>(apply(f, args, std::make_index_sequence<K>{}));
  }
}

/// The same map over any views: each element's offset computed from the coalesced dims in
/// 64-bit arithmetic.
template <class T, int K, class F>
__global__ void map_strided(T* out, Layout lo, Inputs<T, K> in, InputLayouts<K> li, std::int64_t n, F f) {
  using C = compute_t<T>;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    C args[K];
#pragma unroll
    for (int k = 0; k < K; ++k) args[k] = load(in.p[k] + li.l[k].offset(i));
    out[lo.offset(i)] = to_element<T>(apply(f, args, std::make_index_sequence<K>{}));
  }
}

/// out = in between views of one element type (moved as `Unit`s) whose offsets fit in 31 bits.
template <class Unit>
__global__ void copy_units32(Unit* out, const Unit* in, Index32<2> index, std::uint32_t n) {
  const std::uint32_t stride = gridDim.x * blockDim.x;
  for (std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    std::int32_t off[2];
    index.offsets(i, off);
    out[off[0]] = in[off[1]];
  }
}

/// out = in (converted) between any views.
template <class Out, class In>
__global__ void copy_kernel(Out* out, Layout lo, const In* in, Layout li, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if constexpr (std::is_same_v<Out, In>) {
      out[lo.offset(i)] = in[li.offset(i)];
    } else {
      out[lo.offset(i)] = to_element<Out>(load(in + li.offset(i)));
    }
  }
}

template <class T>
__global__ void fill_kernel(T* out, Layout lo, std::int64_t n, T value) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[lo.offset(i)] = value;
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

/// The widest unit (16, 8, 4 or 2 bytes, at least `element_bytes`) a same-type copy between
/// `out` and `in` (coalesced, ndim >= 1) can move: the innermost dim contiguous in both, its
/// extent, every other stride and both pointers multiples of the unit. Rewrites both in
/// units (innermost extent and outer strides divided) and returns the unit's size.
int widen_copy_units(StridedArg& out, StridedArg& in, int element_bytes) {
  const int last = out.ndim - 1;
  if (last < 0 || out.strides[last] != 1 || in.strides[last] != 1) return element_bytes;
  for (int unit = 16; unit > element_bytes; unit /= 2) {
    const std::int64_t ratio = unit / element_bytes;
    bool fits = out.sizes[last] % ratio == 0 && reinterpret_cast<std::uintptr_t>(out.data) % unit == 0 &&
                reinterpret_cast<std::uintptr_t>(in.data) % unit == 0;
    for (int d = 0; d < last && fits; ++d) fits = out.strides[d] % ratio == 0 && in.strides[d] % ratio == 0;
    if (!fits) continue;
    for (StridedArg* a : {&out, &in}) {
      a->sizes[last] /= ratio;
      for (int d = 0; d < last; ++d) a->strides[d] /= ratio;
    }
    return unit;
  }
  return element_bytes;
}

void check_operands(std::string_view op, const StridedArg& out, std::initializer_list<const StridedArg*> ins) {
  for (const StridedArg* in : ins) {
    CONDENSE_CHECK(in->ndim == out.ndim, op, "CUDA operands of different rank: ", in->ndim, " and ", out.ndim);
    for (int d = 0; d < out.ndim; ++d)
      CONDENSE_CHECK(in->sizes[d] == out.sizes[d], op, "CUDA operands of different extents along dim ", d, ": ",
                     in->sizes[d], " and ", out.sizes[d]);
    CONDENSE_CHECK(in->device == out.device, op, "CUDA operands on devices ", in->device, " and ", out.device);
  }
}

/// Runs out = f(ins...) over operands of one iteration shape (contiguous or strided path).
template <class T, class F, class... Args>
void launch_map(const StridedArg& out_arg, F f, std::string_view op, const Args&... in_args) {
  constexpr int K = sizeof...(Args);
  StridedArg out = out_arg;
  StridedArg ins[K] = {in_args...};
  [&]<std::size_t... I>(std::index_sequence<I...>) { coalesce({&out, &ins[I]...}); }(std::make_index_sequence<K>{});
  const std::int64_t n = out.numel();
  if (n == 0) return;
  use_device(out.device, op);
  const cudaStream_t stream = stream_of(out.device);
  T* o = static_cast<T*>(out.data);
  Inputs<T, K> in;
  InputLayouts<K> layouts;
  bool contiguous = out.is_contiguous(), vectorised = aligned16(o);
  for (int k = 0; k < K; ++k) {
    in.p[k] = static_cast<const T*>(ins[k].data);
    layouts.l[k] = Layout::of(ins[k]);
    contiguous = contiguous && ins[k].is_contiguous();
    vectorised = vectorised && aligned16(ins[k].data);
  }
  Index32<K + 1> index;
  const StridedArg* operands[K + 1] = {&out};
  for (int k = 0; k < K; ++k) operands[k + 1] = &ins[k];
  if (contiguous) {
    const std::int64_t work = vectorised ? (n + vector_width<T> - 1) / vector_width<T> : n;
    detail::launch_kernel(map_contiguous<T, K, F>, grid_for(work, threads_per_block), threads_per_block, 0, stream, o, in,
                          n, f, vectorised);
  } else if (index32_of(operands, index)) {
    detail::launch_kernel(map_strided32<T, K, F>, grid_for(n, threads_per_block), threads_per_block, 0, stream, o, in,
                          index, static_cast<std::uint32_t>(n), f);
  } else {
    detail::launch_kernel(map_strided<T, K, F>, grid_for(n, threads_per_block), threads_per_block, 0, stream, o,
                          Layout::of(out), in, layouts, n, f);
  }
  check_launch(op);
}

}  // namespace

void unary(UnaryKernel kernel, const StridedArg& out, const StridedArg& in, std::string_view op) {
  check_operands(op, out, {&in});
  CONDENSE_CHECK(in.dtype == out.dtype, op, "CUDA unary map from ", dtype_name(in.dtype), " to ", dtype_name(out.dtype));
  if (out.dtype == DType::Int32 || out.dtype == DType::Int64) {
    dispatch_dtype<std::int32_t, std::int64_t>(out.dtype, op, [&](auto tag) {
      using T = decltype(tag);
      launch_map<T>(out, IntUnaryFn<T>{kernel.code, static_cast<T>(kernel.s0.integer), static_cast<T>(kernel.s1.integer)}, op, in);
    });
    return;
  }
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(out.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    launch_map<T>(out, UnaryFn<C>{kernel.code, static_cast<C>(kernel.s0.real), static_cast<C>(kernel.s1.real)}, op, in);
  });
}

void binary(BinaryKernel kernel, const StridedArg& out, const StridedArg& a, const StridedArg& b, std::string_view op) {
  check_operands(op, out, {&a, &b});
  CONDENSE_CHECK(a.dtype == out.dtype && b.dtype == out.dtype, op, "CUDA binary map of ", dtype_name(a.dtype), " and ",
                 dtype_name(b.dtype), " into ", dtype_name(out.dtype));
  if (out.dtype == DType::Int32 || out.dtype == DType::Int64) {
    dispatch_dtype<std::int32_t, std::int64_t>(out.dtype, op, [&](auto tag) {
      using T = decltype(tag);
      launch_map<T>(out, IntBinaryFn<T>{kernel.code, static_cast<T>(kernel.s0.integer), static_cast<T>(kernel.s1.integer)}, op, a, b);
    });
    return;
  }
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(out.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    launch_map<T>(out, BinaryFn<C>{kernel.code, static_cast<C>(kernel.s0.real), static_cast<C>(kernel.s1.real)}, op, a, b);
  });
}

#define CONDENSE_CUDA_ALL_TYPES CONDENSE_CUDA_FLOAT_TYPES, std::int32_t, std::int64_t, bool

void copy_strided(const StridedArg& out_arg, const StridedArg& in_arg, std::string_view op) {
  check_operands(op, out_arg, {&in_arg});
  StridedArg out = out_arg, in = in_arg;
  coalesce({&out, &in});
  const std::int64_t n = out.numel();
  if (n == 0) return;
  use_device(out.device, op);
  const cudaStream_t stream = stream_of(out.device);
  if (out.dtype == in.dtype) {  // moved as raw units of up to 16 bytes, whatever the element type
    const auto copy_units = [&]<class Unit>() {  // out and in are described in Units by now
      Unit* o = static_cast<Unit*>(out.data);
      const Unit* x = static_cast<const Unit*>(in.data);
      const std::int64_t units = out.numel();
      const StridedArg* const operands[2] = {&out, &in};
      Index32<2> index;
      if (index32_of(operands, index)) {
        detail::launch_kernel(copy_units32<Unit>, grid_for(units, threads_per_block), threads_per_block, 0, stream, o,
                              x, index, static_cast<std::uint32_t>(units));
      } else {
        detail::launch_kernel(copy_kernel<Unit, Unit>, grid_for(units, threads_per_block), threads_per_block, 0, stream,
                              o, Layout::of(out), x, Layout::of(in), units);
      }
    };
    switch (widen_copy_units(out, in, static_cast<int>(dtype_size(out.dtype)))) {
      case 1: copy_units.template operator()<std::uint8_t>(); break;
      case 2: copy_units.template operator()<std::uint16_t>(); break;
      case 4: copy_units.template operator()<std::uint32_t>(); break;
      case 8: copy_units.template operator()<std::uint64_t>(); break;
      case 16: copy_units.template operator()<uint4>(); break;
      default: fail(op, "no CUDA copy for element type ", dtype_name(out.dtype));
    }
    check_launch(op);
    return;
  }
  dispatch_dtype<CONDENSE_CUDA_ALL_TYPES>(out.dtype, op, [&](auto out_tag) {
    using Out = decltype(out_tag);
    dispatch_dtype<CONDENSE_CUDA_ALL_TYPES>(in.dtype, op, [&](auto in_tag) {
      using In = decltype(in_tag);
      if constexpr (!std::is_same_v<Out, In>) {  // equal types were copied as units above
        detail::launch_kernel(copy_kernel<Out, In>, grid_for(n, threads_per_block), threads_per_block, 0, stream,
                              static_cast<Out*>(out.data), Layout::of(out), static_cast<const In*>(in.data),
                              Layout::of(in), n);
      }
    });
  });
  check_launch(op);
}

void fill(const StridedArg& out_arg, double value, std::string_view op) {
  StridedArg out = out_arg;
  coalesce({&out});
  const std::int64_t n = out.numel();
  if (n == 0) return;
  use_device(out.device, op);
  dispatch_dtype<CONDENSE_CUDA_ALL_TYPES>(out.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T v = convert_element<T>(value);
    detail::launch_kernel(fill_kernel<T>, grid_for(n, threads_per_block), threads_per_block, 0, stream_of(out.device),
                          static_cast<T*>(out.data), Layout::of(out), n, v);
  });
  check_launch(op);
}

}  // namespace condense::cuda
