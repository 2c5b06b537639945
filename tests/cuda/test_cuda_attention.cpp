// CUDA flash attention against the CPU kernel (itself checked against the composition of
// primitive ops in tests/attention): outputs, log-sum-exp and the gradients of q, k, v and
// the bias, for every built-in policy (per-row arrays copied to the device), grouped-query
// heads, head dims 64 and 128 and a ragged one, Tq != Tk, strided q, k, v read in place,
// decoding steps through the split-key kernels, and tile skipping on and off; the tile
// counters against the policy's own classification on the host; the tensor-core kernels
// (bf16: float tensors through cuda::set_allow_bf16_attention, and bfloat16 tensors
// through the launcher) against the CPU kernel on the same bf16-rounded inputs; the
// backward's dq by atomics against its deterministic dq kernel. Every test skips with a
// message when no CUDA device is present.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"
#include "half_test_util.hpp"

namespace test_cuda_attention {

using namespace condense;
using condense::testing::allclose;
using condense::testing::max_abs_diff;

namespace {

struct Case {
  std::int64_t batch = 2, heads = 4, kv_heads = 2, tq = 70, tk = 70, dim = 64;
  bool bias = false;
  bool skip_tiles = true;
  /// Inputs rounded to bfloat16 on both sides; the GPU runs the bf16 tensor-core kernels.
  bool bf16 = false;
  /// q a [B, T, H, D] buffer seen as [B, H, T, D] (heads split off a projection), k and v the
  /// first Tk rows of [B, Hkv, 2 Tk, D] buffers (a cache's prefix): read in place.
  bool strided = false;
};

/// t with every element rounded to bfloat16 (and back to float).
Tensor<float> rounded_to_bf16(const Tensor<float>& t) { return t.cast<bfloat16>().cast<float>(); }

/// Turns the bf16 attention mode on for a scope.
struct Bf16AttentionScope {
  explicit Bf16AttentionScope(bool on) { cuda::set_allow_bf16_attention(on); }
  ~Bf16AttentionScope() { cuda::set_allow_bf16_attention(false); }
  Bf16AttentionScope(const Bf16AttentionScope&) = delete;
  Bf16AttentionScope& operator=(const Bf16AttentionScope&) = delete;
};

/// Makes the attention backward deterministic (dq from its own kernel) for a scope.
struct DeterministicAttentionScope {
  explicit DeterministicAttentionScope(bool on) { cuda::set_deterministic_attention(on); }
  ~DeterministicAttentionScope() { cuda::set_deterministic_attention(false); }
  DeterministicAttentionScope(const DeterministicAttentionScope&) = delete;
  DeterministicAttentionScope& operator=(const DeterministicAttentionScope&) = delete;
};

/// Runs attention with `cpu_policy` on the CPU and `gpu_policy` (the same mask, arrays on
/// the device) on CUDA; compares out, lse and the gradients of q, k, v (and bias).
template <class CpuPolicy, class GpuPolicy>
void check_attention_parity(const Case& c, const CpuPolicy& cpu_policy, const GpuPolicy& gpu_policy, std::uint64_t seed = 1) {
  CAPTURE(c.tq);
  CAPTURE(c.tk);
  CAPTURE(c.dim);
  CAPTURE(c.bias);
  CAPTURE(c.bf16);
  CAPTURE(c.strided);
  Generator gen(seed);
  const auto input = [&](Shape shape) {
    const auto t = randn<float>(shape, gen);
    return c.bf16 ? rounded_to_bf16(t) : t;
  };
  const auto q = input({c.batch, c.heads, c.tq, c.dim});
  const auto k = input({c.batch, c.kv_heads, c.tk, c.dim});
  const auto v = input({c.batch, c.kv_heads, c.tk, c.dim});
  const auto bias = c.bias ? input({c.batch, 1, c.tq, c.tk}) : Tensor<float>();
  const auto dout = input({c.batch, c.heads, c.tq, c.dim});
  AttentionOptions options;
  options.skip_tiles = c.skip_tiles;

  const auto run = [&](Device device, const auto& policy) {
    std::vector<Tensor<float>> in = {q, k, v};
    if (c.bias) in.push_back(bias);
    for (std::size_t i = 0; i < in.size(); ++i) {
      Tensor<float> t = in[i].to(device).clone();
      if (c.strided && i == 0) t = t.transpose(1, 2).contiguous().transpose(1, 2);
      if (c.strided && (i == 1 || i == 2)) t = cat({t, t}, 2).narrow(2, 0, t.size(2));
      in[i] = t.detach().requires_grad_();
    }
    const auto r = attention_forward(in[0], in[1], in[2], policy, options, c.bias ? in[3] : Tensor<float>());
    // The output is laid out like q: merging a token-major q's heads back is a view.
    if (c.strided) CHECK(r.out.transpose(1, 2).is_contiguous());
    r.out.backward(dout.to(device));
    std::vector<Tensor<float>> results = {r.out.cpu(), r.lse.cpu()};
    for (const auto& t : in) results.push_back(t.grad().cpu());
    return results;
  };
  const auto expected = run(Device::cpu(), cpu_policy);
  const auto got = [&] {
    const Bf16AttentionScope mode(c.bf16);
    return run(Device::cuda(), gpu_policy);
  }();
  // bf16: the kernels round P and dS to bfloat16 (8 significant bits) before their second
  // products; the CPU keeps them in float.
  const double lse_tol = c.bf16 ? 1e-3 : 1e-4, rtol = c.bf16 ? 3e-2 : 1e-3, atol = c.bf16 ? 3e-2 : 1e-4;
  const char* names[] = {"out", "lse", "dq", "dk", "dv", "dbias"};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(names[i]);
    // -inf log-sum-exp rows (no allowed key) must match exactly.
    if (i == 1) {
      const auto e = expected[i].to_vector(), g = got[i].to_vector();
      double worst = 0;
      for (std::size_t j = 0; j < e.size(); ++j) {
        if (std::isinf(e[j])) {
          CHECK(g[j] == e[j]);
        } else {
          worst = std::max(worst, std::abs(double(g[j]) - double(e[j])) / (1.0 + std::abs(double(e[j]))));
        }
      }
      CHECK_MESSAGE(worst < lse_tol, "lse differs by ", worst);
      continue;
    }
    CHECK_MESSAGE(allclose(got[i], expected[i], rtol, atol), names[i], " differs by ", max_abs_diff(got[i], expected[i]));
  }
}

/// A device copy of a host vector that lives as long as the returned tensor.
template <Element T>
Tensor<T> on_device(const std::vector<T>& values) {
  return from_vector<T>(values, Shape{static_cast<std::int64_t>(values.size())}).to(Device::cuda());
}

}  // namespace

