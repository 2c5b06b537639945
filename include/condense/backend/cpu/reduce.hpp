// CPU reduction kernels. reduce_dims: out[m] = combine over r of in[m, r], where the kept
// dims (m) and the reduced dims (r) may be any subsets with any strides; parallel over
// outputs, with the loop order following the input's contiguous dimension so both common
// cases (reduce the last dim, reduce the leading rows) stream through memory. Reducers:
// sum/mean, max/min (NaN-propagating) and arg-max/min (value and position). Also the
// contiguous-run helpers (sum, dot, max: multi-accumulator loops the compiler vectorises)
// and the row kernels of logsumexp (max pass + exp-sum pass with Eigen's vectorised exp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cpu/strided.hpp"
#include "condense/core/shape.hpp"

// GCC 12 reports false -Wmaybe-uninitialized warnings from inside Eigen's AVX-512 exp when
// it is inlined into the kernels below; silence that one warning for this code only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace condense::cpu {

/// A reducer that can also fold a contiguous run of `n` elements in one call (vectorised).
template <class Reducer, class T, class Acc>
concept BlockReducer = requires(const Reducer& r, Acc& acc, const T* p, std::int64_t n) { r.block(acc, p, n); };

/// Reduces `in` (shape, strides, already at its offset) over the dims where `reduce[d]` is
/// true. For each output (kept dims in row-major order, flat index m) calls
/// `store(m, acc, count)` with the final accumulator. The reduced elements of one output
/// are visited in row-major order of the reduced dims. `Reducer` provides `Acc init()` and
/// `void step(Acc&, T)`, optionally `void block(Acc&, const T*, std::int64_t n)` for a
/// contiguous run (used when the innermost reduced dim has stride 1).
template <class T, class Reducer, class Store>
void reduce_dims_store(const T* in, const Shape& shape, const Strides& strides, const std::vector<bool>& reduce,
                       const Reducer& reducer, Store&& store) {
  using Acc = decltype(reducer.init());
  Shape kept_shape, red_shape;
  Strides kept_strides, red_strides;
  bool inner_is_kept = false;
  std::int64_t best_stride = -1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (reduce[d]) {
      red_shape.push_back(shape[d]);
      red_strides.push_back(strides[d]);
    } else {
      kept_shape.push_back(shape[d]);
      kept_strides.push_back(strides[d]);
    }
    if (shape[d] > 1 && (best_stride < 0 || strides[d] < best_stride)) {
      best_stride = strides[d];
      inner_is_kept = !reduce[d];
    }
  }
  const std::int64_t m_count = numel_of(kept_shape);
  const std::int64_t r_count = numel_of(red_shape);
  const Strides out_strides = contiguous_strides(kept_shape);
  StridedLayout<2> m_layout(kept_shape, {&kept_strides, &out_strides});
  StridedLayout<1> r_layout(red_shape, {&red_strides});
  const std::int64_t r_rows = r_layout.rows(), r_inner = r_layout.inner(), r_step = r_layout.strides[0].back();
  if (m_count == 0) return;

  auto reduce_one = [&](std::int64_t in_offset) {
    Acc acc = reducer.init();
    if (r_count == 0) return acc;
    for (std::int64_t rr = 0; rr < r_rows; ++rr) {
      const T* p = in + in_offset + r_layout.row_offsets(rr)[0];
      if constexpr (BlockReducer<Reducer, T, Acc>) {
        if (r_step == 1) {
          reducer.block(acc, p, r_inner);
          continue;
        }
      }
      for (std::int64_t j = 0; j < r_inner; ++j) reducer.step(acc, p[j * r_step]);
    }
    return acc;
  };

  if (!inner_is_kept || m_layout.inner() < 8) {
    // Each output reads a block of the input: parallel over outputs.
    const std::int64_t grain = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(r_count, 1));
    parallel_for(0, m_count, grain, [&](std::int64_t m0, std::int64_t m1) {
      const std::int64_t inner = m_layout.inner();
      for (std::int64_t m = m0; m < m1;) {
        const auto off = m_layout.row_offsets(m / inner);
        for (std::int64_t i = m % inner; i < inner && m < m1; ++i, ++m)
          store(off[1] + i * m_layout.strides[1].back(), reduce_one(off[0] + i * m_layout.strides[0].back()), r_count);
      }
    });
    return;
  }
  // The kept dims are the contiguous ones: sweep the reduced dims outside, the kept row inside.
  const std::int64_t inner = m_layout.inner();
  const std::int64_t in_step = m_layout.strides[0].back(), out_step = m_layout.strides[1].back();
  const std::int64_t grain = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(r_count * inner, 1));
  parallel_for(0, m_layout.rows(), grain, [&](std::int64_t row0, std::int64_t row1) {
    std::vector<Acc> acc(static_cast<std::size_t>(inner));
    for (std::int64_t row = row0; row < row1; ++row) {
      const auto off = m_layout.row_offsets(row);
      for (auto& a : acc) a = reducer.init();
      for (std::int64_t rr = 0; rr < r_rows; ++rr) {
        const std::int64_t r_off = r_layout.row_offsets(rr)[0];
        for (std::int64_t j = 0; j < r_inner; ++j) {
          const T* p = in + off[0] + r_off + j * r_step;
          for (std::int64_t i = 0; i < inner; ++i) reducer.step(acc[static_cast<std::size_t>(i)], p[i * in_step]);
        }
      }
      for (std::int64_t i = 0; i < inner; ++i) store(off[1] + i * out_step, acc[static_cast<std::size_t>(i)], r_count);
    }
  });
}

