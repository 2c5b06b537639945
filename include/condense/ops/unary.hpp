// Elementwise math: exp, log, sqrt, rsqrt, abs, square, pow (scalar exponent) and clamp
// (clamp_min, clamp_max), each with its backward rule beside it. Also the CPU loops that the
// transcendental ops share (detail::math_map / math_map2): contiguous data goes through
// Eigen's vectorised array functions in cache-sized blocks split across threads; strided
// inputs are gathered block by block into a buffer first, so every layout gets the same
// vectorised kernel and the same results.
//
// Numerics (float and double alike):
// - log(x) of a negative x is NaN and log(0) is -inf, as std::log; nothing throws.
// - sqrt(x) of a negative x is NaN; rsqrt(0) is +inf, rsqrt(-0) is -inf (1 / sqrt(x), exact
//   IEEE sqrt and division).
// - exp(x) results below the smallest normal number (x < log(min normal), about -87.3 in
//   float and -708.4 in double) are flushed to +0; exp(+inf) = +inf, exp(-inf) = 0.
// - float exp is within ~1.3 ulp (AVX-512) or a few ulp (other ISAs, Eigen) of the correctly
//   rounded result, float log within ~1 ulp.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>

#include <Eigen/Core>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cpu/reduce.hpp"
#include "condense/backend/cpu/strided.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"
#include "condense/ops/views.hpp"

// GCC 12 reports a false -Wmaybe-uninitialized inside its own AVX-512 intrinsics
// (_mm512_undefined_ps, GCC bug 105593) wherever Eigen's packet math or the sqrt kernel
// below is inlined; the pragma covers the kernels and ops of this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace condense {
namespace detail {

/// Elements per thread chunk for transcendental elementwise loops (more work per element
/// than add, so smaller tensors are worth splitting).
inline constexpr std::int64_t math_grain = 1 << 14;
/// Elements per block handed to a math kernel: small enough to stay in L1 between the
/// passes of a multi-pass kernel and to fit the staging buffers on the stack.
inline constexpr std::int64_t math_block = 2048;
/// Alignment (bytes) of the blocks a kernel writes: the widest SIMD register (AVX-512).
inline constexpr std::int64_t math_align = 64;

/// Column array type that Eigen maps over raw element spans.
template <FloatingElement T>
using MathArray = Eigen::Array<T, Eigen::Dynamic, 1>;
/// Writable Eigen view of `n` contiguous elements.
template <FloatingElement T>
using MathMap = Eigen::Map<MathArray<T>>;
/// Read-only Eigen view of `n` contiguous elements.
template <FloatingElement T>
using ConstMathMap = Eigen::Map<const MathArray<T>>;

/// Runs `kernel(in[0], ..., in[K-1], o, n)` on one block (n <= math_block) so that every
/// element goes through the kernel's SIMD code: Eigen computes the elements before the
/// first aligned output address and after the last full packet with scalar functions,
/// which may differ from the vector ones in the last bit. So the kernel only ever sees an
/// aligned output of a whole number of 64-byte packets; a ragged end or a misaligned
/// output is staged through zero-padded aligned buffers. Results are thus identical for
/// every layout, block split and thread count.
template <Element T, std::size_t K, class Kernel>
void run_math_block(const Kernel& kernel, const std::array<const T*, K>& in, T* o, std::int64_t n) {
  constexpr std::int64_t width = math_align / static_cast<std::int64_t>(sizeof(T));
  const auto call = [&kernel](const std::array<const T*, K>& src, T* dst, std::int64_t m) {
    std::apply([&](auto... p) { kernel(p..., dst, m); }, src);
  };
  std::int64_t done = 0;
  if (reinterpret_cast<std::uintptr_t>(o) % math_align == 0) {
    done = n - n % width;
    if (done > 0) call(in, o, done);
    if (done == n) return;
  }
  const std::int64_t rest = n - done;
  const std::int64_t padded = (rest + width - 1) / width * width;
  alignas(math_align) T staged_in[K][math_block];
  alignas(math_align) T staged_out[math_block];
  std::array<const T*, K> src;
  for (std::size_t k = 0; k < K; ++k) {
    std::int64_t i = 0;
    do {  // at least once: padded >= 1 (a do loop also lets the compiler see that)
      staged_in[k][i] = i < rest ? in[k][done + i] : T(0);
    } while (++i < padded);
    src[k] = staged_in[k];
  }
  call(src, staged_out, padded);
  for (std::int64_t i = 0; i < rest; ++i) o[done + i] = staged_out[i];
}

/// Calls `kernel(a, b, ..., o, n)` over K same-shape tensors (broadcast views allowed) into
/// the contiguous `out`, block by block: contiguous inputs in aligned blocks across
/// threads; otherwise rows across threads, rows with a non-unit inner stride gathered into
/// a stack buffer first.
template <Element T, std::size_t K, class Kernel>
void math_for_each(const Tensor<T>& out, const std::array<const Tensor<T>*, K>& in, const Kernel& kernel) {
  T* o = out.data();
  bool dense = true;
  for (const auto* t : in) dense = dense && t->is_contiguous();
  if (dense) {
    std::array<const T*, K> base;
    for (std::size_t k = 0; k < K; ++k) base[k] = in[k]->data();
    const std::int64_t n = out.numel();
    const std::int64_t blocks = (n + math_block - 1) / math_block;
    cpu::parallel_for(0, blocks, math_grain / math_block, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t b = b0; b < b1; ++b) {
        const std::int64_t i = b * math_block;
        std::array<const T*, K> src;
        for (std::size_t k = 0; k < K; ++k) src[k] = base[k] + i;
        run_math_block(kernel, src, o + i, std::min(math_block, n - i));
      }
    });
    return;
  }
  std::array<const Strides*, K + 1> strides;
  strides[0] = &out.strides();
  for (std::size_t k = 0; k < K; ++k) strides[k + 1] = &in[k]->strides();
  cpu::StridedLayout<K + 1> layout(out.shape(), strides);
  cpu::for_each_row(
      layout,
      [&](const std::array<std::int64_t, K + 1>& off, std::int64_t n, const std::array<std::int64_t, K + 1>& st) {
        alignas(math_align) T gathered[K][math_block];
        for (std::int64_t i = 0; i < n; i += math_block) {
          const std::int64_t m = std::min(math_block, n - i);
          std::array<const T*, K> src;
          for (std::size_t k = 0; k < K; ++k) {
            const T* p = in[k]->data() + off[k + 1] + i * st[k + 1];
            if (st[k + 1] != 1) {
              for (std::int64_t j = 0; j < m; ++j) gathered[k][j] = p[j * st[k + 1]];
              p = gathered[k];
            }
            src[k] = p;
          }
          run_math_block(kernel, src, o + off[0] + i, m);
        }
      },
      math_grain);
}

