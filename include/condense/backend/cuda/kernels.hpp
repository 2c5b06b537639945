// The CUDA kernel launchers the header-only ops call: elementwise maps (unary, binary, with
// an op code and up to two scalar parameters), comparisons and where, strided copies with
// element-type conversion, fills, reductions over trailing dims, scans, arg reductions,
// gather and scatter_add along one dim, row softmax and logsumexp, and batched GEMM through
// cuBLAS. Plain C++ declarations on raw device pointers described by StridedArg: no CUDA
// header reaches a CPU translation unit. The definitions live in the compiled condense::cuda
// library (kernels/*.cu); in a build without CUDA each launcher throws condense::Error
// naming the op. StridedArg's host-side helpers (dim coalescing) are defined here and are
// tested on the CPU.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/dtype.hpp"
#include "condense/core/error.hpp"

namespace condense::cuda {

/// Most dims a launcher takes after coalescing (broadcast and permuted views included).
inline constexpr int max_dims = 8;

/// A strided tensor operand of a launcher: device pointer to the first element, element
/// type, device, and extents and strides (in elements) of up to max_dims dims.
struct StridedArg {
  void* data = nullptr;
  DType dtype = DType::Float32;
  int device = 0;
  int ndim = 0;
  std::int64_t sizes[max_dims] = {};
  std::int64_t strides[max_dims] = {};

  /// Number of elements (1 for ndim == 0).
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= sizes[d];
    return n;
  }
  /// True when the elements are row-major without gaps.
  bool is_contiguous() const {
    std::int64_t expected = 1;
    for (int d = ndim; d-- > 0;) {
      if (sizes[d] != 1 && strides[d] != expected) return false;
      expected *= sizes[d];
    }
    return true;
  }
};

/// Merges the dims of `operands` operands that walk the extents sizes[0..ndim) together:
/// drops extent-1 dims and merges neighbours d, d+1 wherever every operand k has
/// strides[k][d] == strides[k][d+1] * sizes[d+1]. Rewrites sizes and each strides[k] in
/// place and returns the number of dims kept. The element order is unchanged.
inline int coalesce_dims(std::int64_t* sizes, std::int64_t* const* strides, int operands, int ndim) {
  int kept = 0;
  for (int d = 0; d < ndim; ++d) {
    if (sizes[d] == 1) continue;
    bool merge = kept > 0;
    for (int k = 0; k < operands && merge; ++k) merge = strides[k][kept - 1] == strides[k][d] * sizes[d];
    const int at = merge ? kept - 1 : kept;
    sizes[at] = merge ? sizes[at] * sizes[d] : sizes[d];
    for (int k = 0; k < operands; ++k) strides[k][at] = strides[k][d];
    if (!merge) ++kept;
  }
  return kept;
}

/// Merges the dims of operands that share one iteration shape (same ndim and sizes) as
/// coalesce_dims does; a contiguous operand ends up with a single dim. At most 8 operands.
inline void coalesce(std::initializer_list<StridedArg*> args) {
  constexpr std::size_t max_operands = 8;
  if (args.size() == 0) return;
  CONDENSE_CHECK(args.size() <= max_operands, "cuda::coalesce", "at most ", max_operands, " operands, got ", args.size());
  StridedArg& first = **args.begin();
  std::int64_t* strides[max_operands] = {};
  int operands = 0;
  for (StridedArg* a : args) strides[operands++] = a->strides;
  const int kept = coalesce_dims(first.sizes, strides, operands, first.ndim);
  for (StridedArg* a : args) {
    for (int d = 0; d < kept; ++d) a->sizes[d] = first.sizes[d];
    a->ndim = kept;
  }
}

/// Elementwise maps of one operand (s0, s1: the scalar parameters named per code).
enum class UnaryOp : std::uint8_t {
  Neg, Abs, Square, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Relu, Silu, GeluErf, GeluTanh,
  AddScalar,   ///< x + s0
  MulScalar,   ///< x * s0
  RDivScalar,  ///< s0 / x
  PowScalar,   ///< x ^ s0
  Clamp,       ///< min(max(x, s0), s1) (NaN stays NaN)
  ClampMin,    ///< max(x, s0) (NaN stays NaN)
  ClampMax,    ///< min(x, s0) (NaN stays NaN)
};

