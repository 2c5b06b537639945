// Special tokens end to end: a token added to a ByteTokenizer or WordTokenizer takes the id
// the model gets from grow_vocab; the new embedding (and untied lm_head) rows are the mean
// of the existing rows, the old rows keep their bits, text holding the token encodes to
// the new id, runs through the grown model (tied logits included) and decodes back, and
// the new rows receive gradients. DecoderLM (GPT-2 and LLaMA presets) and EncoderDecoder.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/io/tokenizer.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/encoder_decoder.hpp"
#include "condense/ops/losses.hpp"
#include "condense/ops/reduce.hpp"
#include "test_util.hpp"

namespace test_special_tokens {

using namespace condense;
using Ids = std::vector<std::int64_t>;
using condense::testing::max_abs_diff;

namespace {

/// Largest |row r of `grown` - mean of the first `old_rows` rows of `old`|, the mean taken
/// in double.
template <FloatingElement T>
double distance_to_mean_row(const Tensor<T>& grown, const Tensor<T>& old, std::int64_t r) {
  const auto v = old.contiguous().to_vector();
  const std::int64_t rows = old.size(0), cols = old.size(1);
  double worst = 0.0;
  for (std::int64_t j = 0; j < cols; ++j) {
    double sum = 0.0;
    for (std::int64_t i = 0; i < rows; ++i) sum += static_cast<double>(v[static_cast<std::size_t>(i * cols + j)]);
    worst = std::max(worst, std::abs(static_cast<double>(grown.at({r, j})) - sum / static_cast<double>(rows)));
  }
  return worst;
}

/// True when the first rows of `grown` hold exactly the bits of `old`.
template <FloatingElement T>
bool old_rows_kept(const Tensor<T>& grown, const Tensor<T>& old) {
  const auto a = grown.narrow(0, 0, old.size(0)).contiguous().to_vector();
  const auto b = old.contiguous().to_vector();
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace

TEST_CASE("ByteTokenizer special token + DecoderLM::grow_vocab (GPT-2 style, tied embeddings)") {
  io::ByteTokenizer tok;
  Generator gen(21);
  nn::DecoderLM<float> model(nn::DecoderLMOptions::gpt2_style(tok.vocab_size(), 16, 1, 2, 32), gen);
  const auto old = model.embed_tokens.weight().detach().clone();

  const std::int64_t gist = tok.add_special_token("<gist>");
  CHECK(gist == 260);
  model.grow_vocab(tok.vocab_size() - model.vocab_size());
  CHECK(model.vocab_size() == tok.vocab_size());
  const auto& table = model.embed_tokens.weight();
  CHECK(table.shape() == Shape{261, 16});
  CHECK(old_rows_kept(table, old));
  CHECK(distance_to_mean_row(table, old, gist) < 1e-9);
  CHECK(distance_to_mean_row(table, old, 0) > 1e-3);  // the helper can tell rows apart
  // Adding the same name again gives the same id and grows nothing.
  CHECK(tok.add_special_token("<gist>") == gist);
  model.grow_vocab(tok.vocab_size() - model.vocab_size());
  CHECK(model.vocab_size() == 261);

  // The token in text: recognised only with parse_special, decoded back by name.
  const std::string text = "ab<gist>c";
  const Ids ids = tok.encode(text, {.parse_special = true});
  CHECK(ids == Ids{'a', 'b', gist, 'c'});
  CHECK(tok.encode(text).size() == text.size());  // plain text cannot inject it
  CHECK(tok.decode(ids) == text);
  CHECK(tok.decode(ids, {.skip_special = true}) == "abc");

  // Through the model: its embedding is the mean row; tied logits have a column for it that
  // is the dot product with that row; the grown table is a trainable parameter.
  const auto input = from_vector<std::int64_t>(ids, {1, 4});
  CHECK(max_abs_diff(model.embed(input).select(1, 2).select(0, 0), table.select(0, gist).detach()) == 0.0);
  const auto h = model.hidden_states(input);
  const auto logits = model.forward(input);
  CHECK(logits.shape() == Shape{1, 4, 261});
  const double expected = sum(h.select(1, 3).select(0, 0) * table.select(0, gist)).item();
  CHECK(logits.at({0, 3, gist}) == doctest::Approx(expected).epsilon(1e-5));
  CHECK(model.parameter("embed_tokens.weight").shape() == Shape{261, 16});
  auto loss = cross_entropy(logits.reshape({4, 261}), from_vector<std::int64_t>({'b', gist, 'c', gist}, {4}));
  loss.backward();
  const auto grad = model.embed_tokens.weight().grad();
  REQUIRE(grad.defined());
  CHECK(amax(abs(grad.select(0, gist))).item() > 0.0f);
}

TEST_CASE("WordTokenizer special tokens + DecoderLM::grow_vocab (LLaMA style, untied lm_head)") {
  auto tok = io::WordTokenizer::build({"the cat sat on the mat .", "the dog sat on the log ."});
  Generator gen(22);
  nn::DecoderLM<double> model(nn::DecoderLMOptions::llama_style(tok.vocab_size(), 16, 1, 2, 1, 32), gen);
  const std::int64_t n = tok.vocab_size();
  const auto old_embed = model.embed_tokens.weight().detach().clone();
  const auto old_head = model.lm_head->weight().detach().clone();

  const std::int64_t gist = tok.add_special_token("<gist>");
  const std::int64_t sep = tok.add_special_token("<sep>");
  CHECK(gist == n);
  CHECK(sep == n + 1);
  model.grow_vocab(tok.vocab_size() - model.vocab_size());
  CHECK(model.vocab_size() == n + 2);
  for (const auto* w : {&model.embed_tokens.weight(), &model.lm_head->weight()}) {
    const auto& old = w == &model.embed_tokens.weight() ? old_embed : old_head;
    CHECK(w->shape() == Shape{n + 2, 16});
    CHECK(old_rows_kept(*w, old));
    CHECK(distance_to_mean_row(*w, old, gist) < 1e-14);
    CHECK(distance_to_mean_row(*w, old, sep) < 1e-14);
  }

  const std::string text = "the cat <gist> <gist> sat <sep> on the mat";
  const Ids ids = tok.encode(text, {.add_bos = true, .parse_special = true});
  CHECK(ids == Ids{tok.bos_id(), tok.id_of("the"), tok.id_of("cat"), gist, gist, tok.id_of("sat"), sep,
                   tok.id_of("on"), tok.id_of("the"), tok.id_of("mat")});
  CHECK(tok.decode(ids) == "<bos> " + text);
  CHECK(tok.decode(ids, {.skip_special = true}) == "the cat sat on the mat");
  CHECK(tok.encode(tok.decode(ids), {.parse_special = true}) == ids);

  const auto input = from_vector<std::int64_t>(ids, {1, static_cast<std::int64_t>(ids.size())});
  const auto logits = model.forward(input);
  CHECK(logits.shape() == Shape{1, 10, n + 2});
  // The two new lm_head rows are equal, so the two new tokens get equal logits.
  CHECK(logits.at({0, 5, gist}) == logits.at({0, 5, sep}));
  auto loss = cross_entropy(logits.reshape({10, n + 2}), full<std::int64_t>({10}, sep));
  loss.backward();
  REQUIRE(model.lm_head->weight().grad().defined());
  CHECK(amax(abs(model.lm_head->weight().grad().select(0, sep))).item() > 0.0);
  CHECK(amax(abs(model.embed_tokens.weight().grad().select(0, gist))).item() > 0.0);
}

TEST_CASE("special token + EncoderDecoder::grow_vocab") {
  auto tok = io::WordTokenizer::build({"one two three four"});
  Generator gen(23);
  nn::EncoderDecoder<double> model(nn::EncoderDecoderOptions::t5_style(tok.vocab_size(), 16, 1, 2, 32), gen);
  const auto old = model.embed_tokens.weight().detach().clone();
  const std::int64_t gist = tok.add_special_token("<gist>");
  model.grow_vocab(tok.vocab_size() - model.vocab_size());
  CHECK(model.vocab_size() == gist + 1);
  CHECK(old_rows_kept(model.embed_tokens.weight(), old));
  CHECK(distance_to_mean_row(model.embed_tokens.weight(), old, gist) < 1e-14);

  const Ids src = tok.encode("one <gist> two", {.parse_special = true});
  CHECK(src == Ids{tok.id_of("one"), gist, tok.id_of("two")});
  const Ids tgt = tok.encode("<gist> three", {.add_bos = true, .parse_special = true});
  const auto states = model.encode(from_vector<std::int64_t>(src, {1, 3}));
  const auto logits = model.decode(from_vector<std::int64_t>(tgt, {1, 3}), states);
  CHECK(logits.shape() == Shape{1, 3, gist + 1});
  CHECK(tok.decode(src) == "one <gist> two");
}

}  // namespace test_special_tokens
