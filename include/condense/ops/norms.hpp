// Fused normalisation layers over the last dimension: layer_norm and rms_norm. Each row is
// handled by one thread while it sits in cache: its statistics (two-pass mean and centred
// variance, saved for backward), then the output. The hand-written backward computes dx row
// by row and the weight/bias gradients from per-thread partial sums that are combined at
// the end (no shared writes). CUDA tensors run the kernels of backend/cuda/norm_kernels.hpp
// (same formulas, statistics saved in the accumulation type).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/norm_kernels.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"

namespace condense {
namespace detail {

/// Elements per thread chunk for the row-wise norm kernels.
inline constexpr std::int64_t norm_grain_elements = 1 << 15;

/// Validates x [..., D] and the optional affine parameters [D] (on x's device); returns D.
template <DifferentiableElement T>
std::int64_t check_norm_args(std::string_view op, const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias,
                             double eps) {
  CONDENSE_CHECK(x.defined(), op, "undefined tensor argument");
  CONDENSE_CHECK(x.dim() >= 1, op, "x must have at least one dimension, got shape ", x.shape());
  const std::int64_t d = x.size(-1);
  CONDENSE_CHECK(d > 0, op, "cannot normalise over an empty last dimension, x has shape ", x.shape());
  CONDENSE_CHECK(std::isfinite(eps) && eps >= 0.0, op, "eps must be finite and non-negative, got ", eps);
  const auto check_param = [&](const Tensor<T>& p, std::string_view name) {
    if (!p.defined()) return;
    CONDENSE_CHECK(p.device() == x.device(), op, name, " ", p.describe(), " and x ", x.describe(),
                   " are on different devices");
    CONDENSE_CHECK(p.dim() == 1 && p.size(0) == d, op, name, " of shape ", p.shape(),
                   " does not match the normalised dimension ", d, " of x ", x.shape());
  };
  check_param(weight, "weight");
  check_param(bias, "bias");
  return d;
}

/// Lanes of the row reductions: several vector registers of independent partial sums, so
/// that a reduction is not bound by the latency of one accumulator.
template <FloatingElement T>
inline constexpr std::int64_t reduce_lanes = 128 / static_cast<std::int64_t>(sizeof(T));

/// Sum of term(i) over i in [0, n), accumulated lane-wise (vectorised) in T.
template <FloatingElement T, class F>
T lane_sum(std::int64_t n, F&& term) {
  constexpr std::int64_t W = reduce_lanes<T>;
  T acc[W] = {};
  const std::int64_t full = n - n % W;
  for (std::int64_t i = 0; i < full; i += W) {
#pragma omp simd
    for (std::int64_t j = 0; j < W; ++j) acc[j] += term(i + j);
  }
  T s = 0;
  for (std::int64_t i = full; i < n; ++i) s += term(i);
  for (std::int64_t j = 0; j < W; ++j) s += acc[j];
  return s;
}

/// Two sums at once: {sum of first(i), sum of second(i)} over i in [0, n).
template <FloatingElement T, class F1, class F2>
std::pair<T, T> lane_sum2(std::int64_t n, F1&& first, F2&& second) {
  constexpr std::int64_t W = reduce_lanes<T> / 2;
  T a[W] = {}, b[W] = {};
  const std::int64_t full = n - n % W;
  for (std::int64_t i = 0; i < full; i += W) {
#pragma omp simd
    for (std::int64_t j = 0; j < W; ++j) {
      a[j] += first(i + j);
      b[j] += second(i + j);
    }
  }
  T sa = 0, sb = 0;
  for (std::int64_t i = full; i < n; ++i) {
    sa += first(i);
    sb += second(i);
  }
  for (std::int64_t j = 0; j < W; ++j) {
    sa += a[j];
    sb += b[j];
  }
  return {sa, sb};
}

/// Splits `rows` into at most one chunk per thread (fewer for small inputs): [begin, end) of chunk c.
struct RowChunks {
  std::int64_t rows = 0, count = 1, size = 0;
  RowChunks(std::int64_t rows_, std::int64_t row_len) : rows(rows_) {
    const std::int64_t grain = std::max<std::int64_t>(1, norm_grain_elements / std::max<std::int64_t>(row_len, 1));
    count = std::max<std::int64_t>(1, std::min<std::int64_t>(get_num_threads(), rows / grain));
    size = (rows + count - 1) / std::max<std::int64_t>(count, 1);
  }
  std::int64_t begin(std::int64_t c) const { return std::min(rows, c * size); }
  std::int64_t end(std::int64_t c) const { return std::min(rows, (c + 1) * size); }
};

/// Adds the per-chunk partial rows partial[c * d + i] into out[i] (contiguous [d]).
template <FloatingElement T>
void combine_partials(const std::vector<T>& partial, std::int64_t chunks, std::int64_t d, T* out) {
  for (std::int64_t i = 0; i < d; ++i) out[i] = partial[static_cast<std::size_t>(i)];
  for (std::int64_t c = 1; c < chunks; ++c) {
    const T* p = partial.data() + c * d;
#pragma omp simd
    for (std::int64_t i = 0; i < d; ++i) out[i] += p[i];
  }
}

/// Device pointer of `t`, or null when `t` is undefined (an absent weight or bias).
template <Element T>
const T* norm_param_data(const Tensor<T>& t) {
  return t.defined() ? t.data() : nullptr;
}

/// layer_norm (`centered`) or rms_norm of a CUDA tensor with autograd: x is made contiguous
/// on the device, one launch computes y and the per-row statistics (mean for layer_norm,
/// 1/std), kept in the accumulation type for the backward pass, which launches the dx
/// kernel and the deterministic weight/bias reduction for the gradients that are wanted.
/// Arguments are validated by check_norm_args (weight and bias on x's device).
// x: [..., D], weight: [D] or none, bias: [D] or none (layer_norm only) -> [..., D]
template <DifferentiableElement T>
Tensor<T> cuda_norm(std::string_view op, bool centered, const Tensor<T>& x, const Tensor<T>& weight,
                    const Tensor<T>& bias, double eps, std::int64_t d) {
  using Stat = std::conditional_t<std::is_same_v<T, double>, double, float>;
  static_assert(dtype_of<Stat> == cuda::norm_stat_dtype(dtype_of<T>), "statistics type of the CUDA norm kernels");
  const Device device = x.device();
  const Tensor<T> xc = x.detach().contiguous();
  const Tensor<T> w = weight.defined() ? weight.detach().contiguous() : Tensor<T>();
  const Tensor<T> b = bias.defined() ? bias.detach().contiguous() : Tensor<T>();
  const std::int64_t rows = x.numel() / d;
  Tensor<T> out = Tensor<T>::empty(x.shape(), device);
  const Tensor<Stat> row_mean = centered ? Tensor<Stat>::empty({rows}, device) : Tensor<Stat>();
  const Tensor<Stat> rstd = Tensor<Stat>::empty({rows}, device);
  cuda::norm_forward(centered, dtype_of<T>, device.index, out.data(), xc.data(), norm_param_data(w), norm_param_data(b),
                     row_mean.defined() ? row_mean.data() : nullptr, rstd.data(), rows, d, eps, op);
  auto backward = [op, centered, xc, w, row_mean, rstd, d, rows,
                   wshape = weight.defined() ? weight.shape() : Shape{}](const Tensor<T>& grad, GradSink& s) {
    const Tensor<T> g = grad.contiguous();
    const Device dev = xc.device();
    const Stat* mean_ptr = row_mean.defined() ? row_mean.data() : nullptr;
    if (s.wants(0)) {
      Tensor<T> dx = Tensor<T>::empty(xc.shape(), dev);
      cuda::norm_backward_input(centered, dtype_of<T>, dev.index, dx.data(), g.data(), xc.data(), norm_param_data(w),
                                mean_ptr, rstd.data(), rows, d, op);
      s.add(0, dx);
    }
    const bool want_w = s.wants(1), want_b = centered && s.wants(2);
    if (!want_w && !want_b) return;
    Tensor<T> dw = want_w ? Tensor<T>::empty(wshape, dev) : Tensor<T>();
    Tensor<T> db = want_b ? Tensor<T>::empty({d}, dev) : Tensor<T>();
    cuda::norm_backward_params(centered, dtype_of<T>, dev.index, want_w ? dw.data() : nullptr,
                               want_b ? db.data() : nullptr, g.data(), xc.data(), mean_ptr, rstd.data(), rows, d, op);
    if (want_w) s.add(1, dw);
    if (want_b) s.add(2, db);
  };
  if (centered) record<T>(op, out, {x, weight, bias}, std::move(backward));
  else record<T>(op, out, {x, weight}, std::move(backward));
  return out;
}

}  // namespace detail

/// Layer normalisation over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias,
/// with the biased variance. `weight` and `bias` may each be an undefined Tensor (none).
/// Per-row mean and 1/std are computed in the same row sweep and saved for the backward pass.
// x: [..., D], weight: [D] or none, bias: [D] or none -> [..., D]
template <FloatingElement T>
Tensor<T> layer_norm(const Tensor<T>& x, const Tensor<T>& weight = Tensor<T>(), const Tensor<T>& bias = Tensor<T>(),
                     double eps = 1e-5) {
  const std::int64_t d = detail::check_norm_args("layer_norm", x, weight, bias, eps);
  if (x.device().is_cuda()) return detail::cuda_norm("layer_norm", true, x, weight, bias, eps, d);
  const Tensor<T> xc = x.detach().contiguous();
  const Tensor<T> w = weight.defined() ? weight.detach().contiguous() : Tensor<T>();
  const Tensor<T> b = bias.defined() ? bias.detach().contiguous() : Tensor<T>();
  const std::int64_t rows = x.numel() / d;
  Tensor<T> out = Tensor<T>::empty(x.shape());
  Tensor<T> row_mean = Tensor<T>::empty({rows});
  Tensor<T> rstd = Tensor<T>::empty({rows});
  {
    const T* px = xc.data();
    const T* pw = w.defined() ? w.data() : nullptr;
    const T* pb = b.defined() ? b.data() : nullptr;
    T* po = out.data();
    T* pm = row_mean.data();
    T* pr = rstd.data();
    const T inv_d = T(1) / static_cast<T>(d);
    const T teps = static_cast<T>(eps);
    const std::int64_t grain = std::max<std::int64_t>(1, detail::norm_grain_elements / d);
    cpu::parallel_for(0, rows, grain, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const T* xr = px + r * d;
        T* yr = po + r * d;
        const T mu = detail::lane_sum<T>(d, [xr](std::int64_t i) { return xr[i]; }) * inv_d;
        const T var = detail::lane_sum<T>(d, [xr, mu](std::int64_t i) {
          const T c = xr[i] - mu;
          return c * c;
        });
        const T rs = T(1) / std::sqrt(var * inv_d + teps);
        pm[r] = mu;
        pr[r] = rs;
        if (pw && pb) {
#pragma omp simd
          for (std::int64_t i = 0; i < d; ++i) yr[i] = (xr[i] - mu) * rs * pw[i] + pb[i];
        } else if (pw) {
#pragma omp simd
          for (std::int64_t i = 0; i < d; ++i) yr[i] = (xr[i] - mu) * rs * pw[i];
        } else if (pb) {
#pragma omp simd
          for (std::int64_t i = 0; i < d; ++i) yr[i] = (xr[i] - mu) * rs + pb[i];
        } else {
#pragma omp simd
          for (std::int64_t i = 0; i < d; ++i) yr[i] = (xr[i] - mu) * rs;
        }
      }
    });
  }
  record<T>("layer_norm", out, {x, weight, bias},
            [xc, w, row_mean, rstd, d, rows, wshape = weight.defined() ? weight.shape() : Shape{}](const Tensor<T>& grad,
                                                                                               GradSink& s) {
              const bool want_x = s.wants(0), want_w = s.wants(1), want_b = s.wants(2);
              const Tensor<T> g = grad.contiguous();
              const T* pg = g.data();
              const T* px = xc.data();
              const T* pw = w.defined() ? w.data() : nullptr;
              const T* pm = row_mean.data();
              const T* pr = rstd.data();
              const T inv_d = T(1) / static_cast<T>(d);
              Tensor<T> dx = want_x ? Tensor<T>::empty(xc.shape()) : Tensor<T>();
              T* pdx = want_x ? dx.data() : nullptr;
              const detail::RowChunks chunks(rows, d);
              std::vector<T> dw_part(want_w ? static_cast<std::size_t>(chunks.count * d) : 0, T(0));
              std::vector<T> db_part(want_b ? static_cast<std::size_t>(chunks.count * d) : 0, T(0));
              cpu::parallel_for(0, chunks.count, 1, [&](std::int64_t c0, std::int64_t c1) {
                for (std::int64_t c = c0; c < c1; ++c) {
                  T* dwp = want_w ? dw_part.data() + c * d : nullptr;
                  T* dbp = want_b ? db_part.data() + c * d : nullptr;
                  for (std::int64_t r = chunks.begin(c); r < chunks.end(c); ++r) {
                    const T* xr = px + r * d;
                    const T* gr = pg + r * d;
                    const T mu = pm[r], rs = pr[r];
                    if (dwp) {
#pragma omp simd
                      for (std::int64_t i = 0; i < d; ++i) dwp[i] += gr[i] * (xr[i] - mu) * rs;
                    }
                    if (dbp) {
#pragma omp simd
                      for (std::int64_t i = 0; i < d; ++i) dbp[i] += gr[i];
                    }
                    if (!pdx) continue;
                    // dx = rs * (gy - mean(gy) - xhat * mean(gy * xhat)), gy = g * weight.
                    const auto [sum_gy, sum_gyx] =
                        pw ? detail::lane_sum2<T>(
                                 d, [gr, pw](std::int64_t i) { return gr[i] * pw[i]; },
                                 [gr, pw, xr, mu](std::int64_t i) { return gr[i] * pw[i] * (xr[i] - mu); })
                           : detail::lane_sum2<T>(
                                 d, [gr](std::int64_t i) { return gr[i]; },
                                 [gr, xr, mu](std::int64_t i) { return gr[i] * (xr[i] - mu); });
                    const T a = sum_gy * inv_d;
                    const T bcoef = sum_gyx * inv_d * rs * rs;  // mean(gy * xhat) / rs
                    T* dr = pdx + r * d;
                    if (pw) {
#pragma omp simd
                      for (std::int64_t i = 0; i < d; ++i) dr[i] = rs * (gr[i] * pw[i] - a - (xr[i] - mu) * bcoef);
                    } else {
#pragma omp simd
                      for (std::int64_t i = 0; i < d; ++i) dr[i] = rs * (gr[i] - a - (xr[i] - mu) * bcoef);
                    }
                  }
                }
              });
              if (want_x) s.add(0, dx);
              if (want_w) {
                Tensor<T> dw = Tensor<T>::empty(wshape);
                detail::combine_partials(dw_part, chunks.count, d, dw.data());
                s.add(1, dw);
              }
              if (want_b) {
                Tensor<T> db = Tensor<T>::empty({d});
                detail::combine_partials(db_part, chunks.count, d, db.data());
                s.add(2, db);
              }
            });
  return out;
}