TEST_CASE("cuda attention: policies without per-row arrays match the CPU kernel") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Case c;
  check_attention_parity(c, mask::None{}, mask::None{});
  check_attention_parity(c, mask::Causal{}, mask::Causal{});
  check_attention_parity(c, mask::SlidingWindow(9, 0), mask::SlidingWindow(9, 0));
  check_attention_parity(c, mask::ChunkedLocal(12, 3), mask::ChunkedLocal(12, 3));
  check_attention_parity(c, mask::Gist(10, 13), mask::Gist(10, 13));
  check_attention_parity(c, mask::GistNegativeControl(10, 13), mask::GistNegativeControl(10, 13));
  check_attention_parity(c, mask::GistBidirectional(10, 13), mask::GistBidirectional(10, 13));
  Case cross = c;
  cross.tq = 37;  // decoder queries over encoder states
  check_attention_parity(cross, mask::GistCross(10, 13), mask::GistCross(10, 13));
  Case digest = c;
  digest.tq = 8;
  digest.tk = 64 + 8;  // [context ; digest slots]
  check_attention_parity(digest, mask::DigestCross(64, 8), mask::DigestCross(64, 8));
  check_attention_parity(digest, mask::DigestCross::chunked(64, 8, 4), mask::DigestCross::chunked(64, 8, 4));
}

