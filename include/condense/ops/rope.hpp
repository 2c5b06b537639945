// Rotary position embedding (RoPE) in the LLaMA / Hugging Face "rotate_half" layout: the
// head dim D is split in halves and each pair (i, i + D/2) is rotated by the angle
// position * theta^(-2i/D). rope_table() builds the cos/sin table of a set of positions
// once (a model shares it between the q and k of every layer); rope() applies it to
// [B, H, T, D] (any strides) with a backward pass that rotates by the negative angle.
// Positions are explicit int64 ids ([T] shared by the batch or [B, T] per row), so a
// cached prefix keeps its original positions and left-padded rows can start at 0.
// Devices: the table is computed on the CPU (in double) and placed on the positions'
// device; rope() on a CUDA x runs the kernel of backend/cuda/norm_kernels.hpp, and a
// table on another device than x is copied to x's device first (build it from positions
// on x's device to avoid that copy on every call). A 16-bit x (bfloat16, float16) takes a
// float table (rope_table<compute_type_t<T>>): each pair is rotated in float and rounded
// once, gradients too (the CUDA kernel reads the 16-bit x directly; the CPU runs the float
// op on a widened copy).
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/norm_kernels.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"

namespace condense {

/// cos and sin of the rotation angles of a set of positions (see rope_table()).
template <FloatingElement T>
struct RopeTable {
  Tensor<T> cos;  ///< [P, T, D/2] with P = 1 (positions shared by the batch) or B
  Tensor<T> sin;  ///< [P, T, D/2]
  std::int64_t head_dim = 0;  ///< D (even)

  /// True once built by rope_table().
  bool defined() const { return cos.defined(); }
  /// 1 when the positions are shared by every batch row, else the batch size.
  std::int64_t rows() const { return cos.size(0); }
  /// Number of positions per row.
  std::int64_t length() const { return cos.size(1); }
};

/// The cos/sin table of `positions` for head dim `head_dim`: angle(p, i) = p * theta^(-2i/D)
/// for i < D/2, computed in double on the CPU and rounded to T once. The table is on the
/// positions' device (CUDA positions are read back to the host first, a synchronising copy).
// positions: [T] or [B, T] (int64) -> cos, sin: [1 or B, T, D/2]
template <FloatingElement T>
RopeTable<T> rope_table(const Tensor<std::int64_t>& positions, std::int64_t head_dim, double theta = 10000.0) {
  constexpr const char* op = "rope";
  CONDENSE_CHECK(positions.defined(), op, "undefined positions");
  if (positions.device().is_cuda()) {
    RopeTable<T> table = rope_table<T>(positions.cpu(), head_dim, theta);
    table.cos = table.cos.to(positions.device());
    table.sin = table.sin.to(positions.device());
    return table;
  }
  CONDENSE_CHECK(positions.dim() == 1 || positions.dim() == 2, op, "positions must be [T] or [B, T], got ",
                 positions.shape());
  CONDENSE_CHECK(head_dim > 0 && head_dim % 2 == 0, op, "head dim must be positive and even, got ", head_dim);
  CONDENSE_CHECK(std::isfinite(theta) && theta > 0.0, op, "theta must be positive, got ", theta);
  const Tensor<std::int64_t> pos = positions.contiguous();
  const std::int64_t rows = positions.dim() == 2 ? positions.size(0) : 1;
  const std::int64_t len = positions.size(-1);
  const std::int64_t half = head_dim / 2;
  RopeTable<T> table;
  table.head_dim = head_dim;
  table.cos = Tensor<T>::empty({rows, len, half});
  table.sin = Tensor<T>::empty({rows, len, half});
  std::vector<double> inv_freq(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i)
    inv_freq[static_cast<std::size_t>(i)] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  const std::int64_t* p = pos.data();
  T* c = table.cos.data();
  T* s = table.sin.data();
  cpu::parallel_for(0, rows * len, std::max<std::int64_t>(1, 2048 / half), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const double pr = static_cast<double>(p[r]);
      for (std::int64_t i = 0; i < half; ++i) {
        const double angle = pr * inv_freq[static_cast<std::size_t>(i)];
        c[r * half + i] = static_cast<T>(std::cos(angle));
        s[r * half + i] = static_cast<T>(std::sin(angle));
      }
    }
  });
  return table;
}