/// RMS normalisation over the last dimension: x / sqrt(mean(x^2) + eps) * weight.
/// `weight` may be an undefined Tensor (none). The per-row 1/rms is saved for backward.
// x: [..., D], weight: [D] or none -> [..., D]
template <FloatingElement T>
Tensor<T> rms_norm(const Tensor<T>& x, const Tensor<T>& weight = Tensor<T>(), double eps = 1e-6) {
  const std::int64_t d = detail::check_norm_args("rms_norm", x, weight, Tensor<T>(), eps);
  if (x.device().is_cuda()) return detail::cuda_norm("rms_norm", false, x, weight, Tensor<T>(), eps, d);
  const Tensor<T> xc = x.detach().contiguous();
  const Tensor<T> w = weight.defined() ? weight.detach().contiguous() : Tensor<T>();
  const std::int64_t rows = x.numel() / d;
  Tensor<T> out = Tensor<T>::empty(x.shape());
  Tensor<T> rstd = Tensor<T>::empty({rows});
  {
    const T* px = xc.data();
    const T* pw = w.defined() ? w.data() : nullptr;
    T* po = out.data();
    T* pr = rstd.data();
    const T inv_d = T(1) / static_cast<T>(d);
    const T teps = static_cast<T>(eps);
    const std::int64_t grain = std::max<std::int64_t>(1, detail::norm_grain_elements / d);
    cpu::parallel_for(0, rows, grain, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const T* xr = px + r * d;
        T* yr = po + r * d;
        const T ss = detail::lane_sum<T>(d, [xr](std::int64_t i) { return xr[i] * xr[i]; });
        const T rs = T(1) / std::sqrt(ss * inv_d + teps);
        pr[r] = rs;
        if (pw) {
#pragma omp simd
          for (std::int64_t i = 0; i < d; ++i) yr[i] = xr[i] * rs * pw[i];
        } else {
#pragma omp simd
          for (std::int64_t i = 0; i < d; ++i) yr[i] = xr[i] * rs;
        }
      }
    });
  }
  record<T>("rms_norm", out, {x, weight},
            [xc, w, rstd, d, rows, wshape = weight.defined() ? weight.shape() : Shape{}](const Tensor<T>& grad, GradSink& s) {
              const bool want_x = s.wants(0), want_w = s.wants(1);
              const Tensor<T> g = grad.contiguous();
              const T* pg = g.data();
              const T* px = xc.data();
              const T* pw = w.defined() ? w.data() : nullptr;
              const T* pr = rstd.data();
              const T inv_d = T(1) / static_cast<T>(d);
              Tensor<T> dx = want_x ? Tensor<T>::empty(xc.shape()) : Tensor<T>();
              T* pdx = want_x ? dx.data() : nullptr;
              const detail::RowChunks chunks(rows, d);
              std::vector<T> dw_part(want_w ? static_cast<std::size_t>(chunks.count * d) : 0, T(0));
              cpu::parallel_for(0, chunks.count, 1, [&](std::int64_t c0, std::int64_t c1) {
                for (std::int64_t c = c0; c < c1; ++c) {
                  T* dwp = want_w ? dw_part.data() + c * d : nullptr;
                  for (std::int64_t r = chunks.begin(c); r < chunks.end(c); ++r) {
                    const T* xr = px + r * d;
                    const T* gr = pg + r * d;
                    const T rs = pr[r];
                    if (dwp) {
#pragma omp simd
                      for (std::int64_t i = 0; i < d; ++i) dwp[i] += gr[i] * xr[i] * rs;
                    }
                    if (!pdx) continue;
                    // dx = rs * (gy - xhat * mean(gy * xhat)), gy = g * weight, xhat = x * rs.
                    const T sum_gyx = pw ? detail::lane_sum<T>(d, [gr, pw, xr](std::int64_t i) { return gr[i] * pw[i] * xr[i]; })
                                         : detail::lane_sum<T>(d, [gr, xr](std::int64_t i) { return gr[i] * xr[i]; });
                    const T bcoef = sum_gyx * inv_d * rs * rs;
                    T* dr = pdx + r * d;
                    if (pw) {
#pragma omp simd
                      for (std::int64_t i = 0; i < d; ++i) dr[i] = rs * (gr[i] * pw[i] - xr[i] * bcoef);
                    } else {
#pragma omp simd
                      for (std::int64_t i = 0; i < d; ++i) dr[i] = rs * (gr[i] - xr[i] * bcoef);
                    }
                  }
                }
              });
              if (want_x) s.add(0, dx);
              if (want_w) {
                Tensor<T> dw = Tensor<T>::empty(wshape);
                detail::combine_partials(dw_part, chunks.count, d, dw.data());
                s.add(1, dw);
              }
            });
  return out;
}