TEST_CASE("cuda attention: policies with per-row arrays on the device") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Case c;
  const std::vector<std::int32_t> spans = {10, 13, 0, 0};  // the second row has no gist span
  const auto d_spans = on_device(spans);
  check_attention_parity(c, mask::Gist(spans.data(), 2), mask::Gist(d_spans.data(), 2));
  check_attention_parity(c, mask::GistBidirectional(spans.data(), 2), mask::GistBidirectional(d_spans.data(), 2));
  const std::vector<std::int32_t> lengths = {70, 33};
  const auto d_lengths = on_device(lengths);
  check_attention_parity(c, mask::KeyPadding(lengths.data(), 2), mask::KeyPadding(d_lengths.data(), 2));
  std::vector<bool> keep_bits(2 * 70);
  for (std::size_t i = 0; i < keep_bits.size(); ++i) keep_bits[i] = (i * 7) % 5 != 0;
  const auto keep_host = from_vector<bool>(keep_bits, Shape{2, 70});
  const auto keep_device = keep_host.to(Device::cuda());
  check_attention_parity(c, mask::Pruned(keep_host.data(), 2, 70), mask::Pruned(keep_device.data(), 2, 70));
}

TEST_CASE("cuda attention: head dims, grouped heads, bias, ragged sizes and no tile skipping") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  for (std::int64_t dim : {64, 128, 40}) {
    Case c;
    c.dim = dim;
    check_attention_parity(c, mask::Causal{}, mask::Causal{});
  }
  Case gqa;
  gqa.heads = 8;
  gqa.kv_heads = 1;
  check_attention_parity(gqa, mask::Causal{}, mask::Causal{});
  Case with_bias;
  with_bias.bias = true;
  check_attention_parity(with_bias, mask::SlidingWindow(5, 5), mask::SlidingWindow(5, 5));
  Case ragged;
  ragged.tq = 1;
  ragged.tk = 77;
  check_attention_parity(ragged, mask::Causal(76), mask::Causal(76));  // one decoding step after a cache
  ragged.tq = 129;
  ragged.tk = 3;
  check_attention_parity(ragged, mask::None{}, mask::None{});
  Case no_skip;
  no_skip.skip_tiles = false;
  check_attention_parity(no_skip, mask::Gist(10, 13), mask::Gist(10, 13));
}

TEST_CASE("cuda attention: strided q, k and v (heads split off a projection, a cache's prefix) are read in place") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Case c;
  c.strided = true;
  check_attention_parity(c, mask::Causal{}, mask::Causal{});
  c.bias = true;
  check_attention_parity(c, mask::Gist(10, 13), mask::Gist(10, 13));
  Case bf16 = c;  // float tensors staged through bfloat16 for the tensor cores
  bf16.bf16 = true;
  check_attention_parity(bf16, mask::Causal{}, mask::Causal{});
  Case ragged = c;  // a head dim off the 16-byte chunks: element-by-element loads
  ragged.dim = 36;
  ragged.bf16 = true;
  check_attention_parity(ragged, mask::Causal{}, mask::Causal{});
}