/// out[i] = f(a[i]) into a new contiguous tensor, where `kernel(const T* x, T* o, n)`
/// computes one contiguous block with SIMD code (n <= math_block and a whole number of
/// 64-byte packets, `o` 64-byte aligned; `o` may serve as scratch space).
template <Element T, class Kernel>
Tensor<T> math_map(std::string_view op, const Tensor<T>& a, Kernel kernel) {
  check_cpu(op, a);
  Tensor<T> out = Tensor<T>::empty(a.shape(), a.device());
  math_for_each<T, 1>(out, {&a}, kernel);
  return out;
}

/// out = f(a, b) with broadcasting into a new contiguous tensor, where
/// `kernel(const T* a, const T* b, T* o, n)` computes one contiguous block (same contract
/// as math_map).
template <Element T, class Kernel>
Tensor<T> math_map2(std::string_view op, const Tensor<T>& a, const Tensor<T>& b, Kernel kernel) {
  check_cpu(op, a);
  check_cpu(op, b);
  const Shape shape = broadcast_shapes(op, a.shape(), b.shape());
  Tensor<T> out = Tensor<T>::empty(shape, a.device());
  if (a.shape() == shape && b.shape() == shape) {
    math_for_each<T, 2>(out, {&a, &b}, kernel);
  } else {
    const Tensor<T> ea = a.detach().expand(shape), eb = b.detach().expand(shape);
    math_for_each<T, 2>(out, {&ea, &eb}, kernel);
  }
  return out;
}

/// math_map on the CPU; the CUDA kernel `cuda_kernel` for CUDA tensors.
template <Element T, class Kernel>
Tensor<T> math_map(std::string_view op, const Tensor<T>& a, Kernel kernel, cuda::UnaryKernel cuda_kernel) {
  if (a.defined() && a.device().is_cuda()) return cuda_unary_map(op, a, cuda_kernel);
  return math_map(op, a, kernel);
}