namespace detail {

/// out (contiguous [B, H, T, D]) = x rotated by the table's angles (by their negatives when
/// `inverse`): out[i] = x[i] c - x[i+h] s, out[i+h] = x[i+h] c + x[i] s, h = D/2.
template <FloatingElement T>
void rope_rotate(const Tensor<T>& x, const RopeTable<T>& table, bool inverse, T* out) {
  const std::int64_t B = x.size(0), H = x.size(1), L = x.size(2), D = x.size(3), half = D / 2;
  const auto& st = x.strides();
  const std::int64_t sb = st[0], sh = st[1], sl = st[2], sd = st[3];
  const bool per_row = table.rows() > 1;
  const T* xp = x.data();
  const T* cp = table.cos.data();
  const T* sp = table.sin.data();
  const T sign = inverse ? T(-1) : T(1);
  cpu::parallel_for(0, B * H * L, std::max<std::int64_t>(1, 8192 / std::max<std::int64_t>(D, 1)),
                    [&](std::int64_t r0, std::int64_t r1) {
                      for (std::int64_t r = r0; r < r1; ++r) {
                        const std::int64_t t = r % L, h = (r / L) % H, b = r / (L * H);
                        const T* xr = xp + b * sb + h * sh + t * sl;
                        const std::int64_t trow = ((per_row ? b : 0) * L + t) * half;
                        const T* c = cp + trow;
                        const T* s = sp + trow;
                        T* o = out + r * D;
                        if (sd == 1) {
#pragma omp simd
                          for (std::int64_t i = 0; i < half; ++i) {
                            const T x1 = xr[i], x2 = xr[i + half], si = sign * s[i];
                            o[i] = x1 * c[i] - x2 * si;
                            o[i + half] = x2 * c[i] + x1 * si;
                          }
                        } else {
                          for (std::int64_t i = 0; i < half; ++i) {
                            const T x1 = xr[i * sd], x2 = xr[(i + half) * sd], si = sign * s[i];
                            o[i] = x1 * c[i] - x2 * si;
                            o[i + half] = x2 * c[i] + x1 * si;
                          }
                        }
                      }
                    });
}

/// Checks that cos and sin are [rows, T, head_dim / 2] on one device.
template <FloatingElement T>
void check_rope_table(std::string_view op, const RopeTable<T>& table) {
  CONDENSE_CHECK(table.defined() && table.sin.defined(), op,
                 "the rope table is undefined (build it with rope_table())");
  CONDENSE_CHECK(table.cos.device() == table.sin.device(), op, "the rope table's cos ", table.cos.describe(),
                 " and sin ", table.sin.describe(), " are on different devices");
  const bool shapes_match = table.cos.dim() == 3 && table.cos.shape() == table.sin.shape() &&
                            table.cos.size(2) * 2 == table.head_dim;
  CONDENSE_CHECK(shapes_match, op, "the rope table's cos ", table.cos.shape(), " and sin ", table.sin.shape(),
                 " must both be [rows, T, ", table.head_dim / 2, "] for head dim ", table.head_dim);
}

/// `table` with cos and sin on `device` and contiguous (copies only where needed).
template <FloatingElement T>
RopeTable<T> rope_table_on(const RopeTable<T>& table, Device device) {
  RopeTable<T> moved = table;
  moved.cos = table.cos.detach().to(device).contiguous();
  moved.sin = table.sin.detach().to(device).contiguous();
  return moved;
}

/// The launcher operand of a [B, H, T, D] tensor with all four dims kept.
template <DifferentiableElement T>
cuda::StridedArg rope_operand(const Tensor<T>& t) {
  cuda::StridedArg arg;
  arg.data = const_cast<void*>(static_cast<const void*>(t.data()));
  arg.dtype = dtype_of<T>;
  arg.device = t.device().index;
  arg.ndim = 4;
  for (int d = 0; d < 4; ++d) {
    arg.sizes[d] = t.shape()[static_cast<std::size_t>(d)];
    arg.strides[d] = t.strides()[static_cast<std::size_t>(d)];
  }
  return arg;
}

/// rope of a CUDA x (any strides) with a table in x's compute type already on x's device
/// (validated by rope_table_for): one thread per rotated pair, in float for the 16-bit
/// types; the backward runs the same kernel with the negative angle.
// x: [B, H, T, D], table: [1 or B, T, D/2] on x's device -> [B, H, T, D]
template <DifferentiableElement T>
Tensor<T> cuda_rope(const Tensor<T>& x, const RopeTable<compute_type_t<T>>& table) {
  constexpr const char* op = "rope";
  Tensor<T> out = Tensor<T>::empty(x.shape(), x.device());
  cuda::rope_rotate(false, rope_operand(out), rope_operand(x), table.cos.data(), table.sin.data(), table.rows(), op);
  record<T>(op, out, {x}, [table](const Tensor<T>& g, GradSink& s) {
    Tensor<T> gx = Tensor<T>::empty(g.shape(), g.device());
    cuda::rope_rotate(true, rope_operand(gx), rope_operand(g), table.cos.data(), table.sin.data(), table.rows(), op);
    s.add(0, gx);
  });
  return out;
}

/// Checks x [B, H, T, D] against `table_in` (head dim, length, rows) and returns the table on
/// x's device, contiguous (copied only when it is not).
template <DifferentiableElement T, FloatingElement A>
RopeTable<A> rope_table_for(const Tensor<T>& x, const RopeTable<A>& table_in) {
  constexpr const char* op = "rope";
  CONDENSE_CHECK(x.defined(), op, "undefined tensor argument");
  detail::check_rope_table(op, table_in);
  CONDENSE_CHECK(x.dim() == 4, op, "x must be [B, H, T, D], got ", x.shape());
  CONDENSE_CHECK(x.size(3) == table_in.head_dim, op, "x ", x.shape(), " has head dim ", x.size(3),
                 " but the table was built for ", table_in.head_dim);
  CONDENSE_CHECK(x.size(2) == table_in.length(), op, "x ", x.shape(), " has ", x.size(2),
                 " positions but the table has ", table_in.length());
  CONDENSE_CHECK(table_in.rows() == 1 || table_in.rows() == x.size(0), op, "positions are given per row for ",
                 table_in.rows(), " rows but x ", x.shape(), " has batch ", x.size(0));
  const bool ready = table_in.cos.device() == x.device() && table_in.cos.is_contiguous() && table_in.sin.is_contiguous();
  return ready ? table_in : rope_table_on(table_in, x.device());
}

}  // namespace detail

