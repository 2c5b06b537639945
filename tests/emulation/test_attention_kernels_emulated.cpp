// The CUDA attention kernels run on the CPU through tests/emulation/cuda_emulation.hpp and
// are checked against the CPU attention (itself checked against the composition of
// primitive ops in tests/attention) on the same inputs rounded to the kernels' element
// type: the tensor-core kernels (flash_attention_mma.cuh: forward, dq and dk/dv on
// mma.sync; bfloat16 and float16), the portable ones (flash_attention_portable.cuh; float
// and double) and the delta kernel. Outputs, log-sum-exp and the gradients of q, k, v and
// the bias, for every built-in policy, per-row arrays, grouped heads, head dims 64, 128 and
// ragged ones (the zero-padded and element-by-element load paths), Tq != Tk with partial
// tiles at both ends, softmax scales other than 1 / sqrt(dim) (a negative one too), a
// query offset and key padding through the kernel arguments, tile skipping on and off,
// strided operands through their RowLayouts, and the tile counters. This runs the
// kernels' own code (every index, fragment address, mask and softmax step) in every
// build, GPU or not; timing and the asynchronous copies are what only a GPU run checks.
#define CONDENSE_CUDA_EMULATION 1
#include "emulation/cuda_emulation.hpp"
// The emulation header must come first: the kernels see its threadIdx, __syncthreads, ...
#include "attention/flash_attention_mma.cuh"
#include "attention/flash_attention_portable.cuh"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "condense/condense.hpp"
#include "emulation/attention_case.hpp"