/// math_map2 on the CPU; the CUDA kernel `cuda_kernel` for CUDA tensors.
template <Element T, class Kernel>
Tensor<T> math_map2(std::string_view op, const Tensor<T>& a, const Tensor<T>& b, Kernel kernel,
                    cuda::BinaryKernel cuda_kernel) {
  if ((a.defined() && a.device().is_cuda()) || (b.defined() && b.device().is_cuda()))
    return cuda_binary_map(op, a, b, cuda_kernel);
  return math_map2(op, a, b, kernel);
}

/// o[i] = sqrt(x[i]) (or 1 / sqrt(x[i]) when Reciprocal), correctly rounded IEEE sqrt and
/// division. Explicit SIMD because the compiler keeps std::sqrt scalar (errno) and Eigen's
/// fast-math sqrt trades exactness (and sqrt(inf)) for speed.
template <bool Reciprocal, FloatingElement T>
void sqrt_kernel(const T* x, T* o, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
      const __m512 s = _mm512_sqrt_ps(_mm512_loadu_ps(x + i));
      _mm512_storeu_ps(o + i, Reciprocal ? _mm512_div_ps(one, s) : s);
    }
  } else {
    const __m512d one = _mm512_set1_pd(1.0);
    for (; i + 8 <= n; i += 8) {
      const __m512d s = _mm512_sqrt_pd(_mm512_loadu_pd(x + i));
      _mm512_storeu_pd(o + i, Reciprocal ? _mm512_div_pd(one, s) : s);
    }
  }
#elif defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
      const __m256 s = _mm256_sqrt_ps(_mm256_loadu_ps(x + i));
      _mm256_storeu_ps(o + i, Reciprocal ? _mm256_div_ps(one, s) : s);
    }
  } else {
    const __m256d one = _mm256_set1_pd(1.0);
    for (; i + 4 <= n; i += 4) {
      const __m256d s = _mm256_sqrt_pd(_mm256_loadu_pd(x + i));
      _mm256_storeu_pd(o + i, Reciprocal ? _mm256_div_pd(one, s) : s);
    }
  }
#endif
  for (; i < n; ++i) {
    const T s = std::sqrt(x[i]);
    o[i] = Reciprocal ? T(1) / s : s;
  }
}

/// Above this argument Eigen's vectorised float exp returns +inf although exp(x) is still
/// finite (up to 88.72); those elements are redone with std::exp.
template <FloatingElement T>
inline constexpr T exp_vector_max = std::is_same_v<T, double> ? T(709.78) : T(88.3762626647949);

#if defined(__AVX512F__)
/// AVX-512 float kernels: 16 lanes per step, the last partial step through masked loads
/// and stores, so any n works.
namespace avx512 {

/// o[i] = f(x[i]) where `f(__m512) -> __m512` works on 16 floats.
template <class F>
inline void map(const float* x, float* o, std::int64_t n, F f) {
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, f(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const auto mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(o + i, mask, f(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

/// o[i] = f(a[i], b[i]) where `f(__m512, __m512) -> __m512` works on 16 floats.
template <class F>
inline void map2(const float* a, const float* b, float* o, std::int64_t n, F f) {
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, f(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  if (i < n) {
    const auto mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(o + i, mask, f(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i)));
  }
}

/// e^x for 16 floats, within ~1.3 ulp: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two
/// parts), e^r from the Cephes degree-7 polynomial, scaled by 2^n with vscalefps. Results
/// below the smallest normal float flush to 0 and above FLT_MAX become +inf; those lanes
/// are computed as exp(0) and replaced, so no subnormal ever reaches the arithmetic (a
/// subnormal result costs a microcode assist, ~20x slower). NaN stays NaN.
inline __m512 exp(__m512 x) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3365447505531f), _CMP_LT_OQ);  // log(FLT_MIN)
  const __mmask16 huge = _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.7228391116729996f), _CMP_GT_OQ);  // log(FLT_MAX)
  x = _mm512_mask_blend_ps(static_cast<__mmask16>(tiny | huge), x, _mm512_setzero_ps());
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512 result = _mm512_mask_blend_ps(huge, _mm512_scalef_ps(y, n), _mm512_set1_ps(std::numeric_limits<float>::infinity()));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), result);
}

