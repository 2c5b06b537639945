// nn attention modules: MultiHeadAttention against a plain composition (grouped-query
// heads, rope), gradchecks of self-attention (GQA, rope, per-row positions) and
// cross-attention (KeyPadding) and of DecoderBlocks (GPT-2 and LLaMA kinds) with respect
// to their inputs and parameters; CrossDecoderBlock names and shapes.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/mask/policies.hpp"
#include "condense/nn/blocks.hpp"
#include "nn_test_util.hpp"
#include "test_util.hpp"

namespace test_attention_modules {

using namespace condense;
using namespace condense::nn;
using condense::testing::GradInputs;
using condense::testing::max_abs_diff;
using condense::testing::bind_params;
using condense::testing::names_of;
using condense::testing::with_params;

TEST_CASE("MultiHeadAttention: value against a plain composition, GQA, rope") {
  Generator gen(5);
  MultiHeadAttentionOptions o{.d_model = 8, .n_heads = 4, .n_kv_heads = 2, .bias = true, .out_bias = true, .rope = true};
  MultiHeadAttention<double> mha(o, gen);
  CHECK(names_of(mha) == std::vector<std::string>{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                                                  "v_proj.weight", "v_proj.bias", "o_proj.weight", "o_proj.bias"});
  CHECK(mha.k_proj->weight().shape() == Shape{4, 8});
  const auto x = randn<double>({2, 5, 8}, gen);
  const auto pos = from_vector<std::int64_t>({3, 4, 5, 6, 7}, {5});
  SelfAttentionArgs<double> args;
  args.positions = pos;
  const auto got = mha.forward(x, mask::Causal{}, args);
  // Reference: split heads, rope, repeat kv heads, attention_reference, merge, o_proj.
  const auto split = [&](const Tensor<double>& t, std::int64_t h) { return t.reshape({2, 5, h, 2}).transpose(1, 2); };
  const auto q = rope(split(mha.q_proj->forward(x), 4), pos);
  const auto k = rope(split(mha.k_proj->forward(x), 2), pos);
  const auto v = split(mha.v_proj->forward(x), 2);
  const auto att = attention_reference(q, k, v, mask::Causal{});
  const auto expect = mha.o_proj->forward(att.transpose(1, 2).reshape({2, 5, 8}));
  CHECK(max_abs_diff(got, expect) < 1e-13);
  // Default positions are arange(T).
  SelfAttentionArgs<double> shifted;
  shifted.positions = from_vector<std::int64_t>({0, 1, 2, 3, 4}, {5});
  CHECK(max_abs_diff(mha.forward(x, mask::Causal{}), mha.forward(x, mask::Causal{}, shifted)) == 0.0);
}

TEST_CASE("gradcheck: MultiHeadAttention self (GQA, rope, causal) and cross (KeyPadding)") {
  Generator gen(6);
  MultiHeadAttention<double> self({.d_model = 8, .n_heads = 2, .n_kv_heads = 1, .rope = true}, gen);
  const auto pos2 = from_vector<std::int64_t>({0, 1, 2, 0, 0, 1}, {2, 3});
  SelfAttentionArgs<double> args;
  args.positions = pos2;
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(self, in, 1); return self.forward(in[0], mask::Causal{}, args); },
                  with_params(self, {randn<double>({2, 3, 8}, gen)}));
  // (No k_proj bias here: its true gradient is zero, softmax ignores a shift shared by all keys.)
  MultiHeadAttention<double> cross({.d_model = 4, .n_heads = 2, .n_kv_heads = 2, .kv_input_dim = 3, .out_bias = true}, gen);
  const std::vector<std::int32_t> lengths = {4, 2};
  const mask::KeyPadding pad(lengths.data(), 2);
  const auto mem = randn<double>({2, 4, 3}, gen);
  CHECK_GRADCHECK(
      [&](const GradInputs& in) { bind_params(cross, in, 2); return cross.forward_cross(in[0], in[1], pad); },
      with_params(cross, {randn<double>({2, 3, 4}, gen), mem}));
  // Padded memory rows do not matter.
  auto mem2 = mem.clone();
  mem2.data()[(1 * 4 + 3) * 3] = 100.0;
  const auto xq = randn<double>({2, 3, 4}, gen);
  CHECK(max_abs_diff(cross.forward_cross(xq, mem, pad), cross.forward_cross(xq, mem2, pad)) == 0.0);
}