TEST_CASE("cuda attention: decoding steps (a few queries after a cache) through the split-key kernels") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // Through attention(): one query and a chunk of 5 after a cache read in place, grouped
  // heads, policies with Empty tiles, per-row arrays on the device, a bias; the backward
  // (general kernels) from the decode forward's lse.
  Case c;
  c.strided = true;
  c.heads = 8;
  c.tq = 1;
  c.tk = 300;
  check_attention_parity(c, mask::Causal(299), mask::Causal(299));
  c.tq = 5;
  check_attention_parity(c, mask::QueryOffset(mask::SlidingWindow(70, 0), 295),
                         mask::QueryOffset(mask::SlidingWindow(70, 0), 295));
  c.bias = true;
  check_attention_parity(c, mask::QueryOffset(mask::Gist(10, 30), 295), mask::QueryOffset(mask::Gist(10, 30), 295));
  const std::vector<std::int32_t> lengths = {300, 0};  // the second row has no key
  const auto d_lengths = on_device(lengths);
  check_attention_parity(c, mask::Causal(295) & mask::KeyPadding(lengths.data(), 2),
                         mask::Causal(295) & mask::KeyPadding(d_lengths.data(), 2));
  c.bf16 = true;
  check_attention_parity(c, mask::Causal(295), mask::Causal(295));

  // Through the launcher: bfloat16 tensors with the decode kernels and with the general
  // ones agree with the CPU kernel; float tensors in the bf16 attention mode are read as
  // float by the decode kernels (float accuracy, which the bf16 staging cannot reach).
  const std::int64_t B = 2, H = 8, Hkv = 2, Tq = 2, Tk = 1000, D = 128;
  Generator gen(11);
  const auto q = rounded_to_bf16(randn<float>({B, H, Tq, D}, gen));
  const auto k = rounded_to_bf16(randn<float>({B, Hkv, Tk, D}, gen));
  const auto v = rounded_to_bf16(randn<float>({B, Hkv, Tk, D}, gen));
  const mask::Causal policy(Tk - Tq);
  const auto expected = attention_forward(q, k, v, policy);
  const auto arguments = [&](DType dtype, const void* qd, const void* kd, const void* vd, void* out, void* lse) {
    cuda::AttentionArgs a;
    a.dtype = dtype;
    a.batch = B;
    a.heads = H;
    a.kv_heads = Hkv;
    a.tq = Tq;
    a.tk = Tk;
    a.dim = D;
    a.scale = 1.0 / std::sqrt(double(D));
    a.q = qd;
    a.k = kd;
    a.v = vd;
    a.out = out;
    a.lse = lse;
    return a;
  };
  const auto qb = q.cast<bfloat16>().to(Device::cuda()), kb = k.cast<bfloat16>().to(Device::cuda()),
             vb = v.cast<bfloat16>().to(Device::cuda());
  for (const bool decode : {true, false}) {
    CAPTURE(decode);
    auto out = Tensor<bfloat16>::empty({B, H, Tq, D}, Device::cuda());
    auto lse = Tensor<float>::empty({B, H, Tq}, Device::cuda());
    cuda::AttentionArgs a = arguments(DType::BFloat16, qb.data(), kb.data(), vb.data(), out.data(), lse.data());
    a.decode_kernels = decode;
    cuda::attention_forward(a, policy, "attention (decode test)");
    CHECK_MESSAGE(allclose(out.cast<float>().cpu(), expected.out, 1e-2, 1e-2), "out differs by ",
                  max_abs_diff(out.cast<float>().cpu(), expected.out));
    CHECK(allclose(lse.cpu(), expected.lse, 1e-3, 1e-3));
  }
  const auto qf = q.to(Device::cuda()), kf = k.to(Device::cuda()), vf = v.to(Device::cuda());
  auto out = Tensor<float>::empty({B, H, Tq, D}, Device::cuda());
  auto lse = Tensor<float>::empty({B, H, Tq}, Device::cuda());
  cuda::AttentionArgs a = arguments(DType::Float32, qf.data(), kf.data(), vf.data(), out.data(), lse.data());
  a.bf16_tensor_cores = true;
  cuda::attention_forward(a, policy, "attention (decode test)");
  CHECK_MESSAGE(allclose(out.cpu(), expected.out, 1e-4, 1e-5), "out differs by ", max_abs_diff(out.cpu(), expected.out));
  CHECK(allclose(lse.cpu(), expected.lse, 1e-5, 1e-5));
}

TEST_CASE("cuda attention: a backward without queries zeroes strided key and value gradients, and nothing else") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const std::int64_t B = 2, Hkv = 2, Tk = 5, D = 8, capacity = 7;
  // dk and dv: the first Tk rows of [B, Hkv, capacity, D] buffers filled with 3s.
  auto dk = full<float>({B, Hkv, capacity, D}, 3.0f).to(Device::cuda());
  auto dv = full<float>({B, Hkv, capacity, D}, 3.0f).to(Device::cuda());
  cuda::AttentionArgs a;
  a.dtype = DType::Float32;
  a.batch = B;
  a.heads = a.kv_heads = Hkv;
  a.tq = 0;
  a.tk = Tk;
  a.dim = D;
  a.dk = dk.data();
  a.dv = dv.data();
  a.dk_rows = a.dv_rows = RowLayout::contiguous(Hkv, capacity, D);
  cuda::attention_backward(a, mask::None{}, "attention backward (test)");
  for (const auto& g : {dk.cpu(), dv.cpu()}) {
    CHECK(g.narrow(2, 0, Tk).contiguous().to_vector() == std::vector<float>(static_cast<std::size_t>(B * Hkv * Tk * D), 0.0f));
    CHECK(g.narrow(2, Tk, capacity - Tk).contiguous().to_vector() ==
          std::vector<float>(static_cast<std::size_t>(B * Hkv * (capacity - Tk) * D), 3.0f));
  }
}