/// sigmoid(x) for 16 floats from e = exp(-|x|) in (0, 1]: x >= 0 -> 1 / (1 + e), else
/// e / (1 + e). Never overflows; NaN stays NaN.
inline __m512 sigmoid(__m512 x) {
  const __m512 e = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
  const __m512 r = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  const __mmask16 nonneg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  return _mm512_mask_blend_ps(nonneg, _mm512_mul_ps(e, r), r);
}

}  // namespace avx512
#endif

/// o[i] = exp(x[i]); results that would be subnormal become +0 (see the file comment).
template <FloatingElement T>
void exp_kernel(const T* x, T* o, std::int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    avx512::map(x, o, n, [](__m512 v) { return avx512::exp(v); });
    return;
  }
#endif
  MathMap<T>(o, n) = cpu::vexp(ConstMathMap<T>(x, n));
  int any_large = 0;
  for (std::int64_t i = 0; i < n; ++i) any_large |= static_cast<int>(x[i] > exp_vector_max<T>);
  if (any_large) {
    for (std::int64_t i = 0; i < n; ++i)
      if (x[i] > exp_vector_max<T>) o[i] = std::exp(x[i]);
  }
}

/// o[i] = log(x[i]) (NaN for negative x, -inf for zero), exact for subnormal x as well.
template <FloatingElement T>
void log_kernel(const T* x, T* o, std::int64_t n) {
  MathMap<T>(o, n) = ConstMathMap<T>(x, n).log();
  // Eigen's vectorised log treats subnormal inputs as the smallest normal number; redo
  // those (rare) elements with std::log.
  constexpr T tiny = std::numeric_limits<T>::min();
  int any_subnormal = 0;
  for (std::int64_t i = 0; i < n; ++i) any_subnormal |= static_cast<int>(x[i] > T(0)) & static_cast<int>(x[i] < tiny);
  if (any_subnormal) {
    for (std::int64_t i = 0; i < n; ++i)
      if (x[i] > T(0) && x[i] < tiny) o[i] = std::log(x[i]);
  }
}

/// o[i] = x[i]^e for float x and a finite exponent e, as std::pow: |x|^e = exp(e log|x|)
/// evaluated in double with Eigen's vectorised log and exp (relative error ~1e-14 before
/// the final rounding to float), then the sign: negative for a negative base (or -0, -inf)
/// and an odd integer exponent, NaN for a finite negative base and a non-integer exponent.
inline void pow_float_kernel(const float* x, float* o, std::int64_t n, float e) {
  alignas(math_align) double wide[math_block];
  MathMap<double> w(wide, n);
  w = (static_cast<double>(e) * ConstMathMap<float>(x, n).template cast<double>().abs().log()).exp();
  const bool integer = std::nearbyint(e) == e;
  const bool odd = integer && std::fmod(e, 2.0f) != 0.0f;
  constexpr float inf = std::numeric_limits<float>::infinity();
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    float r = static_cast<float>(wide[i]);
    r = (odd && std::signbit(v)) ? -r : r;
    o[i] = (!integer && v < 0.0f && v > -inf) ? std::numeric_limits<float>::quiet_NaN() : r;
  }
}

/// Whether an ArithmeticElement is an integer type (no autograd, integer semantics).
template <class T>
inline constexpr bool is_integer_element = std::is_integral_v<T>;

/// x^e for integers by repeated squaring, wrapping on overflow like unsigned arithmetic.
template <class T>
T int_pow(T x, T e) {
  using U = std::make_unsigned_t<T>;
  U base = static_cast<U>(x), result = 1;
  for (auto k = static_cast<U>(e); k != 0; k >>= 1) {
    if (k & 1u) result = static_cast<U>(result * base);
    base = static_cast<U>(base * base);
  }
  return static_cast<T>(result);
}

}  // namespace detail

/// Elementwise e^x. Results below the smallest normal number flush to 0; exp(-inf) = 0.
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> exp(const Tensor<T>& t) {
  Tensor<T> out = detail::math_map("exp", t, [](const T* x, T* o, std::int64_t n) { detail::exp_kernel(x, o, n); }, {cuda::UnaryOp::Exp});
  // d exp(x) = exp(x) dx: reuse the output.
  record<T>("exp", out, {t}, [y = out.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, detail::binary_map<T>("exp backward", g, y, [](T gv, T yv) { return gv * yv; }, {cuda::BinaryOp::Mul}));
  });
  return out;
}

