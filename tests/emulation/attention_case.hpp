// The attention calls of the emulated CUDA kernel tests (tests/emulation): a Case (shapes,
// policy arguments, element type, strided operands), where its operands lie in memory
// (Placement: contiguous, or token-major queries and a cache's prefix for keys and values),
// and the CPU attention's results on the same inputs for the policy as the kernels see it.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "condense/backend/cuda/attention.hpp"
#include "condense/condense.hpp"

namespace condense::testing::attention_case {

using namespace condense;

/// One attention call of the emulated kernel tests: shapes, policy arguments through the
/// kernel arguments, element type, softmax scale and where the operands lie.
struct Case {
  std::int64_t batch = 2, heads = 4, kv_heads = 2, tq = 150, tk = 200, dim = 64;
  bool bias = false;
  bool skip_tiles = true;
  int query_offset = 0;               ///< through AttentionArgs (the kernels' QueryOffset)
  std::vector<std::int32_t> lengths;  ///< per-row key padding through AttentionArgs; empty: none
  DType dtype = DType::BFloat16;      ///< 16-bit: the tensor-core kernels; float, double: the portable ones
  std::optional<double> scale;        ///< the softmax scale; default 1 / sqrt(dim)
  /// q, out, dout, dq as [B, Tq, H, D] in memory (heads split off a projection) and k, v,
  /// dk, dv as the first Tk rows of [B, Hkv, 2 Tk, D] buffers (a cache's prefix), through
  /// the RowLayouts of AttentionArgs; false: every operand contiguous.
  bool strided = false;
};

/// The softmax scale of a case.
inline double scale_of(const Case& c) { return c.scale ? *c.scale : 1.0 / std::sqrt(static_cast<double>(c.dim)); }

template <class E>
std::vector<E> values_of(const Tensor<float>& t) {
  return t.template cast<E>().to_vector();
}

template <class E>
Tensor<float> widened(const std::vector<E>& values, Shape shape) {
  return from_vector<E>(values, shape).template cast<float>();
}

/// Where a case puts the rows of one [B, heads, T, D] operand, and the buffer that holds them.
struct Placement {
  RowLayout layout;
  std::int64_t buffer_size = 0;
};

/// Contiguous, or (Case::strided) [B, T, heads, D] in memory for the query-side operands
/// and the first T rows of a [B, heads, 2 T, D] buffer for the key-side ones.
inline Placement placement(const Case& c, bool queries) {
  const std::int64_t heads = queries ? c.heads : c.kv_heads, length = queries ? c.tq : c.tk;
  if (!c.strided) return {RowLayout::contiguous(heads, length, c.dim), c.batch * heads * length * c.dim};
  if (queries) return {{length * heads * c.dim, c.dim, heads * c.dim}, c.batch * heads * length * c.dim};
  return {RowLayout::contiguous(heads, 2 * length, c.dim), c.batch * heads * 2 * length * c.dim};
}

/// The [B, heads, T, D] tensor t as E values at `p` in a buffer of p.buffer_size elements
/// (the others zero).
template <class E>
std::vector<E> placed(const Tensor<float>& t, const Placement& p) {
  const auto values = values_of<E>(t);
  std::vector<E> buffer(static_cast<std::size_t>(p.buffer_size), E(0.0f));
  const std::int64_t heads = t.size(1), length = t.size(2), dim = t.size(3);
  for (std::int64_t row = 0; row < t.size(0) * heads * length; ++row)
    for (std::int64_t d = 0; d < dim; ++d)
      buffer[static_cast<std::size_t>(p.layout.at(row / length / heads, row / length % heads, row % length) + d)] =
          values[static_cast<std::size_t>(row * dim + d)];
  return buffer;
}

/// The [B, heads, T, D] rows at `p` of a buffer, widened to a contiguous float tensor.
template <class E>
Tensor<float> unplaced(const std::vector<E>& buffer, const Placement& p, Shape shape) {
  const std::int64_t heads = shape[1], length = shape[2], dim = shape[3];
  std::vector<E> values(static_cast<std::size_t>(numel_of(shape)));
  for (std::int64_t row = 0; row < shape[0] * heads * length; ++row)
    for (std::int64_t d = 0; d < dim; ++d)
      values[static_cast<std::size_t>(row * dim + d)] =
          buffer[static_cast<std::size_t>(p.layout.at(row / length / heads, row / length % heads, row % length) + d)];
  return widened(values, shape);
}

/// The random operands of a case, rounded to its element type (so the kernels and the CPU
/// attention start from the same values): q, k, v, the bias (when the case has one) and the
/// incoming gradient, drawn in that order.
struct CaseInputs {
  Tensor<float> q, k, v, bias, dout;
};

inline CaseInputs inputs_of(const Case& c, std::uint64_t seed) {
  Generator gen(seed);
  const auto input = [&](Shape shape) {
    const auto x = randn<float>(shape, gen);
    if (c.dtype == DType::Float16) return x.cast<float16>().cast<float>();
    if (c.dtype == DType::BFloat16) return x.cast<bfloat16>().cast<float>();
    return x;
  };
  CaseInputs in;
  in.q = input({c.batch, c.heads, c.tq, c.dim});
  in.k = input({c.batch, c.kv_heads, c.tk, c.dim});
  in.v = input({c.batch, c.kv_heads, c.tk, c.dim});
  if (c.bias) in.bias = input({c.batch, 1, c.tq, c.tk});
  in.dout = input({c.batch, c.heads, c.tq, c.dim});
  return in;
}

/// The kernel arguments of a case for element type `dtype`: shapes, scale, tile skipping,
/// query offset and key padding (no pointers, contiguous layouts).
inline cuda::AttentionArgs arguments_of(const Case& c, DType dtype) {
  cuda::AttentionArgs a;
  a.dtype = dtype;
  a.batch = c.batch;
  a.heads = c.heads;
  a.kv_heads = c.kv_heads;
  a.tq = c.tq;
  a.tk = c.tk;
  a.dim = c.dim;
  a.bias_heads = c.bias ? 1 : 0;
  a.scale = scale_of(c);
  a.skip_tiles = c.skip_tiles;
  a.query_offset = c.query_offset;
  if (!c.lengths.empty()) a.key_padding = mask::KeyPadding(c.lengths.data(), static_cast<int>(c.lengths.size()));
  a.resolve_layouts();
  return a;
}

/// The policy exactly as the launchers hand it to the kernels: shifted by the query offset
/// and intersected with the key padding of the arguments.
template <class Policy>
using KernelPolicyOf = mask::Intersect<mask::QueryOffset<Policy>, mask::KeyPadding>;
template <class Policy>
KernelPolicyOf<Policy> kernel_policy_of(const Policy& policy, const cuda::AttentionArgs& a) {
  return KernelPolicyOf<Policy>(mask::QueryOffset<Policy>(policy, a.query_offset), a.key_padding);
}

/// The CPU attention's results on the same (bf16-rounded) inputs, for the policy as the
/// kernels see it (query offset and key padding applied): out, lse and, when dout is
/// defined, the gradients of q, k, v (and the bias) from backward(dout).
template <class Policy>
std::vector<Tensor<float>> run_cpu(const Case& c, const Policy& policy, const Tensor<float>& q, const Tensor<float>& k,
                                   const Tensor<float>& v, const Tensor<float>& bias, const Tensor<float>& dout) {
  const auto shifted = mask::QueryOffset<Policy>(policy, c.query_offset);
  const auto run = [&](const auto& full_policy) {
    std::vector<Tensor<float>> in = {q, k, v};
    if (c.bias) in.push_back(bias);
    for (auto& t : in) t = t.clone().detach().requires_grad_();
    AttentionOptions options;
    options.scale = scale_of(c);
    const auto r = attention_forward(in[0], in[1], in[2], full_policy, options, c.bias ? in[3] : Tensor<float>());
    std::vector<Tensor<float>> results = {r.out, r.lse};
    if (!dout.defined()) return results;
    r.out.backward(dout);
    for (const auto& t : in) results.push_back(t.grad());
    return results;
  };
  if (c.lengths.empty()) return run(shifted);
  return run(shifted & mask::KeyPadding(c.lengths.data(), static_cast<int>(c.lengths.size())));
}

}  // namespace condense::testing::attention_case
