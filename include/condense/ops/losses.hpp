// Losses: cross_entropy over class logits with integer targets, a fused, numerically stable
// log-softmax + negative log-likelihood (with ignore_index, label smoothing and
// none/mean/sum reductions). Only the per-row logsumexp is saved; the backward pass
// recomputes softmax from it in the same sweep that writes the gradient. Logits on a CUDA
// device run the kernels of kernels/cross_entropy.cu; the targets are checked on the host.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>

#include <Eigen/Core>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/lookup_kernels.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/ops/convert.hpp"
#include "condense/ops/elementwise.hpp"

namespace condense {

/// How a loss combines its per-element values.
enum class Reduction {
  None,  ///< one loss per target, shaped like the targets
  Mean,  ///< average over the counted (non-ignored) targets; a scalar
  Sum,   ///< total over the targets; a scalar
};

/// Options of cross_entropy.
struct CrossEntropyOptions {
  /// Targets equal to this value contribute no loss, no gradient and no count.
  std::int64_t ignore_index = -100;
  /// How the per-target losses are combined.
  Reduction reduction = Reduction::Mean;
  /// In [0, 1]: the target distribution is (1 - s) * onehot + s / C (as in PyTorch).
  double label_smoothing = 0.0;
};

namespace detail {

/// Rows per thread chunk for the row-wise loss kernels (at least ~8K logits per chunk).
inline std::int64_t loss_row_grain(std::int64_t classes) {
  return std::max<std::int64_t>(1, (1 << 13) / std::max<std::int64_t>(classes, 1));
}

/// Throws unless `targets` are defined and on the CPU or on the logits' device.
template <DifferentiableElement T, IndexElement I>
void check_cross_entropy_targets_device(const Tensor<T>& logits, const Tensor<I>& targets) {
  CONDENSE_CHECK(targets.defined(), "cross_entropy", "undefined tensor argument");
  CONDENSE_CHECK(targets.device().is_cpu() || targets.device() == logits.device(), "cross_entropy", "targets ",
                 targets.describe(), " must be on the CPU or on the device of the logits ", logits.describe());
}

/// Checks the shapes and options of cross_entropy; returns the shape of the targets.
template <DifferentiableElement T, IndexElement I>
Shape check_cross_entropy_args(const Tensor<T>& logits, const Tensor<I>& targets, const CrossEntropyOptions& options) {
  constexpr std::string_view op = "cross_entropy";
  CONDENSE_CHECK(logits.dim() >= 1, op, "logits must have a class dimension, got shape ", logits.shape());
  const std::int64_t classes = logits.size(-1);
  CONDENSE_CHECK(classes >= 1, op, "logits of shape ", logits.shape(), " have no classes");
  Shape row_shape = logits.shape();
  row_shape.erase(row_shape.size() - 1);
  CONDENSE_CHECK(targets.shape() == row_shape, op, "targets of shape ", targets.shape(), " do not match logits ",
                 logits.shape(), "; expected targets of shape ", row_shape);
  const double smoothing = options.label_smoothing;
  CONDENSE_CHECK(smoothing >= 0.0 && smoothing <= 1.0, op, "label_smoothing must be in [0, 1], got ", smoothing);
  const Reduction reduction = options.reduction;
  CONDENSE_CHECK(reduction == Reduction::None || reduction == Reduction::Mean || reduction == Reduction::Sum, op,
                 "unknown reduction ", static_cast<int>(reduction));
  return row_shape;
}

/// The number of targets not equal to `ignore`; throws for any other target outside [0, classes).
template <IndexElement I>
std::int64_t count_cross_entropy_targets(const I* targets, std::int64_t rows, std::int64_t classes, std::int64_t ignore,
                                         const Shape& logits_shape) {
  std::int64_t count = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto t = static_cast<std::int64_t>(targets[r]);
    if (t == ignore) continue;
    CONDENSE_CHECK(t >= 0 && t < classes, "cross_entropy", "target ", t, " out of range for ", classes, " classes (logits ",
                   logits_shape, ")");
    ++count;
  }
  return count;
}

/// cross_entropy() for logits on a CUDA device; targets on the CPU or on that device are
/// checked on the host (copied there when needed) and read by the kernels from a device copy.
// logits: [..., C] (CUDA), targets: [...] -> [] (Mean, Sum) or [...] (None)
template <DifferentiableElement T, IndexElement I>
Tensor<T> cuda_cross_entropy(const Tensor<T>& logits, const Tensor<I>& targets, const CrossEntropyOptions& options) {
  constexpr std::string_view op = "cross_entropy";
  check_cross_entropy_targets_device(logits, targets);
  const Shape row_shape = check_cross_entropy_args(logits, targets, options);
  const Device device = logits.device();
  const std::int64_t classes = logits.size(-1);
  const Tensor<I> host_targets = targets.to(Device::cpu()).contiguous();
  const std::int64_t rows = host_targets.numel();
  const std::int64_t count =
      count_cross_entropy_targets(host_targets.data(), rows, classes, options.ignore_index, logits.shape());
  // A private device copy: the backward pass reads the targets again.
  const Tensor<I> device_targets = targets.device().is_cuda() ? targets.clone() : host_targets.to(device);
  const Tensor<T> x = logits.detach().contiguous();
  using Stat = cuda::lookup_stat_t<T>;
  const Tensor<Stat> lse = Tensor<Stat>::empty({rows}, device);
  cuda::CrossEntropyArgs args;
  args.dtype = dtype_of<T>;
  args.target_dtype = dtype_of<I>;
  args.device = device.index;
  args.rows = rows;
  args.classes = classes;
  args.ignore_index = options.ignore_index;
  args.count = count;
  args.label_smoothing = options.label_smoothing;
  args.logits = x.data();
  args.targets = device_targets.data();
  args.lse = lse.data();
  const Reduction reduction = options.reduction;
  Tensor<T> out;
  if (reduction == Reduction::None) {
    out = Tensor<T>::empty(row_shape, device);
    cuda::cross_entropy_forward(args, out.data(), false, op);
  } else {
    const Tensor<Stat> row_losses = Tensor<Stat>::empty({rows}, device);
    cuda::cross_entropy_forward(args, row_losses.data(), true, op);
    out = Tensor<T>::empty(Shape{}, device);
    cuda::cross_entropy_total(args, out.data(), row_losses.data(), reduction == Reduction::Mean, op);
  }
  record<T>(op, out, {logits}, [x, device_targets, lse, args, reduction, count, op](const Tensor<T>& grad, GradSink& s) {
    const Tensor<T> g = grad.contiguous();
    Tensor<T> dx = Tensor<T>::empty(x.shape(), x.device());
    // Scale of row r: g[r] (None), g (Sum) or g / count (Mean), read on the device.
    const double grad_scale = reduction == Reduction::Mean ? (count > 0 ? 1.0 / static_cast<double>(count) : 0.0) : 1.0;
    cuda::cross_entropy_backward(args, dx.data(), g.data(), reduction == Reduction::None, grad_scale, op);
    s.add(0, dx);
  });
  return out;
}

}  // namespace detail