/// Elementwise natural logarithm. Like std::log: log(0) = -inf and a negative input gives
/// NaN (no exception).
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> log(const Tensor<T>& t) {
  Tensor<T> out = detail::math_map("log", t, [](const T* x, T* o, std::int64_t n) { detail::log_kernel(x, o, n); }, {cuda::UnaryOp::Log});
  // d log(x) = dx / x.
  record<T>("log", out, {t}, [x = t.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, detail::binary_map<T>("log backward", g, x, [](T gv, T xv) { return gv / xv; }, {cuda::BinaryOp::Div}));
  });
  return out;
}

/// Elementwise square root (correctly rounded; NaN for negative inputs).
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> sqrt(const Tensor<T>& t) {
  Tensor<T> out = detail::math_map("sqrt", t, [](const T* x, T* o, std::int64_t n) { detail::sqrt_kernel<false>(x, o, n); }, {cuda::UnaryOp::Sqrt});
  // d sqrt(x) = dx / (2 sqrt(x)): reuse the output (+inf at 0, like PyTorch).
  record<T>("sqrt", out, {t}, [y = out.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, detail::binary_map<T>("sqrt backward", g, y, [](T gv, T yv) { return gv / (T(2) * yv); }, {cuda::BinaryOp::SqrtGrad}));
  });
  return out;
}

/// Elementwise 1 / sqrt(x) (exact sqrt and division: rsqrt(0) = +inf, NaN for negatives).
// t: [...] -> [...]
template <FloatingElement T>
Tensor<T> rsqrt(const Tensor<T>& t) {
  Tensor<T> out = detail::math_map("rsqrt", t, [](const T* x, T* o, std::int64_t n) { detail::sqrt_kernel<true>(x, o, n); }, {cuda::UnaryOp::Rsqrt});
  // d x^(-1/2) = -1/2 x^(-3/2) dx = -1/2 y^3 dx.
  record<T>("rsqrt", out, {t}, [y = out.detach()](const Tensor<T>& g, GradSink& s) {
    s.add(0, detail::binary_map<T>("rsqrt backward", g, y, [](T gv, T yv) { return T(-0.5) * gv * yv * yv * yv; }, {cuda::BinaryOp::RsqrtGrad}));
  });
  return out;
}

/// Elementwise |x|. Integers: abs of the most negative value wraps to itself (two's
/// complement), as in PyTorch.
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> abs(const Tensor<T>& t) {
  Tensor<T> out;
  if constexpr (detail::is_integer_element<T>) {
    using U = std::make_unsigned_t<T>;
    out = detail::unary_map("abs", t, [](T x) { return x < 0 ? static_cast<T>(U(0) - static_cast<U>(x)) : x; }, {cuda::UnaryOp::Abs});
  } else {
    out = detail::unary_map("abs", t, [](T x) { return std::abs(x); }, {cuda::UnaryOp::Abs});
    // d|x| = sign(x) dx, with sign(0) = 0 (PyTorch's choice at the kink).
    record<T>("abs", out, {t}, [x = t.detach()](const Tensor<T>& g, GradSink& s) {
      s.add(0, detail::binary_map<T>("abs backward", g, x,
                                     [](T gv, T xv) { return xv > T(0) ? gv : (xv < T(0) ? -gv : T(0)); }, {cuda::BinaryOp::AbsGrad}));
    });
  }
  return out;
}

/// Elementwise x * x (integers wrap on overflow).
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> square(const Tensor<T>& t) {
  Tensor<T> out;
  if constexpr (detail::is_integer_element<T>) {
    using U = std::make_unsigned_t<T>;
    out = detail::unary_map("square", t, [](T x) { return static_cast<T>(static_cast<U>(x) * static_cast<U>(x)); },
                            {cuda::UnaryOp::Square});
  } else {
    out = detail::unary_map("square", t, [](T x) { return x * x; }, {cuda::UnaryOp::Square});
    record<T>("square", out, {t}, [x = t.detach()](const Tensor<T>& g, GradSink& s) {
      s.add(0, detail::binary_map<T>("square backward", g, x, [](T gv, T xv) { return T(2) * gv * xv; }, {cuda::BinaryOp::SquareGrad}));
    });
  }
  return out;
}

