// Rotary position embedding (RoPE) in the LLaMA / Hugging Face "rotate_half" layout: the
// head dim D is split in halves and each pair (i, i + D/2) is rotated by the angle
// position * theta^(-2i/D). rope_table() builds the cos/sin table of a set of positions
// once (a model shares it between the q and k of every layer); rope() applies it to
// [B, H, T, D] (any strides) with a backward pass that rotates by the negative angle.
// Positions are explicit int64 ids ([T] shared by the batch or [B, T] per row), so a
// cached prefix keeps its original positions and left-padded rows can start at 0.
#pragma once

#include <cmath>
#include <cstdint>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/core/tensor_type.hpp"
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
/// for i < D/2, computed in double and rounded to T once.
// positions: [T] or [B, T] (int64) -> cos, sin: [1 or B, T, D/2]
template <FloatingElement T>
RopeTable<T> rope_table(const Tensor<std::int64_t>& positions, std::int64_t head_dim, double theta = 10000.0) {
  constexpr const char* op = "rope";
  detail::check_cpu(op, positions);
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

}  // namespace detail

/// Rotary position embedding with a precomputed table (see rope_table()). The input may
/// have any strides (e.g. the [B, T, H, D] -> [B, H, T, D] transpose of a projection);
/// the output is contiguous. Differentiable in x (the backward rotates by -angle).
// x: [B, H, T, D], table: [1 or B, T, D/2] -> [B, H, T, D]
template <FloatingElement T>
Tensor<T> rope(const Tensor<T>& x, const RopeTable<T>& table) {
  constexpr const char* op = "rope";
  detail::check_cpu(op, x);
  CONDENSE_CHECK(table.defined(), op, "the rope table is undefined (build it with rope_table())");
  CONDENSE_CHECK(x.dim() == 4, op, "x must be [B, H, T, D], got ", x.shape());
  CONDENSE_CHECK(x.size(3) == table.head_dim, op, "x ", x.shape(), " has head dim ", x.size(3), " but the table was built for ",
                 table.head_dim);
  CONDENSE_CHECK(x.size(2) == table.length(), op, "x ", x.shape(), " has ", x.size(2), " positions but the table has ",
                 table.length());
  CONDENSE_CHECK(table.rows() == 1 || table.rows() == x.size(0), op, "positions are given per row for ", table.rows(),
                 " rows but x ", x.shape(), " has batch ", x.size(0));
  Tensor<T> out = Tensor<T>::empty(x.shape());
  if (out.numel() > 0) detail::rope_rotate(x, table, false, out.data());
  record<T>("rope", out, {x}, [table](const Tensor<T>& g, GradSink& s) {
    Tensor<T> gx = Tensor<T>::empty(g.shape());
    if (gx.numel() > 0) detail::rope_rotate(g, table, true, gx.data());
    s.add(0, gx);
  });
  return out;
}

/// Rotary position embedding of x at explicit positions, rotating pairs (i, i + D/2) by
/// position * theta^(-2i/D) (the LLaMA / Hugging Face rotate_half layout).
// x: [B, H, T, D] (D even), positions: [T] or [B, T] (int64) -> [B, H, T, D]
template <FloatingElement T>
Tensor<T> rope(const Tensor<T>& x, const Tensor<std::int64_t>& positions, double theta = 10000.0) {
  detail::check_cpu("rope", x);
  CONDENSE_CHECK(x.dim() == 4, "rope", "x must be [B, H, T, D], got ", x.shape());
  return rope(x, rope_table<T>(positions, x.size(3), theta));
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
