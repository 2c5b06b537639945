// The split-key decode kernels of kernels/attention/flash_attention_decode.cuh (decode_forward
// and decode_combine, the forward for a few queries per sequence) run on the CPU through
// tests/emulation/cuda_emulation.hpp and are checked against the CPU attention on the same
// inputs rounded to the element type: out and lse for bfloat16, float16, float and double,
// one query and short chunks, grouped heads with one and several row blocks per kv head
// (a block's rows crossing a head boundary), every split count from one to one key tile
// per split, policies with Empty, Partial and Full tiles (per-row arrays, key padding that
// leaves rows without keys), a bias, strided operands, head dims copied in 16-byte chunks
// and element by element, and tile skipping off. The plan's split counts are checked too.
#define CONDENSE_CUDA_EMULATION 1
#include "emulation/cuda_emulation.hpp"
// The emulation header must come first: the kernels see its threadIdx, __syncthreads, ...
#include "attention/flash_attention_decode.cuh"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "condense/condense.hpp"
#include "emulation/attention_case.hpp"

namespace test_attention_decode_emulated {

using namespace condense;
namespace dec = condense::cuda::attention_decode;
namespace emu = condense_cuda_emulation;
using namespace condense::testing::attention_case;

namespace {

/// Runs decode_forward (and decode_combine when the plan splits the keys) for a device of
/// `multiprocessors` SMs in emulation; returns out and lse widened to float.
template <class E, int DMax, class Policy>
std::vector<Tensor<float>> run_decode(const Case& c, const Policy& policy, int multiprocessors, const Tensor<float>& q,
                                      const Tensor<float>& k, const Tensor<float>& v, const Tensor<float>& bias) {
  using A = cuda::detail::compute_t<E>;
  const Placement query_side = placement(c, true), key_side = placement(c, false);
  const auto hq = placed<E>(q, query_side), hk = placed<E>(k, key_side), hv = placed<E>(v, key_side);
  const auto hbias = c.bias ? values_of<E>(bias) : std::vector<E>();
  const std::int64_t rows = c.batch * c.heads * c.tq;
  std::vector<E> out(static_cast<std::size_t>(query_side.buffer_size));
  std::vector<A> lse(static_cast<std::size_t>(rows));
  cuda::AttentionArgs a = arguments_of(c, dtype_of<E>);
  a.q = hq.data();
  a.k = hk.data();
  a.v = hv.data();
  a.bias = c.bias ? hbias.data() : nullptr;
  a.out = out.data();
  a.lse = lse.data();
  a.q_rows = a.out_rows = query_side.layout;
  a.k_rows = a.v_rows = key_side.layout;
  const auto kernel_policy = kernel_policy_of(policy, a);
  using KernelPolicy = KernelPolicyOf<Policy>;

  const dec::DecodePlan plan = dec::decode_plan(a, multiprocessors);
  CAPTURE(plan.splits);
  CAPTURE(plan.tiles_per_split);
  const std::size_t smem = dec::smem_bytes<E, DMax>;
  if (plan.splits == 1) {
    emu::launch(dec::decode_grid(a, plan), dim3(dec::threads), smem, dec::decode_forward<E, KernelPolicy, DMax>, a,
                kernel_policy, plan.tiles_per_split, static_cast<A*>(nullptr), static_cast<A*>(nullptr));
  } else {
    std::vector<A> part_out(static_cast<std::size_t>(plan.splits * rows * c.dim), A(NAN));
    std::vector<A> part_lse(static_cast<std::size_t>(plan.splits * rows), A(NAN));
    emu::launch(dec::decode_grid(a, plan), dim3(dec::threads), smem, dec::decode_forward<E, KernelPolicy, DMax>, a,
                kernel_policy, plan.tiles_per_split, part_out.data(), part_lse.data());
    emu::launch(dim3(cuda::detail::capped_blocks((rows + dec::warps - 1) / dec::warps)), dim3(dec::threads), 0,
                dec::decode_combine<E>, a, plan.splits, static_cast<const A*>(part_out.data()),
                static_cast<const A*>(part_lse.data()));
  }
  return {unplaced(out, query_side, {c.batch, c.heads, c.tq, c.dim}),
          from_vector<A>(lse, {c.batch, c.heads, c.tq}).template cast<float>()};
}

/// Runs the decode kernels for every split count the plan reaches (one split, a few, one
/// key tile per split) and compares out and lse with the CPU attention.
template <class Policy>
void check_decode(const Case& c, const Policy& policy, std::uint64_t seed = 1) {
  CAPTURE(c.heads);
  CAPTURE(c.kv_heads);
  CAPTURE(c.tq);
  CAPTURE(c.tk);
  CAPTURE(c.dim);
  CAPTURE(c.bias);
  CAPTURE(c.skip_tiles);
  CAPTURE(c.query_offset);
  CAPTURE(c.strided);
  CAPTURE(dtype_name(c.dtype));
  const CaseInputs in = inputs_of(c, seed);
  const Tensor<float> &q = in.q, &k = in.k, &v = in.v, &bias = in.bias;
  const auto expected = run_cpu(c, policy, q, k, v, bias, Tensor<float>());
  // The kernels keep P in the compute type; only the output is rounded to the element type.
  const double out_tol = c.dtype == DType::BFloat16 ? 8e-3 : c.dtype == DType::Float16 ? 1e-3 : 2e-5;
  for (const int multiprocessors : {1, 3, 1 << 20}) {
    CAPTURE(multiprocessors);
    const auto run = [&]<class E>() {
      return c.dim <= 128 ? run_decode<E, 128>(c, policy, multiprocessors, q, k, v, bias)
                          : run_decode<E, 256>(c, policy, multiprocessors, q, k, v, bias);
    };
    const auto got = c.dtype == DType::Float16    ? run.template operator()<float16>()
                     : c.dtype == DType::BFloat16 ? run.template operator()<bfloat16>()
                     : c.dtype == DType::Float32  ? run.template operator()<float>()
                                                  : run.template operator()<double>();
    const char* names[] = {"out", "lse"};
    for (std::size_t i = 0; i < 2; ++i) {
      CAPTURE(names[i]);
      const auto e = expected[i].to_vector(), g = got[i].to_vector();
      REQUIRE(e.size() == g.size());
      double worst = 0;
      for (std::size_t j = 0; j < e.size(); ++j) {
        if (std::isinf(e[j]) || std::isinf(g[j]) || std::isnan(g[j])) {
          CHECK(g[j] == e[j]);  // rows without an allowed key: lse = -inf on both sides
          continue;
        }
        const double tol = (i == 1 ? 2e-5 : out_tol) * (1.0 + std::abs(double(e[j])));
        worst = std::max(worst, std::abs(double(g[j]) - double(e[j])) / tol);
      }
      CHECK_MESSAGE(worst <= 1.0, names[i], ": the worst difference is ", worst, " times the tolerance");
    }
  }
}

/// A decoding step: `tq` new queries after a cache of tk - tq keys.
Case step(std::int64_t tq, std::int64_t tk, DType dtype = DType::BFloat16) {
  Case c;
  c.tq = tq;
  c.tk = tk;
  c.query_offset = static_cast<int>(tk - tq);
  c.dtype = dtype;
  return c;
}

}  // namespace

TEST_CASE("emulated decode attention: the plan splits the keys to cover the device, one key tile per split at most") {
  cuda::AttentionArgs a;
  a.batch = 2;
  a.heads = 8;
  a.kv_heads = 2;
  a.tq = 1;
  a.tk = 64 * 40 + 5;  // 41 key tiles
  // 4 blocks of rows (one per (batch, kv head)) on 132 SMs: 66 splits wanted, 41 tiles.
  auto plan = dec::decode_plan(a, 132);
  CHECK(plan.row_blocks == 1);
  CHECK(plan.tiles_per_split == 1);
  CHECK(plan.splits == 41);
  plan = dec::decode_plan(a, 16);  // 8 splits wanted: 6 tiles each, 7 splits
  CHECK(plan.tiles_per_split == 6);
  CHECK(plan.splits == 7);
  plan = dec::decode_plan(a, 1);
  CHECK(plan.splits == 1);
  CHECK(plan.tiles_per_split == 41);
  a.tq = 5;  // 4 heads x 5 queries: two blocks of rows per kv head
  plan = dec::decode_plan(a, 1);
  CHECK(plan.row_blocks == 2);
  a.tk = 0;
  plan = dec::decode_plan(a, 132);
  CHECK(plan.splits == 1);
}

TEST_CASE("emulated decode attention: one query and short chunks after a cache, every element type") {
  for (const DType dtype : {DType::BFloat16, DType::Float16, DType::Float32, DType::Float64}) {
    check_decode(step(1, 300, dtype), mask::Causal{});
    check_decode(step(4, 300, dtype), mask::Causal{});
  }
  // Head dims: 16-byte chunks (64, 128, 40 for 16-bit), element by element (36 for 16-bit;
  // 38 for float), above 128 (the 256 bound).
  for (const std::int64_t dim : {128, 40, 36, 38, 200}) {
    Case c = step(2, 150);
    c.dim = dim;
    check_decode(c, mask::Causal{});
    c.dtype = DType::Float32;
    check_decode(c, mask::Causal{});
  }
  Case single = step(1, 1);  // one key
  check_decode(single, mask::Causal{});
}

TEST_CASE("emulated decode attention: grouped heads in one or several blocks of rows") {
  Case gqa = step(1, 260);
  gqa.heads = 8;
  gqa.kv_heads = 2;  // 4 rows per kv head
  check_decode(gqa, mask::Causal{});
  gqa.heads = 12;
  gqa.tq = 5;  // 6 heads x 5 queries = 30 rows: two blocks, the first ending inside a head
  gqa.query_offset = 255;
  check_decode(gqa, mask::Causal{});
  check_decode(gqa, mask::SlidingWindow(70, 0));
  gqa.heads = gqa.kv_heads = 2;  // 16 queries of one head: one full block
  gqa.tq = 16;
  gqa.query_offset = 244;
  check_decode(gqa, mask::Causal{});
}

TEST_CASE("emulated decode attention: policies, per-row arrays, key padding, bias, strided operands, no tile skipping") {
  Case c = step(3, 400);
  check_decode(c, mask::SlidingWindow(100, 0));  // Empty tiles before the window
  check_decode(c, mask::ChunkedLocal(64, 2));
  check_decode(c, mask::Gist(10, 30));
  check_decode(c, mask::None{});
  const std::vector<std::int32_t> spans = {10, 30, 0, 0};  // the second row has no gist span
  check_decode(c, mask::Gist(spans.data(), 2));
  std::vector<bool> keep_bits(2 * 400);
  for (std::size_t i = 0; i < keep_bits.size(); ++i) keep_bits[i] = (i * 7) % 5 != 0 && (i < 400 || i > 650);
  const auto keep = from_vector<bool>(keep_bits, Shape{2, 400});
  check_decode(c, mask::Pruned(keep.data(), 2, 400));
  Case padded = c;
  padded.lengths = {0, 130};  // the first row has no key: zeros and lse = -inf
  check_decode(padded, mask::Causal{});
  Case digest = step(8, 64 + 8);  // digest slots reading a context
  digest.query_offset = 0;
  check_decode(digest, mask::DigestCross(64, 8));
  Case with_bias = c;
  with_bias.bias = true;
  check_decode(with_bias, mask::Causal{});
  with_bias.dtype = DType::Float32;
  check_decode(with_bias, mask::Gist(10, 30));
  for (const DType dtype : {DType::BFloat16, DType::Float32}) {
    for (const std::int64_t dim : {64, 36}) {
      Case strided = c;
      strided.strided = true;
      strided.dtype = dtype;
      strided.dim = dim;
      check_decode(strided, mask::Causal{});
    }
  }
  Case no_skip = c;
  no_skip.skip_tiles = false;
  check_decode(no_skip, mask::SlidingWindow(100, 0));
  Case scaled = c;
  scaled.scale = -0.3;
  check_decode(scaled, mask::Causal{});
}

}  // namespace test_attention_decode_emulated