TEST_CASE("cuda attention: QueryOffset runs the inner policy's kernels with shifted queries") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // A continuation of 20 queries after 57 cached positions (what the models do with a cache).
  Case step;
  step.tq = 20;
  step.tk = 77;
  check_attention_parity(step, mask::QueryOffset(mask::Causal{}, 57), mask::QueryOffset(mask::Causal{}, 57));
  check_attention_parity(step, mask::QueryOffset(mask::SlidingWindow(9, 0), 57),
                         mask::QueryOffset(mask::SlidingWindow(9, 0), 57));
  check_attention_parity(step, mask::QueryOffset(mask::Gist(10, 13), 57), mask::QueryOffset(mask::Gist(10, 13), 57));
  // Offset 0 (every model call without a cache) equals the inner policy.
  Case whole;
  check_attention_parity(whole, mask::Causal{}, mask::QueryOffset(mask::Causal{}, 0));
}

TEST_CASE("cuda attention: key padding intersected with a policy runs that policy's kernels") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // Per-row lengths (on the device for the GPU side), a continuation after a cache, and
  // uniform lengths on either side of the intersection.
  Case step;
  step.tq = 20;
  step.tk = 77;
  const std::vector<std::int32_t> lengths{50, 77};
  const auto d_lengths = from_vector<std::int32_t>(lengths, {2}, Device::cuda());
  check_attention_parity(step, mask::QueryOffset(mask::Causal{}, 57) & mask::KeyPadding(lengths.data(), 2),
                         mask::QueryOffset(mask::Causal{}, 57) & mask::KeyPadding(d_lengths.data(), 2));
  check_attention_parity(step, mask::QueryOffset(mask::Causal{} & mask::KeyPadding(lengths.data(), 2), 57),
                         mask::QueryOffset(mask::Causal{} & mask::KeyPadding(d_lengths.data(), 2), 57));
  Case whole;
  check_attention_parity(whole, mask::KeyPadding(33) & mask::Gist(10, 13), mask::KeyPadding(33) & mask::Gist(10, 13));
  // The encoder-decoder gist training mask over right-padded sources.
  check_attention_parity(whole, mask::GistBidirectional(10, 13) & mask::KeyPadding(60),
                         mask::GistBidirectional(10, 13) & mask::KeyPadding(60));
}

TEST_CASE("cuda attention: the tile counters follow the policy's classification") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const std::int64_t B = 1, H = 2, T = 100, D = 64;
  Generator gen(9);
  const auto q = randn<float>({B, H, T, D}, gen).to(Device::cuda());
  const auto k = randn<float>({B, H, T, D}, gen).to(Device::cuda());
  AttentionOptions options;
  options.count_cuda_tiles = true;
  const mask::ChunkedLocal policy(20, 4);
  const auto r = attention_forward(q, k, k, policy, options);
  // The kernels' tiles: 16 queries x 32 keys.
  std::int64_t expected[3] = {0, 0, 0};
  for (int q0 = 0; q0 < T; q0 += 16)
    for (int k0 = 0; k0 < T; k0 += 32)
      ++expected[static_cast<int>(policy.classify(0, q0, std::min<int>(T, q0 + 16), k0, std::min<int>(T, k0 + 32)))];
  CHECK(r.tiles.empty == H * expected[0]);
  CHECK(r.tiles.partial == H * expected[1]);
  CHECK(r.tiles.full == H * expected[2]);
  CHECK(r.tiles.empty > 0);
}

namespace {
/// A policy without CUDA kernels in this program.
struct EveryKeyPolicy {
  CONDENSE_HD bool allowed(int, int, int) const { return true; }
  CONDENSE_HD TileKind classify(int, int, int, int, int) const { return TileKind::Full; }
};
}  // namespace

TEST_CASE("cuda attention: bad arguments name the op") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const auto q = zeros<float>({1, 2, 4, 300}, Device::cuda());
  CHECK_THROWS_WITH_AS(attention(q, q, q, mask::Causal{}), doctest::Contains("head dims"), Error);
  const auto cpu_k = zeros<float>({1, 2, 4, 8});
  const auto gpu_q = zeros<float>({1, 2, 4, 8}, Device::cuda());
  CHECK_THROWS_WITH_AS(attention(gpu_q, cpu_k, cpu_k, mask::Causal{}), doctest::Contains("different devices"), Error);
  CHECK_THROWS_WITH_AS(attention(gpu_q, gpu_q, gpu_q, EveryKeyPolicy{}), doctest::Contains("no CUDA attention kernels"), Error);
}