/// Elementwise x^exponent. Floating types follow std::pow (NaN for a negative base with a
/// non-integer exponent, pow(x, 0) = 1 even for NaN x); exponents 0, 1, 2, 3, 0.5, -1 and -2
/// take exact fast paths; other exponents use a vectorised exp(e log|x|) in double for
/// float tensors and std::pow for double tensors. Integer types: the exponent must be >= 0
/// and results wrap on overflow.
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> pow(const Tensor<T>& t, std::type_identity_t<T> exponent) {
  const T e = exponent;
  if constexpr (detail::is_integer_element<T>) {
    CONDENSE_CHECK(e >= 0, "pow", "integer tensors cannot be raised to a negative power, got exponent ", e, " for ",
                   t.describe());
    return detail::unary_map("pow", t, [e](T x) { return detail::int_pow(x, e); },
                             {cuda::UnaryOp::PowScalar, e});
  } else {
    Tensor<T> out;
    if (t.defined() && t.device().is_cuda()) {
      out = detail::cuda_unary_map("pow", t, {cuda::UnaryOp::PowScalar, double(e)});
    } else if (e == T(0)) {
      out = detail::unary_map("pow", t, [](T) { return T(1); });
    } else if (e == T(1)) {
      out = detail::unary_map("pow", t, [](T x) { return x; });
    } else if (e == T(2)) {
      out = detail::unary_map("pow", t, [](T x) { return x * x; });
    } else if (e == T(3)) {
      out = detail::unary_map("pow", t, [](T x) { return x * x * x; });
    } else if (e == T(-1)) {
      out = detail::unary_map("pow", t, [](T x) { return T(1) / x; });
    } else if (e == T(-2)) {
      out = detail::unary_map("pow", t, [](T x) { return T(1) / (x * x); });
    } else if (e == T(0.5)) {
      out = detail::math_map("pow", t, [](const T* x, T* o, std::int64_t n) {
        detail::sqrt_kernel<false>(x, o, n);
        // std::pow(-0, 0.5) = +0 and std::pow(-inf, 0.5) = +inf, unlike sqrt.
        constexpr T inf = std::numeric_limits<T>::infinity();
        for (std::int64_t i = 0; i < n; ++i) o[i] = x[i] == -inf ? inf : o[i] + T(0);
      });
    } else if constexpr (std::is_same_v<T, float>) {
      if (std::isfinite(e)) {
        out = detail::math_map("pow", t, [e](const float* x, float* o, std::int64_t n) { detail::pow_float_kernel(x, o, n, e); });
      } else {
        out = detail::unary_map("pow", t, [e](T x) { return std::pow(x, e); });
      }
    } else {
      // double: std::pow keeps full precision (exp(e log x) in double would not).
      out = detail::unary_map("pow", t, [e](T x) { return std::pow(x, e); });
    }
    // d x^e = e x^(e-1) dx; 0 when e == 0 (PyTorch's choice, also at x = 0).
    record<T>("pow", out, {t}, [x = t.detach(), e](const Tensor<T>& g, GradSink& s) {
      if (e == T(0)) {
        s.add(0, detail::zeros_on<T>(g.shape(), g.device()));
      } else if (e == T(2)) {
        s.add(0, detail::binary_map<T>("pow backward", g, x, [](T gv, T xv) { return T(2) * gv * xv; }, {cuda::BinaryOp::SquareGrad}));
      } else if (g.device().is_cuda()) {
        s.add(0, detail::cuda_binary_map("pow backward", g, x, {cuda::BinaryOp::PowGrad, double(e)}));
      } else {
        const Tensor<T> p = pow(x, e - T(1));
        s.add(0, detail::binary_map<T>("pow backward", g, p, [e](T gv, T pv) { return e * gv * pv; }));
      }
    });
    return out;
  }
}