// ---- the 16-bit floats -------------------------------------------------------------------

/// layer_norm of 16-bit tensors: statistics, value and gradients computed in float and
/// rounded once; on CUDA by the norm kernels on the 16-bit values directly, on the CPU
/// through the float op (detail::through_float).
// x: [..., D], weight: [D] or none, bias: [D] or none -> [..., D]
template <HalfElement T>
Tensor<T> layer_norm(const Tensor<T>& x, const Tensor<T>& weight = Tensor<T>(), const Tensor<T>& bias = Tensor<T>(),
                     double eps = 1e-5) {
  if (x.defined() && x.device().is_cuda()) {
    const std::int64_t d = detail::check_norm_args("layer_norm", x, weight, bias, eps);
    return detail::cuda_norm("layer_norm", true, x, weight, bias, eps, d);
  }
  return detail::through_float(
      [eps](const Tensor<float>& xf, const Tensor<float>& wf, const Tensor<float>& bf) { return layer_norm(xf, wf, bf, eps); }, x,
      weight, bias);
}

/// rms_norm of 16-bit tensors: computed in float and rounded once (on CUDA directly, on the
/// CPU through the float op).
// x: [..., D], weight: [D] or none -> [..., D]
template <HalfElement T>
Tensor<T> rms_norm(const Tensor<T>& x, const Tensor<T>& weight = Tensor<T>(), double eps = 1e-6) {
  if (x.defined() && x.device().is_cuda()) {
    const std::int64_t d = detail::check_norm_args("rms_norm", x, weight, Tensor<T>(), eps);
    return detail::cuda_norm("rms_norm", false, x, weight, Tensor<T>(), eps, d);
  }
  return detail::through_float([eps](const Tensor<float>& xf, const Tensor<float>& wf) { return rms_norm(xf, wf, eps); }, x,
                               weight);
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