namespace test_attention_kernels_emulated {

using namespace condense;
namespace tc = condense::cuda::attention_mma;
namespace portable = condense::cuda::attention_detail;
namespace emu = condense_cuda_emulation;
using namespace condense::testing::attention_case;

namespace {

/// The kernels' results: out, lse, dq, dk, dv (widened to float), dbias summed over heads,
/// and the forward's tile counters.
struct KernelResults {
  std::vector<Tensor<float>> tensors;
  /// The tensor-core backward without the dq kernel (dq summed in the dk/dv kernel with
  /// atomics, as the launcher runs it unless asked for determinism): dq, dk, dv (and dbias
  /// summed over heads).
  std::vector<Tensor<float>> dq_in_dkdv;
  std::array<unsigned long long, 3> tiles{};
};

/// Runs the delta kernel and the three attention kernels (element type E, head-dim bound D:
/// the tensor-core kernels for 16-bit E, the portable ones otherwise) in emulation for
/// `policy`.
template <class E, int D, class Policy>
KernelResults run_kernels(const Case& c, const Policy& policy, const Tensor<float>& q, const Tensor<float>& k,
                          const Tensor<float>& v, const Tensor<float>& bias, const Tensor<float>& dout) {
  const Placement query_side = placement(c, true), key_side = placement(c, false);
  const auto hq = placed<E>(q, query_side), hk = placed<E>(k, key_side), hv = placed<E>(v, key_side);
  const auto hdout = placed<E>(dout, query_side);
  const auto hbias = c.bias ? values_of<E>(bias) : std::vector<E>();
  const std::int64_t rows = c.batch * c.heads * c.tq;
  std::vector<E> out(static_cast<std::size_t>(query_side.buffer_size)), dq(out.size());
  std::vector<E> dk(static_cast<std::size_t>(key_side.buffer_size)), dv(dk.size());
  std::vector<E> dbias(c.bias ? static_cast<std::size_t>(rows * c.tk) : 0);
  using A = cuda::detail::compute_t<E>;
  // The log-sum-exp: float from the tensor-core kernels, the compute type from the others.
  using Lse = std::conditional_t<tc::is_16bit<E>, float, A>;
  std::vector<Lse> lse(static_cast<std::size_t>(rows));
  std::vector<A> delta(static_cast<std::size_t>(rows));

  cuda::AttentionArgs a = arguments_of(c, dtype_of<E>);
  a.q = hq.data();
  a.k = hk.data();
  a.v = hv.data();
  a.bias = c.bias ? hbias.data() : nullptr;
  a.out = out.data();
  a.lse = lse.data();
  a.dout = hdout.data();
  a.dq = dq.data();
  a.dk = dk.data();
  a.dv = dv.data();
  a.dbias = c.bias ? dbias.data() : nullptr;
  a.q_rows = a.out_rows = a.dout_rows = a.dq_rows = query_side.layout;
  a.k_rows = a.v_rows = a.dk_rows = a.dv_rows = key_side.layout;

  using KernelPolicy = KernelPolicyOf<Policy>;
  const KernelPolicy kernel_policy = kernel_policy_of(policy, a);
  KernelResults results;
  const auto delta_kernel = [&] {
    emu::launch(dim3(portable::delta_blocks(rows)), dim3(portable::threads), 0, portable::attention_delta<E>,
                static_cast<const E*>(out.data()), a.out_rows, static_cast<const E*>(hdout.data()), a.dout_rows,
                delta.data(), a.heads, a.tq, rows, static_cast<int>(c.dim));
  };
  const auto* delta_in = static_cast<const A*>(delta.data());
  if constexpr (tc::is_16bit<E>) {
    emu::launch(tc::forward_grid(a), dim3(tc::threads), tc::forward_smem<D>, tc::flash_forward_mma<E, KernelPolicy, D>, a,
                kernel_policy, results.tiles.data());
    delta_kernel();
    emu::launch(tc::dq_grid(a), dim3(tc::threads), tc::dq_smem<D>, tc::flash_backward_dq_mma<E, KernelPolicy, D>, a,
                kernel_policy, delta_in);
    emu::launch(tc::dkdv_grid(a), dim3(tc::dkdv_threads), tc::dkdv_smem<D>, tc::flash_backward_dkdv_mma<E, KernelPolicy, D>,
                a, kernel_policy, delta_in, static_cast<float*>(nullptr));
    {
      // The other backward: dq from the dk/dv kernel's float accumulator, dbias from there too.
      std::vector<float> accum(static_cast<std::size_t>(rows * D), 0.f);
      std::vector<E> fused_dq(dq.size()), fused_dk(dk.size()), fused_dv(dv.size()), fused_dbias(dbias.size());
      cuda::AttentionArgs f = a;
      f.dq = fused_dq.data();
      f.dk = fused_dk.data();
      f.dv = fused_dv.data();
      f.dbias = c.bias ? fused_dbias.data() : nullptr;
      emu::launch(tc::dkdv_grid(f), dim3(tc::dkdv_threads), tc::dkdv_smem<D>, tc::flash_backward_dkdv_mma<E, KernelPolicy, D>,
                  f, kernel_policy, delta_in, accum.data());
      emu::launch(dim3(cuda::detail::capped_blocks(rows)), dim3(tc::threads), 0, tc::dq_from_accumulator<E, D>,
                  static_cast<const float*>(accum.data()), fused_dq.data(), a.dq_rows, a.heads, a.tq, rows,
                  static_cast<int>(c.dim), static_cast<float>(a.scale));
      results.dq_in_dkdv = {unplaced(fused_dq, query_side, {c.batch, c.heads, c.tq, c.dim}),
                            unplaced(fused_dk, key_side, {c.batch, c.kv_heads, c.tk, c.dim}),
                            unplaced(fused_dv, key_side, {c.batch, c.kv_heads, c.tk, c.dim})};
      if (c.bias) results.dq_in_dkdv.push_back(sum(widened(fused_dbias, {c.batch, c.heads, c.tq, c.tk}), {1}, true));
    }
  } else {
    emu::launch(portable::forward_grid(a), dim3(portable::threads), portable::forward_smem<A, D>,
                portable::flash_forward<E, KernelPolicy, D>, a, kernel_policy, results.tiles.data());
    delta_kernel();
    emu::launch(portable::dq_grid(a), dim3(portable::threads), portable::dq_smem<A, D>,
                portable::flash_backward_dq<E, KernelPolicy, D>, a, kernel_policy, delta_in);
    emu::launch(portable::dkdv_grid(a), dim3(portable::threads), portable::dkdv_smem<A, D>,
                portable::flash_backward_dkdv<E, KernelPolicy, D>, a, kernel_policy, delta_in);
  }

  results.tensors = {unplaced(out, query_side, {c.batch, c.heads, c.tq, c.dim}),
                     from_vector<Lse>(lse, {c.batch, c.heads, c.tq}).template cast<float>(),
                     unplaced(dq, query_side, {c.batch, c.heads, c.tq, c.dim}),
                     unplaced(dk, key_side, {c.batch, c.kv_heads, c.tk, c.dim}),
                     unplaced(dv, key_side, {c.batch, c.kv_heads, c.tk, c.dim})};
  if (c.bias) results.tensors.push_back(sum(widened(dbias, {c.batch, c.heads, c.tq, c.tk}), {1}, true));
  return results;
}

/// Runs the emulated kernels and the CPU attention on the same inputs and compares.
template <class Policy>
void check_kernels(const Case& c, const Policy& policy, std::uint64_t seed = 1) {
  CAPTURE(c.tq);
  CAPTURE(c.tk);
  CAPTURE(c.dim);
  CAPTURE(c.bias);
  CAPTURE(c.skip_tiles);
  CAPTURE(c.query_offset);
  CAPTURE(scale_of(c));
  CAPTURE(dtype_name(c.dtype));
  CAPTURE(c.strided);
  const CaseInputs in = inputs_of(c, seed);
  const Tensor<float> &q = in.q, &k = in.k, &v = in.v, &bias = in.bias, &dout = in.dout;
  const auto run = [&]<class E>() {
    return c.dim <= 64 ? run_kernels<E, 64>(c, policy, q, k, v, bias, dout) : run_kernels<E, 128>(c, policy, q, k, v, bias, dout);
  };
  const auto got = c.dtype == DType::Float16    ? run.template operator()<float16>()
                   : c.dtype == DType::BFloat16 ? run.template operator()<bfloat16>()
                   : c.dtype == DType::Float32  ? run.template operator()<float>()
                                                : run.template operator()<double>();
  const auto expected = run_cpu(c, policy, q, k, v, bias, dout);
  REQUIRE(got.tensors.size() == expected.size());
  const bool sixteen_bit = c.dtype == DType::BFloat16 || c.dtype == DType::Float16;
  // The kernels round P and dS to 16 bits (8 significant bits in bfloat16, 11 in float16)
  // before their second products and write 16-bit results; the CPU keeps float throughout.
  const char* names[] = {"out", "lse", "dq", "dk", "dv", "dbias"};
  const auto compare = [&](std::size_t i, const Tensor<float>& got_tensor) {
    const std::string name = names[i];
    CAPTURE(name);
    const auto e = expected[i].to_vector(), g = got_tensor.to_vector();
    REQUIRE(e.size() == g.size());
    double worst = 0;
    for (std::size_t j = 0; j < e.size(); ++j) {
      if (std::isinf(e[j]) || std::isinf(g[j])) {
        CHECK(g[j] == e[j]);  // rows without an allowed key: lse = -inf on both sides
        continue;
      }
      const double tol = i == 1 ? (sixteen_bit ? 1e-3 : 1e-5) * (1.0 + std::abs(double(e[j])))
                                : (sixteen_bit ? 3e-2 : 1e-4) * (1.0 + std::abs(double(e[j])));
      worst = std::max(worst, std::abs(double(g[j]) - double(e[j])) / tol);
    }
    CHECK_MESSAGE(worst <= 1.0, name, ": the worst difference is ", worst, " times the tolerance");
  };
  for (std::size_t i = 0; i < expected.size(); ++i) compare(i, got.tensors[i]);
  REQUIRE(got.dq_in_dkdv.size() == (sixteen_bit ? (c.bias ? 4u : 3u) : 0u));
  if (!got.dq_in_dkdv.empty()) {
    INFO("dq summed in the dk/dv kernel");
    compare(2, got.dq_in_dkdv[0]);
    // dk and dv are the same computation either way, and dbias the same rounded dS.
    CHECK(got.dq_in_dkdv[1].to_vector() == got.tensors[3].to_vector());
    CHECK(got.dq_in_dkdv[2].to_vector() == got.tensors[4].to_vector());
    if (c.bias) CHECK(got.dq_in_dkdv[3].to_vector() == got.tensors[5].to_vector());
  }
}

}  // namespace

TEST_CASE("emulated tensor-core attention: policies without per-row arrays match the CPU kernel") {
  Case c;
  check_kernels(c, mask::None{});
  check_kernels(c, mask::Causal{});
  check_kernels(c, mask::SlidingWindow(9, 0));
  check_kernels(c, mask::ChunkedLocal(12, 3));
  check_kernels(c, mask::Gist(10, 13));
  check_kernels(c, mask::GistNegativeControl(10, 13));
  check_kernels(c, mask::GistBidirectional(10, 13));
  Case cross = c;
  cross.tq = 40;
  check_kernels(cross, mask::GistCross(10, 13));
  Case digest = c;
  digest.tq = 8;
  digest.tk = 64 + 8;  // [context ; digest slots]
  check_kernels(digest, mask::DigestCross(64, 8));
  check_kernels(digest, mask::DigestCross::chunked(64, 8, 4));
}

TEST_CASE("emulated tensor-core attention: policies with per-row arrays") {
  Case c;
  const std::vector<std::int32_t> spans = {10, 13, 0, 0};  // the second row has no gist span
  check_kernels(c, mask::Gist(spans.data(), 2));
  check_kernels(c, mask::GistBidirectional(spans.data(), 2));
  const std::vector<std::int32_t> lengths = {200, 33};
  check_kernels(c, mask::KeyPadding(lengths.data(), 2));
  std::vector<bool> keep_bits(2 * 200);
  for (std::size_t i = 0; i < keep_bits.size(); ++i) keep_bits[i] = (i * 7) % 5 != 0;
  const auto keep = from_vector<bool>(keep_bits, Shape{2, 200});
  check_kernels(c, mask::Pruned(keep.data(), 2, 200));
}

TEST_CASE("emulated tensor-core attention: head dims, grouped heads, bias, scales, offsets, padding and no tile skipping") {
  for (std::int64_t dim : {128, 40, 100, 36}) {  // 40, 100: zero-padded; 36: loads element by element
    Case c;
    c.dim = dim;
    check_kernels(c, mask::Causal{});
  }
  Case gqa;
  gqa.heads = 6;
  gqa.kv_heads = 1;
  check_kernels(gqa, mask::Causal{});
  Case with_bias;
  with_bias.bias = true;
  check_kernels(with_bias, mask::SlidingWindow(5, 5));
  check_kernels(with_bias, mask::Causal{});
  Case long_rows;  // several key tiles on both sides of the diagonal, partial tiles at both ends
  long_rows.batch = 1;
  long_rows.heads = long_rows.kv_heads = 1;
  long_rows.tq = 300;
  long_rows.tk = 300;
  long_rows.dim = 128;
  check_kernels(long_rows, mask::Causal{});
  check_kernels(long_rows, mask::Gist(70, 140));
  Case step;  // decoding steps after a cache: the query offset and key padding through the arguments
  step.tq = 20;
  step.tk = 77;
  step.query_offset = 57;
  check_kernels(step, mask::Causal{});
  step.lengths = {50, 77};
  check_kernels(step, mask::Causal{});
  check_kernels(step, mask::Gist(10, 13));
  Case empty_rows;  // rows whose every key is padded away: zeros and lse = -inf
  empty_rows.lengths = {0, 120};
  check_kernels(empty_rows, mask::None{});
  // The softmax scale goes into the exponent (exp2(s * c - max)) unless a bias is added or
  // the scale is not positive (scaled first: the row maxima of scaled and unscaled scores
  // then lie at different keys): both, through a scale other than 1 / sqrt(dim).
  Case scaled;
  scaled.scale = 0.25;
  check_kernels(scaled, mask::Causal{});
  scaled.scale = -0.25;
  check_kernels(scaled, mask::Causal{});
  scaled.bias = true;
  check_kernels(scaled, mask::Gist(10, 13));
  Case no_skip;
  no_skip.skip_tiles = false;
  check_kernels(no_skip, mask::Gist(10, 13));
  check_kernels(no_skip, mask::Causal{});
  // Strided operands (heads split off a projection, a cache's prefix) through RowLayouts:
  // 16-byte chunks at head dim 64, element by element at 36.
  for (std::int64_t dim : {64, 36}) {
    Case strided;
    strided.strided = true;
    strided.dim = dim;
    strided.bias = dim == 64;
    check_kernels(strided, mask::Causal{});
  }
}

TEST_CASE("emulated portable attention (CUDA cores): float and double against the CPU kernel") {
  for (const DType dtype : {DType::Float32, DType::Float64}) {
    for (std::int64_t dim : {64, 128, 40}) {
      Case c;
      c.dtype = dtype;
      c.dim = dim;
      c.bias = dim == 40;
      check_kernels(c, mask::Causal{});
    }
    Case c;
    c.dtype = dtype;
    check_kernels(c, mask::Gist(10, 13));
    check_kernels(c, mask::ChunkedLocal(12, 3));
    const std::vector<std::int32_t> lengths = {200, 33};
    check_kernels(c, mask::KeyPadding(lengths.data(), 2));
    Case step;
    step.dtype = dtype;
    step.tq = 20;
    step.tk = 77;
    step.query_offset = 57;
    step.lengths = {50, 77};
    check_kernels(step, mask::Causal{});
    Case no_skip = c;
    no_skip.skip_tiles = false;
    check_kernels(no_skip, mask::SlidingWindow(9, 0));
    Case strided = c;
    strided.strided = true;
    check_kernels(strided, mask::Causal{});
  }
}

TEST_CASE("emulated tensor-core attention: the float16 kernels") {
  for (std::int64_t dim : {64, 128}) {
    Case c;
    c.dtype = DType::Float16;
    c.dim = dim;
    c.bias = dim == 64;
    check_kernels(c, mask::Causal{});
    check_kernels(c, mask::Gist(10, 13));
  }
}

TEST_CASE("emulated tensor-core attention: the forward tile counters follow the policy's 128 x 64 classification") {
  Case c;
  c.batch = 1;
  c.heads = c.kv_heads = 2;
  c.tq = c.tk = 300;
  const mask::ChunkedLocal policy(64, 4);
  Generator gen(3);
  const auto q = randn<float>({1, 2, 300, 64}, gen).cast<bfloat16>().cast<float>();
  const auto got = run_kernels<bfloat16, 64>(c, policy, q, q, q, Tensor<float>(), q);
  std::array<unsigned long long, 3> expected{};
  for (int q0 = 0; q0 < 300; q0 += tc::forward_block_m)
    for (int k0 = 0; k0 < 300; k0 += tc::block_n)
      ++expected[static_cast<std::size_t>(policy.classify(0, q0, std::min(300, q0 + tc::forward_block_m), k0, std::min(300, k0 + tc::block_n)))];
  CHECK(got.tiles[0] == 2 * expected[0]);
  CHECK(got.tiles[1] == 2 * expected[1]);
  CHECK(got.tiles[2] == 2 * expected[2]);
  CHECK(got.tiles[0] > 0);
}

TEST_CASE("emulated tensor-core attention: the emulation itself catches a shared-memory access past the launch") {
  // A launch that asks for less shared memory than the kernel uses must fail, not pass.
  Case c;
  c.batch = 1;
  c.heads = c.kv_heads = 1;
  c.tq = c.tk = 64;
  cuda::AttentionArgs a;
  a.dtype = DType::BFloat16;
  a.batch = a.heads = a.kv_heads = 1;
  a.tq = a.tk = 64;
  a.dim = 64;
  a.bias_heads = 0;
  std::vector<bfloat16> x(64 * 64, bfloat16(0.5f)), out(x.size());
  std::vector<float> lse(64);
  a.q = a.k = a.v = x.data();
  a.out = out.data();
  a.lse = lse.data();
  a.resolve_layouts();
  using KernelPolicy = mask::Intersect<mask::QueryOffset<mask::None>, mask::KeyPadding>;
  const KernelPolicy policy(mask::QueryOffset<mask::None>(mask::None{}, 0), a.key_padding);
  CHECK_THROWS_WITH_AS(emu::launch(tc::forward_grid(a), dim3(tc::threads), tc::forward_smem<64> / 2,
                                                        tc::flash_forward_mma<bfloat16, KernelPolicy, 64>, a, policy,
                                                        static_cast<unsigned long long*>(nullptr)),
                       doctest::Contains("past the"), std::runtime_error);
}

}  // namespace test_attention_kernels_emulated
