// Attention on bfloat16 and float16 tensors on the CPU: the fused op runs the float kernel on
// the widened inputs, so its output and the gradients of q, k, v and the bias equal the float
// results rounded once, bit for bit; the log-sum-exp stays in float. The 16-bit oracle agrees
// with the fused op within the 16-bit rounding, and bad shapes still throw.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/mask/policies.hpp"
#include "condense/ops/attention.hpp"
#include "half_test_util.hpp"
#include "test_util.hpp"

namespace test_attention_half {

using namespace condense;
using condense::testing::check_equals_float_rounded;
using condense::testing::half_epsilon;
using condense::testing::max_abs_diff;

TEST_CASE_TEMPLATE("16-bit attention: value and gradients equal the float kernel's rounded once", T, bfloat16, float16) {
  Generator gen(5);
  // Grouped heads (4 query heads over 2 kv heads), Tq != Tk, a per-head bias, a gist mask.
  const std::int64_t B = 2, H = 4, Hkv = 2, Tq = 13, Tk = 13, D = 16;
  const auto q = randn<T>({B, H, Tq, D}, gen), k = randn<T>({B, Hkv, Tk, D}, gen), v = randn<T>({B, Hkv, Tk, D}, gen);
  const auto bias = randn<T>({B, H, Tq, Tk}, gen);
  const mask::Gist policy(3, 6);
  const AttentionOptions options{.tile_q = 8, .tile_k = 4};
  check_equals_float_rounded<T>(
      {q, k, v, bias},
      [&](const std::vector<Tensor<T>>& x) { return attention(x[0], x[1], x[2], policy, options, x[3]); },
      [&](const std::vector<Tensor<float>>& x) { return attention(x[0], x[1], x[2], policy, options, x[3]); }, gen);
}

TEST_CASE_TEMPLATE("16-bit attention: the log-sum-exp is the float kernel's, in float", T, bfloat16, float16) {
  Generator gen(6);
  const auto q = randn<T>({1, 2, 9, 8}, gen), k = randn<T>({1, 2, 9, 8}, gen), v = randn<T>({1, 2, 9, 8}, gen);
  const AttentionResult<T> r = attention_forward(q, k, v, mask::Causal{});
  const AttentionResult<float> wide =
      attention_forward(q.template cast<float>(), k.template cast<float>(), v.template cast<float>(), mask::Causal{});
  static_assert(std::is_same_v<decltype(r.lse), Tensor<float>>);
  CHECK(max_abs_diff(r.lse, wide.lse) == 0.0);
  CHECK(r.tiles.full == wide.tiles.full);
  CHECK(r.tiles.partial == wide.tiles.partial);
}

TEST_CASE_TEMPLATE("16-bit attention: the 16-bit oracle agrees with the fused op", T, bfloat16, float16) {
  Generator gen(7);
  const auto q = randn<T>({2, 2, 11, 8}, gen), k = randn<T>({2, 2, 11, 8}, gen), v = randn<T>({2, 2, 11, 8}, gen);
  const mask::SlidingWindow policy(4, 0);
  const Tensor<float> fused = attention(q, k, v, policy).template cast<float>();
  const Tensor<float> oracle = attention_reference(q, k, v, policy).template cast<float>();
  // Both are float computations rounded once: at most one 16-bit ulp apart (|out| < 4).
  CHECK(max_abs_diff(fused, oracle) <= 4 * half_epsilon<T>);
}

TEST_CASE("16-bit attention: bad shapes name the op") {
  Generator gen(8);
  const auto q = randn<bfloat16>({1, 2, 4, 8}, gen), k = randn<bfloat16>({1, 2, 4, 6}, gen);
  CHECK_THROWS_WITH_AS(attention(q, k, k, mask::Causal{}), doctest::Contains("[attention] head dims differ"), Error);
}

}  // namespace test_attention_half