/// Elementwise maps of two operands of one element type; the *Grad codes are backward
/// rules: a is the incoming gradient, b the saved input x or output y named per code.
enum class BinaryOp : std::uint8_t {
  Add, Sub, Mul, Div, Maximum, Minimum,
  DivGradDenominator,  ///< -a / (b * b)           (b = denominator; a = g * numerator)
  RDivGrad,            ///< -a * s0 / (b * b)      (b = x of s0 / x)
  SqrtGrad,            ///< a / (2 b)              (b = y)
  RsqrtGrad,           ///< -a b^3 / 2             (b = y)
  AbsGrad,             ///< a * sign(b)            (b = x)
  SquareGrad,          ///< 2 a b                  (b = x)
  PowGrad,             ///< s0 a b^(s0 - 1)        (b = x)
  TanhGrad,            ///< a (1 - b^2)            (b = y)
  SigmoidGrad,         ///< a b (1 - b)            (b = y)
  ReluGrad,            ///< b > 0 ? a : 0          (b = y)
  SiluGrad,            ///< a s (1 + b (1 - s)), s = sigmoid(b)   (b = x)
  GeluErfGrad,         ///< a (Phi(b) + b phi(b))  (b = x)
  GeluTanhGrad,        ///< the tanh form's derivative times a    (b = x)
  ClampGrad,           ///< s0 <= b <= s1 ? a : 0  (b = x)
};

/// A scalar parameter of an elementwise kernel, exact for every element type: the floating
/// kernels read `real`, the integer kernels `integer` (a double would round an int64 beyond
/// 2^53, and turn INT64_MAX into 2^63, which no int64 holds).
struct MapScalar {
  double real = 0;
  std::int64_t integer = 0;

  constexpr MapScalar() = default;
  /// An integer scalar, exact in both forms where a double can hold it.
  template <std::integral S>
  constexpr MapScalar(S value) : real(static_cast<double>(value)), integer(static_cast<std::int64_t>(value)) {}
  /// A floating scalar; its integer form saturates (NaN gives 0).
  constexpr MapScalar(double value) : real(value), integer(saturated_int64(value)) {}

 private:
  static constexpr std::int64_t saturated_int64(double v) {
    if (!(v == v)) return 0;
    if (v >= 0x1p63) return INT64_MAX;
    if (v < -0x1p63) return INT64_MIN;
    return static_cast<std::int64_t>(v);
  }
};

/// The CUDA side of an elementwise op: its code and scalar parameters.
template <class Code>
struct MapKernel {
  Code code;
  MapScalar s0 = {};
  MapScalar s1 = {};
};
using UnaryKernel = MapKernel<UnaryOp>;
using BinaryKernel = MapKernel<BinaryOp>;

/// Elementwise comparisons (any element type; NaN compares unequal) and logical ops (bool
/// operands), each giving bool.
enum class CompareOp : std::uint8_t { Eq, Ne, Lt, Le, Gt, Ge, And, Or, Xor };

/// Reductions over the trailing dims of a view.
enum class ReduceOp : std::uint8_t { Sum, Mean, Max, Min };

/// Row-wise backward rules of row_backward(): grad_in[r, c] from the saved input x[r, c], the
/// row's output y[r] and the row's incoming gradient g[r].
enum class RowBackward : std::uint8_t {
  Extremum,   ///< amax/amin: g / (number of x equal to y) where x equals y (NaN matches NaN), else 0
  LogSumExp,  ///< exp(x - y) g; a row with y == -inf gets zeros
};

/// Running reductions of scan().
enum class ScanOp : std::uint8_t { Sum, Prod };

/// A contiguous tensor seen as [outer, n, inner] around one dim (scans, arg reductions).
struct LineGeometry {
  DType dtype = DType::Float32;
  int device = 0;
  std::int64_t outer = 1, n = 1, inner = 1;
};