/// Rotary position embedding with a precomputed table (see rope_table()). The input may
/// have any strides (e.g. the [B, T, H, D] -> [B, H, T, D] transpose of a projection);
/// the output is contiguous. Differentiable in x (the backward rotates by -angle). A table
/// on another device than x is copied to x's device for the call.
// x: [B, H, T, D], table: [1 or B, T, D/2] -> [B, H, T, D]
template <FloatingElement T>
Tensor<T> rope(const Tensor<T>& x, const RopeTable<T>& table_in) {
  const RopeTable<T> table = detail::rope_table_for(x, table_in);
  if (x.device().is_cuda()) return detail::cuda_rope(x, table);
  Tensor<T> out = Tensor<T>::empty(x.shape());
  if (out.numel() > 0) detail::rope_rotate(x, table, false, out.data());
  record<T>("rope", out, {x}, [table](const Tensor<T>& g, GradSink& s) {
    Tensor<T> gx = Tensor<T>::empty(g.shape());
    if (gx.numel() > 0) detail::rope_rotate(g, table, true, gx.data());
    s.add(0, gx);
  });
  return out;
}

/// Rotary position embedding of a 16-bit x (bfloat16, float16) with a float table: each pair
/// is rotated in float and rounded once, the gradient too (on CUDA by the rope kernel on the
/// 16-bit values directly, on the CPU through the float op). Build the table with
/// rope_table<float>() (or rope_table<compute_type_t<T>>() in code generic over T).
// x: [B, H, T, D], table: [1 or B, T, D/2] (float) -> [B, H, T, D]
template <HalfElement T>
Tensor<T> rope(const Tensor<T>& x, const RopeTable<float>& table) {
  if (x.defined() && x.device().is_cuda()) return detail::cuda_rope(x, detail::rope_table_for(x, table));
  return detail::through_float([&table](const Tensor<float>& xf) { return rope(xf, table); }, x);
}

/// Rotary position embedding of x at explicit positions, rotating pairs (i, i + D/2) by
/// position * theta^(-2i/D) (the LLaMA / Hugging Face rotate_half layout). The table is
/// built in x's compute type (float for the 16-bit floats).
// x: [B, H, T, D] (D even), positions: [T] or [B, T] (int64) -> [B, H, T, D]
template <DifferentiableElement T>
Tensor<T> rope(const Tensor<T>& x, const Tensor<std::int64_t>& positions, double theta = 10000.0) {
  CONDENSE_CHECK(x.defined(), "rope", "undefined tensor argument");
  CONDENSE_CHECK(x.dim() == 4, "rope", "x must be [B, H, T, D], got ", x.shape());
  return rope(x, rope_table<compute_type_t<T>>(positions, x.size(3), theta));
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