TEST_CASE("cuda attention: bf16 tensor cores (float tensors) match the CPU kernel on rounded inputs") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Case c;
  c.bf16 = true;
  c.tq = c.tk = 150;  // three 64-row query tiles and key tiles, the last ones partial
  check_attention_parity(c, mask::None{}, mask::None{});
  check_attention_parity(c, mask::Causal{}, mask::Causal{});
  check_attention_parity(c, mask::SlidingWindow(20, 0), mask::SlidingWindow(20, 0));
  check_attention_parity(c, mask::ChunkedLocal(40, 3), mask::ChunkedLocal(40, 3));
  check_attention_parity(c, mask::Gist(30, 35), mask::Gist(30, 35));
  const std::vector<std::int32_t> lengths = {150, 70};
  const auto d_lengths = on_device(lengths);
  check_attention_parity(c, mask::Causal{} & mask::KeyPadding(lengths.data(), 2),
                         mask::Causal{} & mask::KeyPadding(d_lengths.data(), 2));
  for (std::int64_t dim : {128, 40, 100}) {  // zero-padded head dims; 100: element-wise tile loads
    Case d = c;
    d.dim = dim;
    check_attention_parity(d, mask::Causal{}, mask::Causal{});
  }
  Case gqa = c;
  gqa.heads = 8;
  gqa.kv_heads = 2;
  gqa.bias = true;
  check_attention_parity(gqa, mask::Causal{}, mask::Causal{});
  Case step = c;  // decoding after a cache, and more queries than keys
  step.tq = 5;
  step.tk = 133;
  check_attention_parity(step, mask::QueryOffset(mask::Causal{}, 128), mask::QueryOffset(mask::Causal{}, 128));
  step.tq = 130;
  step.tk = 9;
  check_attention_parity(step, mask::None{}, mask::None{});
  Case no_skip = c;
  no_skip.skip_tiles = false;
  check_attention_parity(no_skip, mask::Gist(30, 35), mask::Gist(30, 35));
}

TEST_CASE("cuda attention: head dim 128 on the tensor cores fits the device's shared memory per block (causal)") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // The head-dim-128 tensor-core kernels need 102-113 KiB of shared memory per block with
  // two copy stages: sm_90 and sm_80 have room, sm_86 and sm_89 (99 KiB) run their
  // one-stage variants. The emulated backend runs this test a second time as such a device
  // (CONDENSE_EMULATED_SHARED_BYTES=101376, tests/CMakeLists.txt), where a launch of a
  // two-stage kernel fails. bfloat16 tensors (forward, both backwards), float tensors in the
  // bf16 attention mode, and a decoding step, all with the causal policy.
  const std::int64_t B = 2, H = 4, Hkv = 2, Tq = 150, Tk = 150, D = 128;
  Generator gen(21);
  const auto q = randn<bfloat16>({B, H, Tq, D}, gen), k = randn<bfloat16>({B, Hkv, Tk, D}, gen),
             v = randn<bfloat16>({B, Hkv, Tk, D}, gen);
  for (const bool deterministic : {false, true}) {
    CAPTURE(deterministic);
    const DeterministicAttentionScope mode(deterministic);
    condense::testing::check_cpu_cuda_parity<bfloat16>(
        [](const std::vector<Tensor<bfloat16>>& x) { return attention(x[0], x[1], x[2], mask::Causal{}); }, {q, k, v},
        3e-2, 3e-2);
  }
  Case c;
  c.dim = D;
  c.bf16 = true;
  c.tq = c.tk = 150;
  check_attention_parity(c, mask::Causal{}, mask::Causal{});
  c.tq = 3;  // a decoding step after a cache
  check_attention_parity(c, mask::Causal(147), mask::Causal(147));
}