/// A batched GEMM in cuBLAS's column-major terms: C[i] = alpha op(A[i]) op(B[i]) + beta C[i]
/// for i < batch, C m x n with leading dimension ldc; op(A) m x k, op(B) k x n. A batch
/// stride of 0 shares an operand across the batch.
struct GemmArgs {
  DType dtype = DType::Float32;  ///< of C, and of A and B unless bf16_inputs
  bool bf16_inputs = false;      ///< A and B are bfloat16 (C float32; fp32 accumulation)
  int device = 0;
  bool transpose_a = false, transpose_b = false;
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  const void* a = nullptr;
  std::int64_t lda = 1, stride_a = 0;
  const void* b = nullptr;
  std::int64_t ldb = 1, stride_b = 0;
  void* c = nullptr;
  std::int64_t ldc = 1, stride_c = 0;
  double alpha = 1, beta = 0;
};

#if CONDENSE_WITH_CUDA
/// out = f(in) elementwise; out and in share sizes (in may be a broadcast view) and dtype.
void unary(UnaryKernel kernel, const StridedArg& out, const StridedArg& in, std::string_view op);
/// out = f(a, b) elementwise; all three share sizes (a, b may be broadcast views) and dtype.
void binary(BinaryKernel kernel, const StridedArg& out, const StridedArg& a, const StridedArg& b, std::string_view op);
/// out (bool) = a `code` b elementwise; a and b share an element type; all three share sizes
/// (a, b may be broadcast views).
void compare(CompareOp code, const StridedArg& out, const StridedArg& a, const StridedArg& b, std::string_view op);
/// out = cond ? a : b elementwise; cond is bool, a, b and out share an element type; all four
/// share sizes (views allowed).
void where(const StridedArg& out, const StridedArg& cond, const StridedArg& a, const StridedArg& b, std::string_view op);
/// out = in converted to out's element type; any views of equal sizes.
void copy_strided(const StridedArg& out, const StridedArg& in, std::string_view op);
/// Every element of `out` set to `value` (converted to out's element type).
void fill(const StridedArg& out, double value, std::string_view op);
/// out[r] = reduction of in over its last `reduced_dims` dims, for the rows r of its other
/// dims in row-major order; `out` is contiguous with one element per row. Mean of nothing
/// is NaN, sum of nothing 0; Max/Min need a non-empty reduction.
void reduce(ReduceOp reduction, const StridedArg& out, const StridedArg& in, int reduced_dims, std::string_view op);
/// Row softmax (or log_softmax) of contiguous [rows, cols] `in` into contiguous `out`.
void softmax_rows(bool log, const StridedArg& out, const StridedArg& in, std::int64_t rows, std::int64_t cols,
                  std::string_view op);
/// Backward of softmax_rows: grad_in from the saved output y and the incoming gradient g
/// (all contiguous [rows, cols]).
void softmax_rows_backward(bool log, const StridedArg& grad_in, const StridedArg& y, const StridedArg& g,
                           std::int64_t rows, std::int64_t cols, std::string_view op);
/// Inclusive running sum or product of contiguous `in` along the middle dim of `g` into
/// `out` (same layout); `reverse` runs from the end. Float types, int32 and int64.
void scan(ScanOp code, bool reverse, void* out, const void* in, const LineGeometry& g, std::string_view op);
/// cumprod's division-free backward: grad_j = y_{j-1} S_j with S_j = g_j + x_{j+1} S_{j+1}
/// along the middle dim (x, y = cumprod(x), g and grad all contiguous in `geo`'s layout).
void cumprod_backward(void* grad, const void* x, const void* y, const void* g, const LineGeometry& geo, std::string_view op);
/// Position (int64, contiguous [outer, inner]) of the largest (`is_max`) or smallest element
/// along the middle dim (n > 0) of contiguous `in`: the first one on ties, the first NaN
/// when there is one. `values` (nullable, contiguous [outer, inner], in's type) gets the
/// element itself.
void arg_reduce(bool is_max, void* values, std::int64_t* indices, const void* in, const LineGeometry& g, std::string_view op);
/// logsumexp of each row of contiguous [rows, cols] `in` into contiguous [rows] `out`, as on
/// the CPU: an empty or all -inf row gives -inf, a +inf gives +inf, a NaN gives NaN.
void logsumexp_rows(const StridedArg& out, const StridedArg& in, std::int64_t rows, std::int64_t cols, std::string_view op);
/// The row-wise backward `rule` (grad_in, x: contiguous [rows, cols]; y, g: contiguous [rows]).
void row_backward(RowBackward rule, const StridedArg& grad_in, const StridedArg& x, const StridedArg& y, const StridedArg& g,
                  std::int64_t rows, std::int64_t cols, std::string_view op);
