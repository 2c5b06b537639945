// Comparisons and masks on the CPU and CUDA: eq/ne/lt/le/gt/ge (tensor-tensor with broadcasting, or
// tensor-scalar) giving Tensor<bool>; logical_and/or/xor/not on Tensor<bool>; any/all over
// a whole mask (plain bool); where(cond, a, b) with broadcasting among all three, and
// masked_fill. where and masked_fill are differentiable in their tensor values. The 16-bit
// floats (bfloat16, float16) are compared in float and selected as stored (no rounding);
// their scalar forms also take a float scalar (compared unrounded; where and masked_fill
// round it to the tensor's type once, so masked_fill(t, mask, -inf) works).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cpu/strided.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"
#include "condense/ops/reduce.hpp"

namespace condense {
namespace detail {

/// The value a comparison sees: float for the 16-bit float types, the element otherwise.
template <Element T>
auto compare_value(T v) {
  if constexpr (HalfElement<T>) return static_cast<float>(v);
  else return v;
}

/// The six comparisons on compare_value()s (callable with any two element types).
inline constexpr auto compare_eq = [](auto x, auto y) { return compare_value(x) == compare_value(y); };
inline constexpr auto compare_ne = [](auto x, auto y) { return compare_value(x) != compare_value(y); };
inline constexpr auto compare_lt = [](auto x, auto y) { return compare_value(x) < compare_value(y); };
inline constexpr auto compare_le = [](auto x, auto y) { return compare_value(x) <= compare_value(y); };
inline constexpr auto compare_gt = [](auto x, auto y) { return compare_value(x) > compare_value(y); };
inline constexpr auto compare_ge = [](auto x, auto y) { return compare_value(x) >= compare_value(y); };

/// Calls fn(offsets, n, inner_strides) over pieces of the rows of `layout`, split across
/// threads by elements (so one long merged row is still shared out).
template <std::size_t K, class Fn>
void compare_for_each_chunk(const cpu::StridedLayout<K>& layout, Fn&& fn, std::int64_t grain = elementwise_grain) {
  const std::int64_t inner = layout.inner();
  std::array<std::int64_t, K> st;
  for (std::size_t k = 0; k < K; ++k) st[k] = layout.strides[k].back();
  cpu::parallel_for(0, layout.rows() * inner, grain, [&](std::int64_t e0, std::int64_t e1) {
    std::int64_t r = e0 / inner, i = e0 % inner;
    while (e0 < e1) {
      const std::int64_t n = std::min(inner - i, e1 - e0);
      auto off = layout.row_offsets(r);
      for (std::size_t k = 0; k < K; ++k) off[k] += i * st[k];
      fn(off, n, st);
      e0 += n;
      ++r;
      i = 0;
    }
  });
}

/// out[i] = f(a[i]) into a new contiguous Tensor<R>.
template <Element R, Element T, class F>
Tensor<R> compare_unary_map(std::string_view op, const Tensor<T>& a, F f) {
  check_cpu(op, a);
  Tensor<R> out = Tensor<R>::empty(a.shape(), a.device());
  if (a.numel() == 0) return out;
  R* o = out.data();
  const T* x = a.data();
  cpu::StridedLayout<2> layout(a.shape(), {&out.strides(), &a.strides()});
  compare_for_each_chunk(layout, [&](const std::array<std::int64_t, 2>& off, std::int64_t n, const std::array<std::int64_t, 2>& st) {
    R* po = o + off[0];
    const T* px = x + off[1];
    if (st[1] == 1) {
      for (std::int64_t i = 0; i < n; ++i) po[i] = f(px[i]);
    } else {
      for (std::int64_t i = 0; i < n; ++i) po[i] = f(px[i * st[1]]);
    }
  });
  return out;
}

/// Broadcast shape of where's three operands; throws naming `op` and all three shapes.
inline Shape where_shape(std::string_view op, const Shape& c, const Shape& a, const Shape& b) {
  const std::size_t rank = std::max({c.size(), a.size(), b.size()});
  Shape out{std::vector<std::int64_t>(rank, 1)};
  for (const Shape* s : {&c, &a, &b}) {
    for (std::size_t i = 0; i < s->size(); ++i) {
      const std::int64_t e = (*s)[i];
      std::int64_t& o = out[rank - s->size() + i];
      CONDENSE_CHECK(e == o || e == 1 || o == 1, op, "shapes cannot be broadcast: ", c, ", ", a, " and ", b);
      if (o == 1) o = e;
    }
  }
  return out;
}

/// c ? x : y without a branch (a random mask would defeat the branch predictor): a bitwise
/// blend through the unsigned integer of T's size, which also vectorises.
template <Element T>
inline T where_select(bool c, T x, T y) {
  using U = std::conditional_t<sizeof(T) == 8, std::uint64_t,
                               std::conditional_t<sizeof(T) == 4, std::uint32_t,
                                                  std::conditional_t<sizeof(T) == 2, std::uint16_t, std::uint8_t>>>;
  static_assert(sizeof(U) == sizeof(T));
  const U m = static_cast<U>(U(0) - static_cast<U>(c));
  return std::bit_cast<T>(static_cast<U>((std::bit_cast<U>(x) & m) | (std::bit_cast<U>(y) & static_cast<U>(~m))));
}

/// out = cond ? a : b with broadcasting among the three, into a new contiguous tensor.
template <Element T>
Tensor<T> where_kernel(std::string_view op, const Tensor<bool>& cond, const Tensor<T>& a, const Tensor<T>& b) {
  if ((cond.defined() && cond.device().is_cuda()) || (a.defined() && a.device().is_cuda()) ||
      (b.defined() && b.device().is_cuda())) {
    check_cuda_operands<T>(op, {&a, &b});
    CONDENSE_CHECK(cond.defined() && cond.device() == a.device(), op, "condition ", cond.describe(), " and values ",
                   a.describe(), " on different devices");
    const Shape shape = where_shape(op, cond.shape(), a.shape(), b.shape());
    Tensor<T> out = Tensor<T>::empty(shape, a.device());
    const auto [out_arg, cond_arg, a_arg, b_arg] = cuda_args(op, shape, out, cond, a, b);
    cuda::where(out_arg, cond_arg, a_arg, b_arg, op);
    return out;
  }
  check_cpu(op, cond);
  check_cpu(op, a);
  check_cpu(op, b);
  const Shape shape = where_shape(op, cond.shape(), a.shape(), b.shape());
  Tensor<T> out = Tensor<T>::empty(shape, a.device());
  if (out.numel() == 0) return out;
  const Tensor<bool> ec = cond.detach().expand(shape);
  const Tensor<T> ea = a.detach().expand(shape), eb = b.detach().expand(shape);
  cpu::StridedLayout<4> layout(shape, {&out.strides(), &ec.strides(), &ea.strides(), &eb.strides()});
  T* o = out.data();
  const bool* c = ec.data();
  const T* x = ea.data();
  const T* y = eb.data();
  compare_for_each_chunk(layout, [&](const std::array<std::int64_t, 4>& off, std::int64_t n, const std::array<std::int64_t, 4>& st) {
    T* po = o + off[0];
    const bool* pc = c + off[1];
    const T* px = x + off[2];
    const T* py = y + off[3];
    if (st[1] == 1 && st[2] == 1 && st[3] == 1) {
      for (std::int64_t i = 0; i < n; ++i) po[i] = where_select(pc[i], px[i], py[i]);
    } else if (st[1] == 1 && st[2] == 1 && st[3] == 0) {
      const T vy = *py;
      for (std::int64_t i = 0; i < n; ++i) po[i] = where_select(pc[i], px[i], vy);
    } else if (st[1] == 1 && st[2] == 0 && st[3] == 1) {
      const T vx = *px;
      for (std::int64_t i = 0; i < n; ++i) po[i] = where_select(pc[i], vx, py[i]);
    } else if (st[1] == 0) {  // one condition for the whole row
      const T* from = *pc ? px : py;
      const std::int64_t sf = *pc ? st[2] : st[3];
      if (sf == 1) std::copy(from, from + n, po);
      else for (std::int64_t i = 0; i < n; ++i) po[i] = from[i * sf];
    } else {
      for (std::int64_t i = 0; i < n; ++i) po[i] = where_select(pc[i * st[1]], px[i * st[2]], py[i * st[3]]);
    }
  });
  return out;
}

/// A 0-dim CPU tensor holding `value` (no autograd).
template <Element T>
Tensor<T> compare_scalar(T value, Device device) {
  Tensor<T> s = Tensor<T>::empty(Shape{}, Device::cpu());
  *s.data() = value;
  return device.is_cpu() ? s : s.to(device);
}

/// A comparison of a and b with broadcasting: the CUDA kernel `code` for CUDA tensors, else
/// binary_map with `f` on the CPU.
template <Element T, class F>
Tensor<bool> compare_map(std::string_view op, const Tensor<T>& a, const Tensor<T>& b, cuda::CompareOp code, F f) {
  if ((a.defined() && a.device().is_cuda()) || (b.defined() && b.device().is_cuda())) {
    check_cuda_operands<T>(op, {&a, &b});
    const Shape shape = broadcast_shapes(op, a.shape(), b.shape());
    Tensor<bool> out = Tensor<bool>::empty(shape, a.device());
    const auto [out_arg, a_arg, b_arg] = cuda_args(op, shape, out, a, b);
    cuda::compare(code, out_arg, a_arg, b_arg, op);
    return out;
  }
  return binary_map<bool>(op, a, b, f);
}

/// A comparison of a with the scalar s: on CUDA through compare_map with s as a device
/// scalar, else compare_unary_map with `f` (which holds s) on the CPU.
template <Element T, class F>
Tensor<bool> compare_scalar_map(std::string_view op, const Tensor<T>& a, T s, cuda::CompareOp code, F f) {
  if (a.defined() && a.device().is_cuda()) return compare_map(op, a, compare_scalar<T>(s, a.device()), code, f);
  return compare_unary_map<bool>(op, a, [f, s](T x) { return f(x, s); });
}

/// A comparison of a 16-bit tensor with a float scalar, in float (s is not rounded to 16
/// bits). On CUDA: the 16-bit kernel when s is exact in T, else on a float copy of a.
template <HalfElement T, class F>
Tensor<bool> compare_float_scalar_map(std::string_view op, const Tensor<T>& a, float s, cuda::CompareOp code, F f) {
  if (a.defined() && a.device().is_cuda()) {
    if (static_cast<float>(T(s)) == s) return compare_scalar_map<T>(op, a, T(s), code, f);
    return compare_scalar_map<float>(op, cast<float>(a.detach()), s, code, f);
  }
  return compare_unary_map<bool>(op, a, [f, s](T x) { return f(x, s); });
}

/// True when some (any_true) or every (!any_true) element of a CUDA mask is true: the mask
/// as int32 reduced with max or min on the device, one value read back.
inline bool cuda_mask_reduce(std::string_view op, const Tensor<bool>& t, bool any_true) {
  Tensor<std::int32_t> as_int = Tensor<std::int32_t>::empty({t.numel()}, t.device());
  cuda_copy_into(op, as_int, t.detach().reshape({t.numel()}));
  const Tensor<std::int32_t> r =
      cuda_reduce(op, as_int, std::vector<bool>{true}, false, any_true ? cuda::ReduceOp::Max : cuda::ReduceOp::Min);
  return r.cpu().data()[0] != 0;
}

}  // namespace detail

// ---- comparisons ---------------------------------------------------------------------------

/// a == b elementwise with broadcasting (NaN compares unequal).
// a: [...], b: [...] -> Tensor<bool> of broadcast(a, b)
template <Element T>
Tensor<bool> eq(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::compare_map("eq", a, b, cuda::CompareOp::Eq, detail::compare_eq);
}
/// a != b elementwise with broadcasting (true where either is NaN).
// a: [...], b: [...] -> Tensor<bool> of broadcast(a, b)
template <Element T>
Tensor<bool> ne(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::compare_map("ne", a, b, cuda::CompareOp::Ne, detail::compare_ne);
}
/// a < b elementwise with broadcasting.
// a: [...], b: [...] -> Tensor<bool> of broadcast(a, b)
template <Element T>
Tensor<bool> lt(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::compare_map("lt", a, b, cuda::CompareOp::Lt, detail::compare_lt);
}
/// a <= b elementwise with broadcasting.
// a: [...], b: [...] -> Tensor<bool> of broadcast(a, b)
template <Element T>
Tensor<bool> le(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::compare_map("le", a, b, cuda::CompareOp::Le, detail::compare_le);
}
/// a > b elementwise with broadcasting.
// a: [...], b: [...] -> Tensor<bool> of broadcast(a, b)
template <Element T>
Tensor<bool> gt(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::compare_map("gt", a, b, cuda::CompareOp::Gt, detail::compare_gt);
}
/// a >= b elementwise with broadcasting.
// a: [...], b: [...] -> Tensor<bool> of broadcast(a, b)
template <Element T>
Tensor<bool> ge(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::compare_map("ge", a, b, cuda::CompareOp::Ge, detail::compare_ge);
}

/// a == s elementwise.
// a: [...], s: scalar -> Tensor<bool> [...]
template <Element T>
Tensor<bool> eq(const Tensor<T>& a, std::type_identity_t<T> s) {
  return detail::compare_scalar_map<T>("eq", a, s, cuda::CompareOp::Eq, detail::compare_eq);
}
/// a != s elementwise.
// a: [...], s: scalar -> Tensor<bool> [...]
template <Element T>
Tensor<bool> ne(const Tensor<T>& a, std::type_identity_t<T> s) {
  return detail::compare_scalar_map<T>("ne", a, s, cuda::CompareOp::Ne, detail::compare_ne);
}
/// a < s elementwise.
// a: [...], s: scalar -> Tensor<bool> [...]
template <Element T>
Tensor<bool> lt(const Tensor<T>& a, std::type_identity_t<T> s) {
  return detail::compare_scalar_map<T>("lt", a, s, cuda::CompareOp::Lt, detail::compare_lt);
}
/// a <= s elementwise.
// a: [...], s: scalar -> Tensor<bool> [...]
template <Element T>
Tensor<bool> le(const Tensor<T>& a, std::type_identity_t<T> s) {
  return detail::compare_scalar_map<T>("le", a, s, cuda::CompareOp::Le, detail::compare_le);
}
/// a > s elementwise.
// a: [...], s: scalar -> Tensor<bool> [...]
template <Element T>
Tensor<bool> gt(const Tensor<T>& a, std::type_identity_t<T> s) {
  return detail::compare_scalar_map<T>("gt", a, s, cuda::CompareOp::Gt, detail::compare_gt);
}
/// a >= s elementwise.
// a: [...], s: scalar -> Tensor<bool> [...]
template <Element T>
Tensor<bool> ge(const Tensor<T>& a, std::type_identity_t<T> s) {
  return detail::compare_scalar_map<T>("ge", a, s, cuda::CompareOp::Ge, detail::compare_ge);
}

// The 16-bit floats against a float scalar, compared in float (s is not rounded first).

/// a == s for a 16-bit tensor and a float scalar, compared in float.
// a: [...], s: float scalar -> Tensor<bool> [...]
template <HalfElement T>
Tensor<bool> eq(const Tensor<T>& a, float s) {
  return detail::compare_float_scalar_map<T>("eq", a, s, cuda::CompareOp::Eq, detail::compare_eq);
}
/// a != s for a 16-bit tensor and a float scalar, compared in float.
// a: [...], s: float scalar -> Tensor<bool> [...]
template <HalfElement T>
Tensor<bool> ne(const Tensor<T>& a, float s) {
  return detail::compare_float_scalar_map<T>("ne", a, s, cuda::CompareOp::Ne, detail::compare_ne);
}
/// a < s for a 16-bit tensor and a float scalar, compared in float.
// a: [...], s: float scalar -> Tensor<bool> [...]
template <HalfElement T>
Tensor<bool> lt(const Tensor<T>& a, float s) {
  return detail::compare_float_scalar_map<T>("lt", a, s, cuda::CompareOp::Lt, detail::compare_lt);
}
/// a <= s for a 16-bit tensor and a float scalar, compared in float.
// a: [...], s: float scalar -> Tensor<bool> [...]
template <HalfElement T>
Tensor<bool> le(const Tensor<T>& a, float s) {
  return detail::compare_float_scalar_map<T>("le", a, s, cuda::CompareOp::Le, detail::compare_le);
}
/// a > s for a 16-bit tensor and a float scalar, compared in float.
// a: [...], s: float scalar -> Tensor<bool> [...]
template <HalfElement T>
Tensor<bool> gt(const Tensor<T>& a, float s) {
  return detail::compare_float_scalar_map<T>("gt", a, s, cuda::CompareOp::Gt, detail::compare_gt);
}
/// a >= s for a 16-bit tensor and a float scalar, compared in float.
// a: [...], s: float scalar -> Tensor<bool> [...]
template <HalfElement T>
Tensor<bool> ge(const Tensor<T>& a, float s) {
  return detail::compare_float_scalar_map<T>("ge", a, s, cuda::CompareOp::Ge, detail::compare_ge);
}

// ---- logical ops on masks ------------------------------------------------------------------

/// a AND b elementwise with broadcasting.
// a: [...], b: [...] -> broadcast(a, b)
inline Tensor<bool> logical_and(const Tensor<bool>& a, const Tensor<bool>& b) {
  return detail::compare_map<bool>("logical_and", a, b, cuda::CompareOp::And, [](bool x, bool y) { return x && y; });
}
/// a OR b elementwise with broadcasting.
// a: [...], b: [...] -> broadcast(a, b)
inline Tensor<bool> logical_or(const Tensor<bool>& a, const Tensor<bool>& b) {
  return detail::compare_map<bool>("logical_or", a, b, cuda::CompareOp::Or, [](bool x, bool y) { return x || y; });
}
/// a XOR b elementwise with broadcasting.
// a: [...], b: [...] -> broadcast(a, b)
inline Tensor<bool> logical_xor(const Tensor<bool>& a, const Tensor<bool>& b) {
  return detail::compare_map<bool>("logical_xor", a, b, cuda::CompareOp::Xor, [](bool x, bool y) { return x != y; });
}
/// NOT a elementwise.
// a: [...] -> [...]
inline Tensor<bool> logical_not(const Tensor<bool>& a) {
  return detail::compare_scalar_map<bool>("logical_not", a, false, cuda::CompareOp::Eq, [](bool x, bool y) { return x == y; });
}

/// True when some element of the mask is true (false for an empty mask). Returns a plain
/// bool, not a tensor: the whole mask is reduced and read on the host.
// t: [...] -> bool
inline bool any(const Tensor<bool>& t) {
  CONDENSE_CHECK(t.defined(), "any", "undefined tensor argument");
  if (t.numel() == 0) return false;
  if (t.device().is_cuda()) return detail::cuda_mask_reduce("any", t, true);
  const Tensor<bool> dense = contiguous(t.detach());
  const bool* p = dense.data();
  std::atomic<bool> found{false};
  cpu::parallel_for(0, dense.numel(), 1 << 16, [&](std::int64_t i0, std::int64_t i1) {
    bool local = false;
    for (std::int64_t i = i0; i < i1; ++i) local |= p[i];
    if (local) found.store(true, std::memory_order_relaxed);
  });
  return found.load();
}

/// True when every element of the mask is true (true for an empty mask). Returns a plain
/// bool, not a tensor.
// t: [...] -> bool
inline bool all(const Tensor<bool>& t) {
  CONDENSE_CHECK(t.defined(), "all", "undefined tensor argument");
  if (t.numel() == 0) return true;
  if (t.device().is_cuda()) return detail::cuda_mask_reduce("all", t, false);
  const Tensor<bool> dense = contiguous(t.detach());
  const bool* p = dense.data();
  std::atomic<bool> missing{false};
  cpu::parallel_for(0, dense.numel(), 1 << 16, [&](std::int64_t i0, std::int64_t i1) {
    bool local = true;
    for (std::int64_t i = i0; i < i1; ++i) local &= p[i];
    if (!local) missing.store(true, std::memory_order_relaxed);
  });
  return !missing.load();
}

// ---- selection -----------------------------------------------------------------------------

/// cond ? a : b elementwise, broadcasting cond, a and b together. Any element type (values
/// are copied as stored); the gradient goes to a where cond holds and to b elsewhere
/// (summed over broadcast dims) for float, double and the 16-bit floats.
// cond: [...], a: [...], b: [...] -> broadcast(cond, a, b)
template <Element T>
Tensor<T> where(const Tensor<bool>& cond, const Tensor<T>& a, const Tensor<T>& b) {
  if (a.defined() && b.defined()) detail::check_same_device("where", a, b);
  if (cond.defined() && a.defined()) detail::check_same_device("where", cond, a);
  Tensor<T> out = detail::where_kernel("where", cond, a, b);
  if constexpr (DifferentiableElement<T>) {
    record<T>("where", out, {a, b}, [cond = cond.detach(), sa = a.shape(), sb = b.shape()](const Tensor<T>& g, GradSink& s) {
      if (s.wants(0)) s.add(0, sum_to(where(cond, g, T(0)), sa));
      if (s.wants(1)) s.add(1, sum_to(where(cond, T(0), g), sb));
    });
  }
  return out;
}

/// cond ? a : b with a scalar b.
// cond: [...], a: [...] -> broadcast(cond, a)
template <Element T>
Tensor<T> where(const Tensor<bool>& cond, const Tensor<T>& a, std::type_identity_t<T> b) {
  CONDENSE_CHECK(a.defined(), "where", "undefined tensor argument");
  return where(cond, a, detail::compare_scalar<T>(b, a.device()));
}

/// cond ? a : b with a scalar a.
// cond: [...], b: [...] -> broadcast(cond, b)
template <Element T>
Tensor<T> where(const Tensor<bool>& cond, std::type_identity_t<T> a, const Tensor<T>& b) {
  CONDENSE_CHECK(b.defined(), "where", "undefined tensor argument");
  return where(cond, detail::compare_scalar<T>(a, b.device()), b);
}

/// `t` with `value` wherever `mask` is true. The mask and t broadcast together (PyTorch's
/// out-of-place masked_fill); usually the mask broadcasts to t's shape. The gradient is
/// zero at filled positions (float, double and the 16-bit floats).
// t: [...], mask: [...] -> broadcast(t, mask)
template <Element T>
Tensor<T> masked_fill(const Tensor<T>& t, const Tensor<bool>& mask, std::type_identity_t<T> value) {
  CONDENSE_CHECK(t.defined() && mask.defined(), "masked_fill", "undefined tensor argument");
  detail::check_same_device("masked_fill", t, mask);
  const Shape& ts = t.shape();
  const Shape& ms = mask.shape();
  for (std::size_t i = 1; i <= std::min(ts.size(), ms.size()); ++i) {
    const std::int64_t x = ts[ts.size() - i], m = ms[ms.size() - i];
    CONDENSE_CHECK(x == m || x == 1 || m == 1, "masked_fill", "mask of shape ", ms,
                   " cannot be broadcast with the input of shape ", ts);
  }
  Tensor<T> out = detail::where_kernel("masked_fill", mask, detail::compare_scalar<T>(value, t.device()), t);
  if constexpr (DifferentiableElement<T>) {
    record<T>("masked_fill", out, {t}, [mask = mask.detach(), st = t.shape()](const Tensor<T>& g, GradSink& s) {
      s.add(0, sum_to(where(mask, T(0), g), st));
    });
  }
  return out;
}

/// cond ? a : b for a 16-bit a and a float scalar b (rounded to T once).
// cond: [...], a: [...] -> broadcast(cond, a)
template <HalfElement T>
Tensor<T> where(const Tensor<bool>& cond, const Tensor<T>& a, float b) {
  return where(cond, a, T(b));
}

/// cond ? a : b for a float scalar a (rounded to T once) and a 16-bit b.
// cond: [...], b: [...] -> broadcast(cond, b)
template <HalfElement T>
Tensor<T> where(const Tensor<bool>& cond, float a, const Tensor<T>& b) {
  return where(cond, T(a), b);
}

/// masked_fill of a 16-bit tensor with a float value (rounded to T once; infinities stay
/// infinite, so masked_fill(scores, mask, -inf) works for any floating T).
// t: [...], mask: [...] -> broadcast(t, mask)
template <HalfElement T>
Tensor<T> masked_fill(const Tensor<T>& t, const Tensor<bool>& mask, float value) {
  return masked_fill(t, mask, T(value));
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
