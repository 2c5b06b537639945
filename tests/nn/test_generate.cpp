// Generation: batched greedy decoding of prompts of different lengths equals decoding each
// prompt alone (GPT-2 and LLaMA presets, and encoder-decoder sources); greedy equals a
// plain argmax loop over full forwards; top-k = 1 and tiny top-p equal greedy; the same
// seed gives the same samples; stop tokens stop their rows; sample_next's distribution
// respects temperature, top-k and top-p; option errors.
#include <doctest/doctest.h>

#include <vector>

#include "condense/core/factories.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/encoder_decoder.hpp"
#include "condense/nn/generate.hpp"
#include "test_util.hpp"

namespace test_generate {

using namespace condense;
using namespace condense::nn;
using Rows = std::vector<std::vector<std::int64_t>>;

namespace {

const Rows kPrompts = {{5, 1, 7}, {2, 9, 4, 4, 11, 3, 8}, {6}, {13, 2, 2, 5, 1}};

/// Greedy continuation of one prompt by repeated full forwards (no cache).
std::vector<std::int64_t> greedy_reference(const DecoderLM<double>& m, std::vector<std::int64_t> seq, int n) {
  std::vector<std::int64_t> out;
  for (int i = 0; i < n; ++i) {
    const auto ids = from_vector<std::int64_t>(seq, {1, static_cast<std::int64_t>(seq.size())});
    const auto logits = m.forward(ids).select(1, static_cast<std::int64_t>(seq.size()) - 1);
    const std::int64_t next = argmax(logits, -1).to_vector()[0];
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

/// `row` cut after the first token in `stops` (kept).
std::vector<std::int64_t> cut_at(const std::vector<std::int64_t>& row, const std::vector<std::int64_t>& stops) {
  std::vector<std::int64_t> out;
  for (auto t : row) {
    out.push_back(t);
    if (std::find(stops.begin(), stops.end(), t) != stops.end()) break;
  }
  return out;
}

}  // namespace

TEST_CASE("batched greedy generation with different prompt lengths equals each prompt alone") {
  Generator gen(1);
  NoGradGuard ng;
  for (const auto& opt :
       {DecoderLMOptions::gpt2_style(17, 16, 2, 2, 32), DecoderLMOptions::llama_style(17, 16, 2, 4, 2, 32)}) {
    DecoderLM<double> m(opt, gen);
    GenerateOptions o;
    o.max_new_tokens = 6;
    Generator g(0);
    const Rows batched = generate(m, kPrompts, o, g);
    REQUIRE(batched.size() == kPrompts.size());
    for (std::size_t b = 0; b < kPrompts.size(); ++b) {
      CHECK(batched[b].size() == 6);
      CHECK(generate(m, Rows{kPrompts[b]}, o, g)[0] == batched[b]);
      CHECK(greedy_reference(m, kPrompts[b], 6) == batched[b]);
    }
    // top_k = 1 sampling and a tiny top_p are greedy.
    GenerateOptions k1 = o;
    k1.do_sample = true;
    k1.top_k = 1;
    k1.temperature = 0.7;
    CHECK(generate(m, kPrompts, k1, g) == batched);
    GenerateOptions p0 = o;
    p0.do_sample = true;
    p0.top_p = 1e-9;
    CHECK(generate(m, kPrompts, p0, g) == batched);
    // Stop tokens: every row is cut after its first stop token; the others are unaffected.
    GenerateOptions s = o;
    s.stop_tokens = {batched[0][1], batched[1][3]};
    const Rows stopped = generate(m, kPrompts, s, g);
    for (std::size_t b = 0; b < kPrompts.size(); ++b) CHECK(stopped[b] == cut_at(batched[b], s.stop_tokens));
    CHECK(stopped[0].size() <= 2);
    s.include_stop_token = false;
    const Rows dropped = generate(m, kPrompts, s, g);
    for (std::size_t b = 0; b < kPrompts.size(); ++b) {
      auto expect = cut_at(batched[b], s.stop_tokens);  // ends with a stop token when the row stopped
      if (std::find(s.stop_tokens.begin(), s.stop_tokens.end(), expect.back()) != s.stop_tokens.end()) expect.pop_back();
      CHECK(dropped[b] == expect);
    }
  }
}

TEST_CASE("sampling is reproducible per seed") {
  Generator gen(2);
  NoGradGuard ng;
  DecoderLM<double> m(DecoderLMOptions::llama_style(17, 16, 1, 2, 1, 32), gen);
  // Flatten the model's output distribution so that samples vary.
  for (auto& [name, p] : m.named_parameters())
    if (name == "lm_head.weight") init::normal_(p, 0.0, 0.05, gen);
  GenerateOptions o;
  o.max_new_tokens = 8;
  o.do_sample = true;
  o.temperature = 1.5;
  o.top_k = 10;
  o.top_p = 0.95;
  Generator a(42), b(42), c(43);
  const Rows ra = generate(m, kPrompts, o, a), rb = generate(m, kPrompts, o, b), rc = generate(m, kPrompts, o, c);
  CHECK(ra == rb);
  CHECK(ra != rc);
  CHECK(ra != generate(m, kPrompts, o, a));  // the generator advanced
}

TEST_CASE("sample_next: greedy ties, temperature, top-k and top-p") {
  const auto logits = from_vector<double>({0.0, std::log(3.0), -50.0, 2.0, 2.0, 1.0}, {2, 3});
  GenerateOptions o;
  Generator gen(3);
  CHECK(sample_next(logits, o, gen) == std::vector<std::int64_t>{1, 0});  // first index on ties
  o.do_sample = true;
  int ones = 0, twos = 0, row1_third = 0;
  for (int i = 0; i < 4000; ++i) {
    const auto s = sample_next(logits, o, gen);
    ones += s[0] == 1;
    twos += s[0] == 2;
    row1_third += s[1] == 2;
  }
  CHECK(ones / 4000.0 == doctest::Approx(0.75).epsilon(0.05));
  CHECK(twos == 0);
  CHECK(row1_third > 0);
  o.top_k = 2;  // row 1 keeps tokens 0 and 1 only
  row1_third = 0;
  for (int i = 0; i < 500; ++i) row1_third += sample_next(logits, o, gen)[1] == 2;
  CHECK(row1_third == 0);
  o.top_k = 0;
  o.top_p = 0.7;  // probabilities [0.42, 0.42, 0.16]: the two tied tokens cover 0.84
  row1_third = 0;
  for (int i = 0; i < 500; ++i) row1_third += sample_next(logits, o, gen)[1] == 2;
  CHECK(row1_third == 0);
  o.top_p = 1.0;
  o.temperature = 1e-3;  // near-greedy
  for (int i = 0; i < 50; ++i) CHECK(sample_next(logits, o, gen)[0] == 1);
}

TEST_CASE("encoder-decoder generation: batched sources of different lengths equal each alone") {
  Generator gen(4);
  NoGradGuard ng;
  auto opt = EncoderDecoderOptions::t5_style(17, 16, 2, 4, 32);
  opt.n_kv_heads = 2;
  EncoderDecoder<double> m(opt, gen);
  GenerateOptions o;
  o.max_new_tokens = 5;
  Generator g(0);
  const Rows batched = generate_seq2seq(m, kPrompts, 0, o, g);
  for (std::size_t b = 0; b < kPrompts.size(); ++b) {
    CHECK(batched[b].size() == 5);
    CHECK(generate_seq2seq(m, Rows{kPrompts[b]}, 0, o, g)[0] == batched[b]);
  }
  // Reference for one row: repeated full decodes.
  const auto src = from_vector<std::int64_t>(kPrompts[1], {1, 7});
  const auto states = m.encode(src);
  std::vector<std::int64_t> seq = {0};
  for (int i = 0; i < 5; ++i) {
    const auto logits = m.decode(from_vector<std::int64_t>(seq, {1, static_cast<std::int64_t>(seq.size())}), states);
    seq.push_back(argmax(logits.select(1, static_cast<std::int64_t>(seq.size()) - 1), -1).to_vector()[0]);
  }
  CHECK(std::vector<std::int64_t>(seq.begin() + 1, seq.end()) == batched[1]);
}

TEST_CASE("generation errors") {
  Generator gen(5);
  DecoderLM<double> m(DecoderLMOptions::gpt2_style(10, 8, 1, 2, 8), gen);
  GenerateOptions o;
  CHECK_THROWS_WITH_AS(generate(m, Rows{{1}, {}}, o, gen), "[generate] prompt 1 is empty", Error);
  CHECK_THROWS_WITH_AS(generate(m, Rows{{1, 10}}, o, gen), "[generate] token 10 of prompt 0 out of range [0, 10)", Error);
  o.do_sample = true;
  o.temperature = 0.0;
  CHECK_THROWS_WITH_AS(generate(m, Rows{{1}}, o, gen), "[generate] temperature must be positive when sampling, got 0", Error);
  o.temperature = 1.0;
  o.top_p = 0.0;
  CHECK_THROWS_WITH_AS(generate(m, Rows{{1}}, o, gen), "[generate] top_p must be in (0, 1], got 0", Error);
  o = GenerateOptions();
  o.max_new_tokens = 0;
  CHECK(generate(m, Rows{{1}, {2}}, o, gen) == Rows{{}, {}});
  // Past the learned position table.
  o.max_new_tokens = 20;
  CHECK_THROWS_WITH_AS(generate(m, Rows{{1}}, o, gen), "[LearnedPositions] position 8 out of range [0, 8)", Error);
}

}  // namespace test_generate