/// grad (contiguous [outer, n, inner]) = g[o, i] where the middle index equals indices[o, i],
/// 0 elsewhere (g and indices contiguous [outer, inner]): the backward of max(t, dim).
void place_at_indices(void* grad, const void* g, const std::int64_t* indices, const LineGeometry& geo, std::string_view op);
/// gather along dim `dim`: out[p] = in[p with its `dim` coordinate replaced by index[p]] for
/// every position p of `index` (int32 or int64 values, already checked in range). `in` is
/// described over index's shape (its own strides, extent index's along every dim); out is
/// contiguous in index's shape.
void gather(const StridedArg& out, const StridedArg& in, const StridedArg& index, int dim, std::string_view op);
/// scatter_add along dim `dim`: out[p with its `dim` coordinate replaced by index[p]] +=
/// src[p] for every position p of `index` (values already checked in range); `out` and `src`
/// are described over index's shape with their own strides. One thread per line along `dim`
/// adds in index order: no atomics, deterministic.
void scatter_add(const StridedArg& out, const StridedArg& src, const StridedArg& index, int dim, std::string_view op);
/// Batched GEMM through cuBLAS (float: FP32, or TF32 when allow_tf32(); double; bfloat16
/// and float16 with FP32 accumulation).
void gemm(const GemmArgs& args, std::string_view op);
#else
inline void unary(UnaryKernel, const StridedArg&, const StridedArg&, std::string_view op) { throw_no_cuda(op); }
inline void binary(BinaryKernel, const StridedArg&, const StridedArg&, const StridedArg&, std::string_view op) {
  throw_no_cuda(op);
}
inline void compare(CompareOp, const StridedArg&, const StridedArg&, const StridedArg&, std::string_view op) {
  throw_no_cuda(op);
}
inline void where(const StridedArg&, const StridedArg&, const StridedArg&, const StridedArg&, std::string_view op) {
  throw_no_cuda(op);
}
inline void copy_strided(const StridedArg&, const StridedArg&, std::string_view op) { throw_no_cuda(op); }
inline void fill(const StridedArg&, double, std::string_view op) { throw_no_cuda(op); }
inline void reduce(ReduceOp, const StridedArg&, const StridedArg&, int, std::string_view op) { throw_no_cuda(op); }
inline void softmax_rows(bool, const StridedArg&, const StridedArg&, std::int64_t, std::int64_t, std::string_view op) {
  throw_no_cuda(op);
}
inline void softmax_rows_backward(bool, const StridedArg&, const StridedArg&, const StridedArg&, std::int64_t,
                                  std::int64_t, std::string_view op) {
  throw_no_cuda(op);
}
inline void logsumexp_rows(const StridedArg&, const StridedArg&, std::int64_t, std::int64_t, std::string_view op) {
  throw_no_cuda(op);
}
inline void row_backward(RowBackward, const StridedArg&, const StridedArg&, const StridedArg&, const StridedArg&, std::int64_t,
                         std::int64_t, std::string_view op) {
  throw_no_cuda(op);
}
inline void place_at_indices(void*, const void*, const std::int64_t*, const LineGeometry&, std::string_view op) {
  throw_no_cuda(op);
}
inline void gather(const StridedArg&, const StridedArg&, const StridedArg&, int, std::string_view op) { throw_no_cuda(op); }
inline void scatter_add(const StridedArg&, const StridedArg&, const StridedArg&, int, std::string_view op) {
  throw_no_cuda(op);
}
inline void scan(ScanOp, bool, void*, const void*, const LineGeometry&, std::string_view op) { throw_no_cuda(op); }
inline void cumprod_backward(void*, const void*, const void*, const void*, const LineGeometry&, std::string_view op) {
  throw_no_cuda(op);
}
inline void arg_reduce(bool, void*, std::int64_t*, const void*, const LineGeometry&, std::string_view op) {
  throw_no_cuda(op);
}
inline void gemm(const GemmArgs&, std::string_view op) { throw_no_cuda(op); }
#endif

}  // namespace condense::cuda