TEST_CASE("cuda attention: bfloat16 tensors run the tensor-core launchers directly") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const std::int64_t B = 2, H = 4, T = 100, D = 64;
  Generator gen(5);
  const auto q = rounded_to_bf16(randn<float>({B, H, T, D}, gen));
  const auto k = rounded_to_bf16(randn<float>({B, H, T, D}, gen));
  const auto v = rounded_to_bf16(randn<float>({B, H, T, D}, gen));
  const auto expected = attention_forward(q, k, v, mask::Causal{});
  const auto qb = q.cast<bfloat16>().to(Device::cuda()), kb = k.cast<bfloat16>().to(Device::cuda()),
             vb = v.cast<bfloat16>().to(Device::cuda());
  auto out = Tensor<bfloat16>::empty({B, H, T, D}, Device::cuda());
  auto lse = Tensor<float>::empty({B, H, T}, Device::cuda());
  cuda::AttentionArgs a;
  a.dtype = DType::BFloat16;
  a.batch = B;
  a.heads = a.kv_heads = H;
  a.tq = a.tk = T;
  a.dim = D;
  a.scale = 1.0 / std::sqrt(double(D));
  a.q = qb.data();
  a.k = kb.data();
  a.v = vb.data();
  a.out = out.data();
  a.lse = lse.data();
  cuda::attention_forward(a, mask::Causal{}, "attention (bf16 test)");
  CHECK_MESSAGE(allclose(out.cast<float>().cpu(), expected.out, 3e-2, 3e-2), "out differs by ",
                max_abs_diff(out.cast<float>().cpu(), expected.out));
  CHECK(allclose(lse.cpu(), expected.lse, 1e-3, 1e-3));
}

TEST_CASE("cuda attention: bfloat16 tensors through attention() match the CPU op, gradients included") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // The op on bfloat16 CUDA tensors calls the tensor-core kernels directly (no float copies);
  // the CPU op runs the float kernel on widened copies. Grouped heads, a bias, a gist mask
  // with its spans on the device, head dims 64 and 128.
  for (const std::int64_t D : {64, 128}) {
    CAPTURE(D);
    const std::int64_t B = 2, H = 4, Hkv = 2, T = 77;
    Generator gen(static_cast<std::uint64_t>(D));
    const auto q = randn<bfloat16>({B, H, T, D}, gen), k = randn<bfloat16>({B, Hkv, T, D}, gen),
               v = randn<bfloat16>({B, Hkv, T, D}, gen);
    const auto bias = randn<bfloat16>({B, 1, T, T}, gen);
    const std::vector<std::int32_t> spans = {10, 14, 20, 26};
    const auto spans_cpu = from_vector<std::int32_t>(spans, {2, 2});
    const auto spans_gpu = spans_cpu.to(Device::cuda());
    condense::testing::check_cpu_cuda_parity<bfloat16>(
        [&](const std::vector<Tensor<bfloat16>>& x) {
          const bool gpu = x[0].device().is_cuda();
          const mask::Gist policy((gpu ? spans_gpu : spans_cpu).data(), 2);
          const auto r = attention_forward(x[0], x[1], x[2], policy, {}, x[3]);
          CHECK(r.lse.device() == x[0].device());
          return r.out;
        },
        {q, k, v, bias}, 3e-2, 3e-2);
  }
}

TEST_CASE("cuda attention: the two tensor-core backwards (dq by atomics in the dk/dv kernel, or the dq kernel) agree") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // Several key tiles of 64 (so several blocks add to each dq row), grouped heads, a ragged
  // Tq != Tk, head dims 64 and 128; without a bias, so the default takes the atomics.
  for (const std::int64_t D : {64, 128}) {
    CAPTURE(D);
    const std::int64_t B = 2, H = 4, Hkv = 2, Tq = 150, Tk = 230;
    Generator gen(static_cast<std::uint64_t>(D) + 3);
    const auto q = randn<bfloat16>({B, H, Tq, D}, gen), k = randn<bfloat16>({B, Hkv, Tk, D}, gen),
               v = randn<bfloat16>({B, Hkv, Tk, D}, gen), dout = randn<bfloat16>({B, H, Tq, D}, gen);
    const mask::SlidingWindow policy(100, 20);
    const auto run = [&](bool deterministic, Device device) {
      const DeterministicAttentionScope mode(deterministic);
      std::vector<Tensor<bfloat16>> leaves;
      for (const auto& t : {q, k, v}) leaves.push_back(condense::testing::leaf_on(t, device));
      attention(leaves[0], leaves[1], leaves[2], policy).backward(dout.to(device));
      std::vector<Tensor<float>> grads;
      for (const auto& leaf : leaves) grads.push_back(leaf.grad().cpu().cast<float>());
      return grads;
    };
    const auto cpu = run(false, Device::cpu());
    const auto by_atomics = run(false, Device::cuda());
    const auto by_dq_kernel = run(true, Device::cuda());
    const auto again = run(true, Device::cuda());
    const char* names[] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; ++i) {
      CAPTURE(names[i]);
      CHECK_MESSAGE(allclose(by_atomics[i], cpu[i], 3e-2, 3e-2), "atomics: differs from the CPU by ",
                    max_abs_diff(by_atomics[i], cpu[i]));
      CHECK_MESSAGE(allclose(by_dq_kernel[i], cpu[i], 3e-2, 3e-2), "dq kernel: differs from the CPU by ",
                    max_abs_diff(by_dq_kernel[i], cpu[i]));
      // The same rounded dS, summed in another order: one bfloat16 step apart at most.
      CHECK_MESSAGE(allclose(by_atomics[i], by_dq_kernel[i], 1e-2, 1e-2), "the two ways differ by ",
                    max_abs_diff(by_atomics[i], by_dq_kernel[i]));
      CHECK(again[i].to_vector() == by_dq_kernel[i].to_vector());
    }
    // dk and dv come from the same kernel either way.
    CHECK(by_atomics[1].to_vector() == by_dq_kernel[1].to_vector());
    CHECK(by_atomics[2].to_vector() == by_dq_kernel[2].to_vector());
  }
}

