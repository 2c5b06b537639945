// DecoderLM and EncoderDecoder: parameter names and counts of the presets, tied embeddings,
// ids vs input embeddings, explicit positions, other mask policies, grow_vocab, errors, and
// a tiny overfit run (one-layer DecoderLM, plain SGD written here) on a fixed sequence.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/mask/policies.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/encoder_decoder.hpp"
#include "condense/ops/losses.hpp"
#include "condense/ops/unary.hpp"
#include "nn_test_util.hpp"
#include "test_util.hpp"

namespace test_models {

using namespace condense;
using namespace condense::nn;
using condense::testing::max_abs_diff;
using condense::testing::names_of;

namespace {

bool has(const std::vector<std::string>& names, const std::string& n) {
  return std::find(names.begin(), names.end(), n) != names.end();
}

}  // namespace

TEST_CASE("DecoderLM presets: names, counts, tied embeddings") {
  Generator gen(1);
  DecoderLM<double> gpt(DecoderLMOptions::gpt2_style(50, 16, 2, 4, 32), gen);
  const auto names = names_of(gpt);
  CHECK(names.front() == "embed_tokens.weight");
  CHECK(names[1] == "embed_positions.weight");
  CHECK(names[2] == "layers.0.attn_norm.weight");
  CHECK(has(names, "layers.1.attn.q_proj.weight"));
  CHECK(has(names, "layers.1.attn.o_proj.bias"));
  CHECK(has(names, "layers.0.mlp.up_proj.weight"));
  CHECK(has(names, "layers.0.mlp_norm.bias"));
  CHECK(!has(names, "layers.0.mlp.gate_proj.weight"));
  CHECK(names.back() == "norm.bias");
  CHECK(!has(names, "lm_head.weight"));
  // 800 embed + 512 positions + 2 * 3280 per layer + 32 final norm.
  CHECK(gpt.num_parameters() == 7904);
  CHECK(gpt.embed_positions->weight().shape() == Shape{32, 16});
  CHECK(gpt.layers[1]->mlp.up_proj->weight().shape() == Shape{64, 16});
  // Tied: logits use the embedding table itself (same storage, gradients from both uses).
  NoGradGuard ng;
  const auto h = randn<double>({1, 2, 16}, gen);
  CHECK(max_abs_diff(gpt.logits(h), matmul(h, gpt.embed_tokens.weight().transpose(0, 1))) < 1e-12);
  gpt.embed_tokens.weight().data()[0] += 1.0;
  CHECK(gpt.logits(h).at({0, 0, 0}) == doctest::Approx(sum(h.select(1, 0).select(0, 0) * gpt.embed_tokens.weight().select(0, 0)).item()));

  DecoderLM<double> llama(DecoderLMOptions::llama_style(50, 16, 2, 4, 2, 32), gen);
  const auto ln = names_of(llama);
  CHECK(ln.front() == "embed_tokens.weight");
  CHECK(ln[1] == "layers.0.attn_norm.weight");
  CHECK(has(ln, "layers.0.mlp.gate_proj.weight"));
  CHECK(!has(ln, "layers.0.attn.q_proj.bias"));
  CHECK(!has(ln, "embed_positions.weight"));
  CHECK(ln[ln.size() - 2] == "norm.weight");
  CHECK(ln.back() == "lm_head.weight");
  CHECK(llama.options().d_ff == 64);
  CHECK(llama.layers[0]->attn.k_proj->weight().shape() == Shape{8, 16});
  CHECK(llama.num_parameters() == 9360);
  // Init: projections N(0, 0.02^2), norms ones, biases zeros; GPT-2 residual projections scaled.
  CHECK(sum(llama.layers[0]->attn_norm.weight()).item() == 16.0);
  CHECK(amax(abs(gpt.layers[0]->attn.q_proj->bias())).item() == 0.0);
  const auto std_of = [](const Tensor<double>& t) { return std::sqrt(mean(t * t).item()); };
  CHECK(std_of(llama.layers[0]->mlp.up_proj->weight()) == doctest::Approx(0.02).epsilon(0.15));
  CHECK(std_of(gpt.layers[0]->mlp.down_proj->weight()) == doctest::Approx(0.01).epsilon(0.15));
}

TEST_CASE("DecoderLM forward: ids vs embeddings, positions, other masks") {
  Generator gen(2);
  for (const auto& opt : {DecoderLMOptions::gpt2_style(20, 8, 2, 2, 16), DecoderLMOptions::llama_style(20, 8, 2, 2, 1, 16)}) {
    DecoderLM<double> m(opt, gen);
    const auto ids = randint<std::int64_t>({2, 5}, 0, 20, gen);
    const auto logits = m.forward(ids);
    CHECK(logits.shape() == Shape{2, 5, 20});
    CHECK(max_abs_diff(m.forward(m.embed(ids)), logits) == 0.0);
    // Explicit default positions change nothing; shifted ones change the logits.
    ForwardOptions<double> p;
    p.positions = from_vector<std::int64_t>({0, 1, 2, 3, 4}, {5});
    CHECK(max_abs_diff(m.forward(ids, mask::Causal{}, p), logits) == 0.0);
    p.positions = from_vector<std::int64_t>({3, 4, 5, 6, 7, 0, 1, 2, 3, 4}, {2, 5});
    const auto shifted = m.forward(ids, mask::Causal{}, p);
    CHECK(max_abs_diff(shifted.select(0, 1), logits.select(0, 1)) == 0.0);
    if (opt.positions == PositionKind::Learned) {
      CHECK(max_abs_diff(shifted.select(0, 0), logits.select(0, 0)) > 1e-6);
    } else {  // rope sees only relative positions: a uniform shift changes nothing
      CHECK(max_abs_diff(shifted.select(0, 0), logits.select(0, 0)) < 1e-12);
      p.positions = from_vector<std::int64_t>({0, 2, 4, 6, 8}, {5});
      CHECK(max_abs_diff(m.forward(ids, mask::Causal{}, p), logits) > 1e-6);
    }
    // Causality: changing the last token changes only the last position.
    auto ids2 = ids.clone();
    ids2.data()[4] = (ids2.data()[4] + 1) % 20;
    const auto l2 = m.forward(ids2);
    CHECK(max_abs_diff(l2.narrow(1, 0, 4), logits.narrow(1, 0, 4)) == 0.0);
    // Another policy: a bidirectional (None) forward sees the future.
    const auto bidir = m.forward(ids2, mask::None{});
    CHECK(max_abs_diff(bidir.narrow(1, 0, 4), logits.narrow(1, 0, 4)) > 1e-6);
    // Gist as the model's mask type.
    DecoderLM<double, mask::Gist> g(opt, gen);
    CHECK(g.forward(ids, mask::Gist(1, 2)).shape() == Shape{2, 5, 20});
  }
}

TEST_CASE("grow_vocab adds mean rows to the embedding and an untied lm_head") {
  Generator gen(3);
  DecoderLM<double> m(DecoderLMOptions::llama_style(10, 8, 1, 2, 2, 16), gen);
  const auto head = m.lm_head->weight().detach().clone();
  m.grow_vocab(2);
  CHECK(m.vocab_size() == 12);
  CHECK(m.parameter("embed_tokens.weight").shape() == Shape{12, 8});
  CHECK(m.parameter("lm_head.weight").shape() == Shape{12, 8});
  CHECK(max_abs_diff(m.lm_head->weight().select(0, 11), mean(head, {0})) < 1e-15);
  CHECK(m.forward(from_vector<std::int64_t>({11, 10}, {1, 2})).shape() == Shape{1, 2, 12});
}

TEST_CASE("model errors name the model") {
  Generator gen(4);
  CHECK_THROWS_WITH_AS(DecoderLM<double>(DecoderLMOptions::llama_style(10, 8, 1, 4, 3, 16), gen),
                       "[MultiHeadAttention] n_kv_heads (3) must divide n_heads (4)", Error);
  CHECK_THROWS_WITH_AS(DecoderLM<double>(DecoderLMOptions::gpt2_style(10, 8, 1, 2, 0), gen),
                       "[DecoderLM] learned positions need max_len > 0, got 0", Error);
  CHECK_THROWS_WITH_AS(DecoderLM<double>(DecoderLMOptions::gpt2_style(0, 8, 1, 2, 4), gen),
                       doctest::Contains("[DecoderLM] vocab_size, d_model and n_heads must be positive"), Error);
  DecoderLM<double> m(DecoderLMOptions::gpt2_style(10, 8, 1, 2, 4), gen);
  CHECK_THROWS_WITH_AS(m.forward(zeros<std::int64_t>({5})), "[DecoderLM] token ids must be [B, T] int64, got int64 (5) cpu",
                       Error);
  CHECK_THROWS_WITH_AS(m.forward(full<std::int64_t>({1, 2}, 10)), doctest::Contains("[embedding] id 10 out of range"), Error);
  CHECK_THROWS_WITH_AS(m.forward(zeros<std::int64_t>({1, 5})), "[LearnedPositions] position 4 out of range [0, 4)", Error);
  CHECK_THROWS_WITH_AS(m.forward(randn<double>({1, 2, 7}, gen)),
                       "[DecoderLM] input embeddings must be [B, T, 8], got float64 (1x2x7) cpu", Error);
  ForwardOptions<double> p;
  p.positions = zeros<std::int64_t>({3});
  CHECK_THROWS_WITH_AS(m.forward(zeros<std::int64_t>({1, 2}), mask::Causal{}, p),
                       "[DecoderLM] positions must be [T] = [2] or [B, T] = [1, 2], got (3)", Error);
  KVCache<double> wrong(3);
  p.positions = Tensor<std::int64_t>();
  p.cache = &wrong;
  CHECK_THROWS_WITH_AS(m.forward(zeros<std::int64_t>({1, 2}), mask::Causal{}, p),
                       "[DecoderLM] the cache has 3 layers but the model has 1", Error);
}

TEST_CASE("EncoderDecoder: names, shapes, embeddings, masks") {
  Generator gen(5);
  auto o = EncoderDecoderOptions::t5_style(30, 8, 2, 2, 16);
  o.n_decoder_layers = 1;
  EncoderDecoder<double> m(o, gen);
  const auto names = names_of(m);
  CHECK(names.front() == "embed_tokens.weight");
  CHECK(names[1] == "encoder.layers.0.attn_norm.weight");
  CHECK(has(names, "encoder.layers.1.attn.v_proj.weight"));
  CHECK(has(names, "encoder.norm.weight"));
  CHECK(has(names, "decoder.layers.0.cross_attn.q_proj.weight"));
  CHECK(has(names, "decoder.layers.0.cross_norm.weight"));
  CHECK(names.back() == "decoder.norm.weight");
  CHECK(!has(names, "decoder.layers.1.attn.q_proj.weight"));
  const auto src = randint<std::int64_t>({2, 6}, 0, 30, gen);
  const auto tgt = randint<std::int64_t>({2, 4}, 0, 30, gen);
  const auto states = m.encode(src);
  CHECK(states.shape() == Shape{2, 6, 8});
  CHECK(max_abs_diff(m.encode(m.embed(src)), states) == 0.0);
  const auto logits = m.decode(tgt, states);
  CHECK(logits.shape() == Shape{2, 4, 30});
  CHECK(max_abs_diff(m.decode(m.embed(tgt), states), logits) == 0.0);
  // Encoder key padding: the padded source tail does not matter.
  const std::vector<std::int32_t> len = {6, 3};
  const mask::KeyPadding pad(len.data(), 2);
  auto src2 = src.clone();
  src2.data()[6 + 4] = (src2.data()[6 + 4] + 1) % 30;
  const auto s1 = m.encode(src, pad), s2 = m.encode(src2, pad);
  CHECK(max_abs_diff(m.decode(tgt, s1, pad).select(0, 1), m.decode(tgt, s2, pad).select(0, 1)) < 1e-12);
  // Learned positions variant with untied head.
  auto ol = o;
  ol.positions = PositionKind::Learned;
  ol.tie_embeddings = false;
  EncoderDecoder<double, mask::None, mask::None> ml(ol, gen);
  const auto nl = names_of(ml);
  CHECK(has(nl, "encoder.embed_positions.weight"));
  CHECK(has(nl, "decoder.embed_positions.weight"));
  CHECK(nl.back() == "lm_head.weight");
  CHECK(ml.decode(tgt, ml.encode(src)).shape() == Shape{2, 4, 30});
  CHECK_THROWS_WITH_AS(m.decode(tgt, Tensor<double>()),
                       "[EncoderDecoder] decoding needs encoder states (or a cache that already holds the cross-attention "
                       "keys/values)",
                       Error);
}

TEST_CASE("a one-layer DecoderLM overfits a fixed sequence with plain SGD") {
  Generator gen(6);
  DecoderLM<double> m(DecoderLMOptions::gpt2_style(16, 16, 1, 2, 8), gen);
  const auto ids = from_vector<std::int64_t>({3, 1, 4, 1, 5, 9, 2, 6}, {1, 8});
  const auto inputs = ids.narrow(1, 0, 7), targets = ids.narrow(1, 1, 7);
  const auto params = m.parameters();
  double first = 0.0, last = 0.0;
  for (int step = 0; step < 60; ++step) {
    m.zero_grad();
    const auto loss = cross_entropy(m.forward(inputs), targets);
    loss.backward();
    if (step == 0) first = loss.item();
    last = loss.item();
    for (const auto& p : params) {  // SGD: p -= lr * grad, in place
      const auto g = p.grad();
      REQUIRE(g.defined());
      for (std::int64_t i = 0; i < p.numel(); ++i) p.data()[i] -= 0.5 * g.data()[i];
    }
  }
  INFO("first loss ", first, ", last loss ", last);
  CHECK(last * 5.0 < first);
  // The learned sequence is predicted greedily.
  NoGradGuard ng;
  const auto pred = argmax(m.forward(inputs), -1);
  CHECK(pred.to_vector() == targets.contiguous().to_vector());
}

}  // namespace test_models