/// Cross-entropy between class logits (class dimension last) and integer class targets:
/// loss_i = logsumexp(x_i) - x_i[t_i] (with label smoothing s:
/// (1 - s) * (lse - x_i[t_i]) + s * (lse - mean_j x_i[j])). Targets equal to
/// `options.ignore_index` are skipped. Mean divides by the number of non-ignored targets;
/// when every target is ignored it returns 0 with a zero gradient (PyTorch returns NaN).
/// Throws for a target outside [0, C) that is not ignore_index. With logits on a CUDA
/// device the targets may be on the CPU or on that device.
// logits: [..., C], targets: [...] (int32 or int64) -> [] (Mean, Sum) or [...] (None)
template <FloatingElement T, IndexElement I>
Tensor<T> cross_entropy(const Tensor<T>& logits, const Tensor<I>& targets, const CrossEntropyOptions& options = {}) {
  if (logits.defined() && logits.device().is_cuda()) return detail::cuda_cross_entropy(logits, targets, options);
  detail::check_cpu("cross_entropy", logits);
  detail::check_cross_entropy_targets_device(logits, targets);
  const Shape row_shape = detail::check_cross_entropy_args(logits, targets, options);
  const std::int64_t classes = logits.size(-1);
  const double smoothing = options.label_smoothing;
  const Reduction reduction = options.reduction;

  const Tensor<I> tc = targets.clone();  // a private copy: the backward pass reads the targets again
  const std::int64_t rows = tc.numel();
  const std::int64_t ignore = options.ignore_index;
  const std::int64_t count = detail::count_cross_entropy_targets(tc.data(), rows, classes, ignore, logits.shape());

  const Tensor<T> xc = logits.detach().contiguous();
  Tensor<T> lse = Tensor<T>::empty({rows});
  Tensor<T> row_loss = Tensor<T>::empty(row_shape);
  {
    using Row = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
    const T* px = xc.data();
    const I* pt = tc.data();
    T* plse = lse.data();
    T* pl = row_loss.data();
    const T keep = static_cast<T>(1.0 - smoothing);
    const T spread = static_cast<T>(smoothing);
    const T inv_c = T(1) / static_cast<T>(classes);
    cpu::parallel_for(0, rows, detail::loss_row_grain(classes), [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const auto t = static_cast<std::int64_t>(pt[r]);
        if (t == ignore) {
          plse[r] = T(0);
          pl[r] = T(0);
          continue;
        }
        const Row x(px + r * classes, classes);
        const T m = x.maxCoeff();
        // A row holding +inf has lse +inf (the loss is +inf, or NaN where the target's
        // logit is +inf, as in PyTorch); all -inf gives -inf; NaN anywhere gives NaN.
        const T l = std::isfinite(m) ? m + std::log((x - m).exp().sum())
                                     : (x.isNaN().any() ? std::numeric_limits<T>::quiet_NaN() : m);
        plse[r] = l;
        T loss = keep * (l - x[t]);
        if (smoothing > 0.0) loss += spread * (l - x.sum() * inv_c);
        pl[r] = loss;
      }
    });
  }

  Tensor<T> out;
  if (reduction == Reduction::None) {
    out = row_loss;
  } else {
    double total = 0.0;
    const T* pl = row_loss.data();
    for (std::int64_t r = 0; r < rows; ++r) total += static_cast<double>(pl[r]);
    if (reduction == Reduction::Mean) total = count > 0 ? total / static_cast<double>(count) : 0.0;
    out = Tensor<T>::empty(Shape{});
    *out.data() = static_cast<T>(total);
  }

  record<T>("cross_entropy", out, {logits}, [xc, tc, lse, rows, classes, count, ignore, smoothing, reduction](const Tensor<T>& grad,
                                                                                                          GradSink& s) {
    using Row = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
    using RowOut = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
    const Tensor<T> g = grad.contiguous();
    const T* pg = g.data();
    // Scale of row r: g (Sum), g / count (Mean) or g[r] (None).
    T uniform_scale = T(0);
    if (reduction == Reduction::Sum) uniform_scale = *pg;
    if (reduction == Reduction::Mean) uniform_scale = count > 0 ? *pg / static_cast<T>(count) : T(0);
    Tensor<T> dx = Tensor<T>::empty(xc.shape());
    const T* px = xc.data();
    const I* pt = tc.data();
    const T* plse = lse.data();
    T* pd = dx.data();
    const T keep = static_cast<T>(1.0 - smoothing);
    const T spread = static_cast<T>(smoothing) / static_cast<T>(classes);
    cpu::parallel_for(0, rows, detail::loss_row_grain(classes), [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        RowOut d(pd + r * classes, classes);
        const auto t = static_cast<std::int64_t>(pt[r]);
        const T scale = reduction == Reduction::None ? pg[r] : uniform_scale;
        if (t == ignore) {
          d.setZero();
          continue;
        }
        // (softmax - target distribution) * scale, softmax = exp(x - lse).
        const Row x(px + r * classes, classes);
        if (spread != T(0)) {
          d = ((x - plse[r]).exp() - spread) * scale;
        } else {
          d = (x - plse[r]).exp() * scale;
        }
        d[t] -= keep * scale;
      }
    });
    s.add(0, dx);
  });
  return out;
}

/// cross_entropy of 16-bit logits: the log-softmax and the loss are computed in float and
/// the loss (and the logits' gradient) rounded once; on CUDA by the loss kernels on the
/// 16-bit logits directly, on the CPU through the float op (detail::through_float).
// logits: [..., C], targets: [...] (int32 or int64) -> [] (Mean, Sum) or [...] (None)
template <HalfElement T, IndexElement I>
Tensor<T> cross_entropy(const Tensor<T>& logits, const Tensor<I>& targets, const CrossEntropyOptions& options = {}) {
  if (logits.defined() && logits.device().is_cuda()) return detail::cuda_cross_entropy(logits, targets, options);
  return detail::through_float([&](const Tensor<float>& lf) { return cross_entropy(lf, targets, options); }, logits);
}

}  // namespace condense

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