TEST_CASE("cuda attention: float16 tensors run where this build has kernels for them, else on the float kernels") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(9);
  const auto q = randn<float16>({1, 2, 40, 32}, gen), k = randn<float16>({1, 2, 40, 32}, gen),
             v = randn<float16>({1, 2, 40, 32}, gen);
  condense::testing::check_cpu_cuda_parity<float16>(
      [](const std::vector<Tensor<float16>>& x) { return attention(x[0], x[1], x[2], mask::Causal{}); }, {q, k, v}, 1e-2,
      1e-2);
  // The bf16 mode of float attention leaves float16 inputs alone (bfloat16 would round them):
  // the same output and gradients, bit for bit, with the mode on and off. (A build with
  // CONDENSE_CUDA_ATTENTION_ALL runs float16 on its own kernels, where the mode has no say.)
  const auto run = [&](bool bf16_mode) {
    const Bf16AttentionScope mode(bf16_mode);
    const DeterministicAttentionScope reproducible(true);  // float16 kernels (when built) sum dq with atomics otherwise
    std::vector<Tensor<float16>> leaves;
    for (const auto& t : {q, k, v}) leaves.push_back(condense::testing::leaf_on(t, Device::cuda()));
    const auto out = attention(leaves[0], leaves[1], leaves[2], mask::Causal{});
    out.backward(ones<float16>(out.shape(), Device::cuda()));
    std::vector<std::vector<std::uint16_t>> bits{condense::testing::bits(out.cpu())};
    for (const auto& leaf : leaves) bits.push_back(condense::testing::bits(leaf.grad().cpu()));
    return bits;
  };
  CHECK(run(true) == run(false));
}

TEST_CASE("cuda attention: the bf16 tile counters follow the policy's 128 x 64 classification") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const std::int64_t B = 1, H = 2, T = 300, D = 64;
  Generator gen(9);
  const auto q = randn<float>({B, H, T, D}, gen).to(Device::cuda());
  AttentionOptions options;
  options.count_cuda_tiles = true;
  const mask::ChunkedLocal policy(64, 4);
  const Bf16AttentionScope mode(true);
  const auto r = attention_forward(q, q, q, policy, options);
  std::int64_t expected[3] = {0, 0, 0};
  // The tensor-core forward kernel's tiles: 128 queries (32 per warp) x 64 keys.
  for (int q0 = 0; q0 < T; q0 += 128)
    for (int k0 = 0; k0 < T; k0 += 64)
      ++expected[static_cast<int>(policy.classify(0, q0, std::min<int>(T, q0 + 128), k0, std::min<int>(T, k0 + 64)))];
  CHECK(r.tiles.empty == H * expected[0]);
  CHECK(r.tiles.partial == H * expected[1]);
  CHECK(r.tiles.full == H * expected[2]);
  CHECK(r.tiles.empty > 0);
}

}  // namespace test_cuda_attention