/// Elementwise clamp into [lo, hi]; either bound may be absent (not both). NaN inputs stay
/// NaN. The gradient passes where lo <= x <= hi (bounds included, as in PyTorch) and is 0
/// elsewhere. Throws when both bounds are absent, a bound is NaN, or lo > hi.
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> clamp(const Tensor<T>& t, std::optional<std::type_identity_t<T>> lo, std::optional<std::type_identity_t<T>> hi) {
  CONDENSE_CHECK(lo.has_value() || hi.has_value(), "clamp", "at least one of the bounds must be given");
  if constexpr (!detail::is_integer_element<T>) {
    CONDENSE_CHECK(!(lo && std::isnan(*lo)) && !(hi && std::isnan(*hi)), "clamp", "a bound is NaN");
  }
  CONDENSE_CHECK(!(lo && hi) || *lo <= *hi, "clamp", "lower bound ", *lo, " is greater than upper bound ", *hi);
  Tensor<T> out;
  if (lo && hi) {
    const T l = *lo, h = *hi;
    out = detail::unary_map("clamp", t, [l, h](T x) { return std::min(std::max(x, l), h); },
                            {cuda::UnaryOp::Clamp, l, h});
  } else if (lo) {
    const T l = *lo;
    out = detail::unary_map("clamp", t, [l](T x) { return std::max(x, l); }, {cuda::UnaryOp::ClampMin, l});
  } else {
    const T h = *hi;
    out = detail::unary_map("clamp", t, [h](T x) { return std::min(x, h); }, {cuda::UnaryOp::ClampMax, h});
  }
  if constexpr (!detail::is_integer_element<T>) {
    record<T>("clamp", out, {t}, [x = t.detach(), lo, hi](const Tensor<T>& g, GradSink& s) {
      const T l = lo ? *lo : -std::numeric_limits<T>::infinity();
      const T h = hi ? *hi : std::numeric_limits<T>::infinity();
      s.add(0, detail::binary_map<T>("clamp backward", g, x, [l, h](T gv, T xv) { return (xv >= l && xv <= h) ? gv : T(0); },
                                     {cuda::BinaryOp::ClampGrad, double(l), double(h)}));
    });
  }
  return out;
}

/// Elementwise clamp into [lo, hi] (see the optional-bounds overload).
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> clamp(const Tensor<T>& t, std::type_identity_t<T> lo, std::type_identity_t<T> hi) {
  return clamp(t, std::optional<T>(lo), std::optional<T>(hi));
}

/// Elementwise max(x, lo); gradient passes where x >= lo.
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> clamp_min(const Tensor<T>& t, std::type_identity_t<T> lo) {
  return clamp(t, std::optional<T>(lo), std::optional<T>());
}

/// Elementwise min(x, hi); gradient passes where x <= hi.
// t: [...] -> [...]
template <ArithmeticElement T>
Tensor<T> clamp_max(const Tensor<T>& t, std::type_identity_t<T> hi) {
  return clamp(t, std::optional<T>(), std::optional<T>(hi));
}

// ---- the 16-bit floats -------------------------------------------------------------------
// bfloat16 and float16 tensors go through the float kernels (detail::through_float): the
// value and the gradient are computed in float and rounded once. Scalars are float.

/// exp of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> exp(const Tensor<T>& t) {
  return detail::through_float([](const Tensor<float>& x) { return exp(x); }, t);
}

/// log of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> log(const Tensor<T>& t) {
  return detail::through_float([](const Tensor<float>& x) { return log(x); }, t);
}

/// sqrt of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> sqrt(const Tensor<T>& t) {
  return detail::through_float([](const Tensor<float>& x) { return sqrt(x); }, t);
}

/// rsqrt of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> rsqrt(const Tensor<T>& t) {
  return detail::through_float([](const Tensor<float>& x) { return rsqrt(x); }, t);
}

/// |x| of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> abs(const Tensor<T>& t) {
  return detail::through_float([](const Tensor<float>& x) { return abs(x); }, t);
}

/// x^2 of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> square(const Tensor<T>& t) {
  return detail::through_float([](const Tensor<float>& x) { return square(x); }, t);
}

/// x^exponent of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> pow(const Tensor<T>& t, float exponent) {
  return detail::through_float([exponent](const Tensor<float>& x) { return pow(x, exponent); }, t);
}

/// clamp of a 16-bit tensor into [lo, hi] (either bound optional; computed in float).
template <HalfElement T>
Tensor<T> clamp(const Tensor<T>& t, std::optional<float> lo, std::optional<float> hi) {
  return detail::through_float([lo, hi](const Tensor<float>& x) { return clamp(x, lo, hi); }, t);
}

/// clamp of a 16-bit tensor into [lo, hi] (computed in float).
template <HalfElement T>
Tensor<T> clamp(const Tensor<T>& t, float lo, float hi) {
  return clamp(t, std::optional<float>(lo), std::optional<float>(hi));
}

/// max(x, lo) of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> clamp_min(const Tensor<T>& t, float lo) {
  return clamp(t, std::optional<float>(lo), std::optional<float>());
}

/// min(x, hi) of a 16-bit tensor (computed in float).
template <HalfElement T>
Tensor<T> clamp_max(const Tensor<T>& t, float hi) {
  return clamp(t, std::optional<float>(), std::optional<float>(hi));
}

}  // namespace condense

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