/// Reduces `in` over the dims where `reduce[d]` is true into contiguous `out` (the kept
/// dims in order): out[m] = reducer.finish(acc, count). `Reducer` additionally provides
/// `Out finish(const Acc&, std::int64_t count)`.
template <class T, class Out, class Reducer>
void reduce_dims(const T* in, const Shape& shape, const Strides& strides, const std::vector<bool>& reduce, Out* out,
                 const Reducer& reducer) {
  reduce_dims_store(in, shape, strides, reduce, reducer, [&](std::int64_t m, const auto& acc, std::int64_t count) {
    out[m] = reducer.finish(acc, count);
  });
}

/// Eigen column-array view of a contiguous run (used for the vectorised exp).
template <class T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

/// exp(x), flushed to exact 0 below log of the smallest normal number. Eigen clamps the
/// argument of its vectorised exp, so exp(-inf) comes out as a tiny denormal (about 3e-39 in
/// float, 5e-309 in double) instead of 0; masked scores must give exact zeros. A functor with
/// a packet path: Eigen 3.4 evaluates select() and comparisons one scalar at a time, which
/// made every exp a libm call. NaN stays NaN on both paths.
template <class T>
struct ExpFlushOp {
  /// log of the smallest normal number.
  static constexpr T lowest_exponent = std::is_same_v<T, double> ? T(-708.39641853226408) : T(-87.3365447505531);
  T operator()(const T& x) const { return x < lowest_exponent ? T(0) : std::exp(x); }
  template <class Packet>
  Packet packetOp(const Packet& x) const {
    namespace ei = Eigen::internal;
    const Packet below = ei::pcmp_lt(x, ei::pset1<Packet>(lowest_exponent));  // all ones where x < lowest
    return ei::pandnot(ei::pexp(x), below);
  }
};

/// Eigen's vectorised exp of an array expression, with exp(x) = 0 below log of the smallest
/// normal number (see ExpFlushOp). Meant for shifted arguments (x - max <= 0): Eigen's float
/// packet exp already overflows to +inf above 88.38, where exp is still finite up to 88.72
/// (ops/unary.hpp's exp kernel redoes those). Nodes are held by value, so the result may be
/// used within the same full-expression as its argument.
template <class Derived>
auto vexp(const Eigen::ArrayBase<Derived>& arg) {
  using T = typename Derived::Scalar;
  return arg.derived().unaryExpr(ExpFlushOp<T>{});
}

/// Independent accumulators of the contiguous loops below (two 64-byte vectors' worth), so
/// that the compiler vectorises them without reassociating a single running sum.
template <class T>
inline constexpr int lanes = static_cast<int>(128 / sizeof(T));

/// Sum of a contiguous run (vectorised; the order of additions differs from a plain loop).
template <class T>
T sum_contiguous(const T* p, std::int64_t n) {
  constexpr int L = lanes<T>;
  T acc[L] = {};
  std::int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int j = 0; j < L; ++j) acc[j] += p[i + j];
  T s = T(0);
  for (int j = 0; j < L; ++j) s += acc[j];
  for (; i < n; ++i) s += p[i];
  return s;
}

/// Sum of a[i] * b[i] over a contiguous run (vectorised).
template <class T>
T dot_contiguous(const T* a, const T* b, std::int64_t n) {
  constexpr int L = lanes<T>;
  T acc[L] = {};
  std::int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int j = 0; j < L; ++j) acc[j] += a[i + j] * b[i + j];
  T s = T(0);
  for (int j = 0; j < L; ++j) s += acc[j];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

/// Sum (or mean when `mean` is set) reducer.
template <class T>
struct SumReducer {
  bool mean = false;
  T init() const { return T(0); }
  void step(T& acc, T x) const { acc += x; }
  void block(T& acc, const T* p, std::int64_t n) const { acc += sum_contiguous(p, n); }
  T finish(const T& acc, std::int64_t count) const { return mean && count > 0 ? acc / static_cast<T>(count) : acc; }
};