TEST_CASE("gradcheck: DecoderBlock (LayerNorm + GELU) and a SwiGLU/RMSNorm/rope block") {
  Generator gen(7);
  BlockOptions b;
  b.attn = {.d_model = 4, .n_heads = 2, .out_bias = true};  // no k bias: its true gradient is zero
  b.mlp = {.d_model = 4, .hidden = 8, .kind = MlpKind::Gelu, .bias = true};
  DecoderBlock<double> block(b, gen);
  const auto names = names_of(block);
  CHECK(names.front() == "attn_norm.weight");
  CHECK(names[2] == "attn.q_proj.weight");
  CHECK(names[3] == "attn.k_proj.weight");
  CHECK(names.back() == "mlp.down_proj.bias");
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(block, in, 1); return block.forward(in[0], mask::Causal{}); },
                  with_params(block, {randn<double>({2, 3, 4}, gen)}));
  BlockOptions l;
  l.attn = {.d_model = 4, .n_heads = 2, .n_kv_heads = 1, .rope = true};
  l.mlp = {.d_model = 4, .hidden = 6, .kind = MlpKind::SwiGLU, .bias = false};
  l.norm = NormKind::RMSNorm;
  DecoderBlock<double> lblock(l, gen);
  CHECK_GRADCHECK([&](const GradInputs& in) { bind_params(lblock, in, 1); return lblock.forward(in[0], mask::Causal{}); },
                  with_params(lblock, {randn<double>({1, 4, 4}, gen)}));
  // CrossDecoderBlock names.
  CrossDecoderBlock<double> cb(b, gen);
  const auto cn = names_of(cb);
  CHECK(std::find(cn.begin(), cn.end(), "cross_attn.k_proj.weight") != cn.end());
  CHECK(std::find(cn.begin(), cn.end(), "cross_norm.bias") != cn.end());
  CHECK(cb.forward(randn<double>({2, 3, 4}, gen), randn<double>({2, 5, 4}, gen), mask::Causal{}, mask::None{}).shape() ==
        Shape{2, 3, 4});
}


TEST_CASE("attention module errors name the op") {
  Generator gen(9);
  CHECK_THROWS_WITH_AS(MultiHeadAttention<double>({.d_model = 8, .n_heads = 4, .n_kv_heads = 3}, gen),
                       "[MultiHeadAttention] n_kv_heads (3) must divide n_heads (4)", Error);
  CHECK_THROWS_WITH_AS(MultiHeadAttention<double>({.d_model = 10, .n_heads = 4}, gen),
                       "[MultiHeadAttention] n_heads (4) must divide d_model (10) unless head_dim is given", Error);
  CHECK_THROWS_WITH_AS(MultiHeadAttention<double>({.d_model = 6, .n_heads = 2, .rope = true}, gen),
                       "[MultiHeadAttention] rotary positions need an even head_dim, got 3", Error);
  MultiHeadAttention<double> mha({.d_model = 8, .n_heads = 2}, gen);
  CHECK_THROWS_WITH_AS(mha.forward(randn<double>({2, 3, 6}, gen), mask::Causal{}),
                       "[MultiHeadAttention] x must be [B, T, 8], got (2x3x6)", Error);
  CHECK_THROWS_WITH_AS(mha.forward_cross(randn<double>({2, 3, 8}, gen), randn<double>({1, 3, 8}, gen), mask::None{}),
                       "[MultiHeadAttention] memory (1x3x8) and x (2x3x8) differ in batch size", Error);
}

}  // namespace test_attention_modules