/// Largest (IsMax) or smallest value; a NaN anywhere gives NaN. Undefined for count 0
/// (callers reject empty reductions).
template <class T, bool IsMax>
struct ExtremumReducer {
  T init() const {
    if constexpr (std::numeric_limits<T>::has_infinity)
      return IsMax ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    else
      return IsMax ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
  }
  /// True when x replaces acc: strictly better, or NaN (which then stays).
  static bool better(T x, T acc) {
    if constexpr (IsMax) return x > acc || x != x;
    else return x < acc || x != x;
  }
  void step(T& acc, T x) const { acc = better(x, acc) ? x : acc; }
  void block(T& acc, const T* p, std::int64_t n) const {
    constexpr int L = lanes<T>;
    T part[L];
    for (int j = 0; j < L; ++j) part[j] = acc;
    std::int64_t i = 0;
    for (; i + L <= n; i += L)
      for (int j = 0; j < L; ++j) part[j] = better(p[i + j], part[j]) ? p[i + j] : part[j];
    for (int j = 0; j < L; ++j) step(acc, part[j]);
    for (; i < n; ++i) step(acc, p[i]);
  }
  T finish(const T& acc, std::int64_t) const { return acc; }
};

/// Largest element of a non-empty contiguous run; NaN if any element is NaN.
template <class T>
T max_contiguous(const T* p, std::int64_t n) {
  const ExtremumReducer<T, true> r;
  T acc = r.init();
  r.block(acc, p, n);
  return acc;
}

/// Accumulator of ArgReducer: best value, its position among the visited elements, and
/// how many elements were visited.
template <class T>
struct ArgAcc {
  T value;
  std::int64_t index;
  std::int64_t seen;
};

/// Largest (IsMax) or smallest value and the position of its first occurrence (in visiting
/// order); the first NaN wins.
template <class T, bool IsMax>
struct ArgReducer {
  ArgAcc<T> init() const { return {ExtremumReducer<T, IsMax>{}.init(), 0, 0}; }
  void step(ArgAcc<T>& acc, T x) const {
    const bool acc_nan = acc.value != acc.value;
    if (!acc_nan && (acc.seen == 0 || ExtremumReducer<T, IsMax>::better(x, acc.value))) {
      acc.value = x;
      acc.index = acc.seen;
    }
    ++acc.seen;
  }
};

/// Stable logsumexp of `rows` contiguous rows of `n` elements: out[r] = m + log(sum(exp(x - m)))
/// with m the row max. A row of all -inf (or an empty row) gives -inf, a row holding +inf
/// gives +inf, a NaN gives NaN.
template <class T>
void logsumexp_rows(const T* in, T* out, std::int64_t rows, std::int64_t n) {
  constexpr std::int64_t chunk = 1024;
  const std::int64_t grain = std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(n, 1));
  parallel_for(0, rows, grain, [&](std::int64_t r0, std::int64_t r1) {
    alignas(64) T buffer[chunk];
    for (std::int64_t r = r0; r < r1; ++r) {
      if (n == 0) {
        out[r] = -std::numeric_limits<T>::infinity();
        continue;
      }
      const T* x = in + r * n;
      const T m = max_contiguous(x, n);
      if (!std::isfinite(m)) {  // -inf (all -inf), +inf, or NaN
        out[r] = m;
        continue;
      }
      T s = T(0);
      for (std::int64_t j = 0; j < n; j += chunk) {
        const std::int64_t len = std::min(chunk, n - j);
        ArrayMap<T>(buffer, len) = vexp(ConstArrayMap<T>(x + j, len) - m);
        s += sum_contiguous(buffer, len);
      }
      out[r] = m + std::log(s);
    }
  });
}

/// Backward of logsumexp_rows: grad[r, j] = g[r] * exp(x[r, j] - out[r]) (the softmax of the
/// row). Rows whose result is -inf get zeros.
template <class T>
void logsumexp_rows_backward(const T* x, const T* out, const T* g, T* grad, std::int64_t rows, std::int64_t n) {
  const std::int64_t grain = std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(n, 1));
  parallel_for(0, rows, grain, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      ArrayMap<T> gx(grad + r * n, n);
      if (out[r] == -std::numeric_limits<T>::infinity()) {
        gx.setZero();
        continue;
      }
      gx = vexp(ConstArrayMap<T>(x + r * n, n) - out[r]) * g[r];
    }
  });
}

}  // namespace condense::cpu

/// The packet path of ExpFlushOp is used where Eigen has a vectorised exp for the scalar.
template <class T>
struct Eigen::internal::functor_traits<condense::cpu::ExpFlushOp<T>> {
  enum { Cost = 20 * Eigen::NumTraits<T>::MulCost, PacketAccess = Eigen::internal::packet_traits<T>::HasExp };
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
