// The models on bfloat16 and float16 parameters (CPU): a 16-bit DecoderLM (GPT-2 and Llama
// styles) and EncoderDecoder compute the logits and gradients of the float model with the
// same, rounded weights to within the 16-bit rounding of their activations; a bfloat16
// DecoderLM trains with AdamW<bfloat16> (float master weights); greedy generation with the
// KV cache gives the tokens of full re-computation; training resumes from a checkpoint
// (16-bit parameters, float optimizer state and masters) bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/io/checkpoint.hpp"
#include "condense/mask/basic.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/encoder_decoder.hpp"
#include "condense/nn/generate.hpp"
#include "condense/ops/losses.hpp"
#include "condense/optim/adamw.hpp"
#include "condense/optim/clip.hpp"
#include "io/io_test_util.hpp"
#include "test_util.hpp"

namespace test_half_models {

using namespace condense;
using condense::testing::max_abs;
using condense::testing::max_abs_diff;
using condense::testing::relative_error;

namespace {

/// Writes every parameter of `from` (float), rounded to T, into the storage of the matching
/// parameter of `to` (tied parameters stay tied).
template <HalfElement T>
void copy_rounded(const nn::Module<float>& from, const nn::Module<T>& to) {
  const auto src = from.named_parameters();
  const auto dst = to.named_parameters();
  REQUIRE(src.size() == dst.size());
  for (std::size_t i = 0; i < src.size(); ++i) {
    REQUIRE(src[i].first == dst[i].first);
    const Tensor<T> rounded = src[i].second.detach().template cast<T>();
    std::copy(rounded.data(), rounded.data() + rounded.numel(), dst[i].second.data());
  }
}

/// The float model's parameters rounded to T and widened back, in place (so both models
/// hold the same values).
template <HalfElement T>
void round_in_place(const nn::Module<float>& m) {
  for (const auto& [name, p] : m.named_parameters()) {
    const Tensor<float> r = p.detach().template cast<T>().template cast<float>();
    std::copy(r.data(), r.data() + r.numel(), p.data());
  }
}


/// Logits and the loss gradient of a 16-bit DecoderLM against the float model with the same
/// (rounded) weights: relative error a few 16-bit ulps at most.
template <HalfElement T>
void check_decoder_against_float(const nn::DecoderLMOptions& options) {
  Generator gen(3), gen_half(3);
  nn::DecoderLM<float> wide(options, gen);
  nn::DecoderLM<T> half(options, gen_half);
  round_in_place<T>(wide);
  copy_rounded(wide, half);
  const std::int64_t B = 2, L = 12;
  const auto tokens = randint<std::int64_t>({B, L + 1}, 0, options.vocab_size, gen);
  const auto ids = tokens.narrow(1, 0, L).contiguous();
  const auto targets = tokens.narrow(1, 1, L).contiguous().reshape({B * L});
  const Tensor<T> logits = half.forward(ids, mask::Causal{});
  const Tensor<float> expected = wide.forward(ids, mask::Causal{});
  CHECK(logits.dtype() == dtype_of<T>);
  const double eps = std::is_same_v<T, bfloat16> ? 0x1p-8 : 0x1p-11;  // half an ulp
  CHECK(relative_error(logits.template cast<float>(), expected) < 16 * eps);

  cross_entropy(logits.reshape({B * L, options.vocab_size}), targets).backward();
  cross_entropy(expected.reshape({B * L, options.vocab_size}), targets).backward();
  const auto hp = half.named_parameters();
  const auto wp = wide.named_parameters();
  double largest = 0.0;
  for (const auto& [name, p] : wp) largest = std::max(largest, max_abs(p.grad()));
  for (std::size_t i = 0; i < hp.size(); ++i) {
    CAPTURE(hp[i].first);
    REQUIRE(hp[i].second.grad().defined());
    CHECK(hp[i].second.grad().dtype() == dtype_of<T>);
    // Gradients pass through every layer's rounding: a looser bound, far below a wrong rule.
    // Gradients that vanish in exact arithmetic (the key bias: softmax ignores a constant
    // added to a row's scores) are compared against a floor of 1e-3 of the largest one.
    CHECK(relative_error(hp[i].second.grad().template cast<float>(), wp[i].second.grad(), 1e-3 * largest) < 128 * eps);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("16-bit DecoderLM (GPT-2 style): logits and gradients of the float model", T, bfloat16, float16) {
  check_decoder_against_float<T>(nn::DecoderLMOptions::gpt2_style(40, 32, 2, 4, 16));
}

TEST_CASE_TEMPLATE("16-bit DecoderLM (Llama style: RMSNorm, rotary, SwiGLU, GQA)", T, bfloat16, float16) {
  check_decoder_against_float<T>(nn::DecoderLMOptions::llama_style(40, 32, 2, 4, 2, 16));
}

TEST_CASE("16-bit EncoderDecoder: logits of the float model") {
  const auto options = nn::EncoderDecoderOptions::t5_style(30, 32, 2, 4, 16);
  Generator gen(4), gen_half(4);
  nn::EncoderDecoder<float> wide(options, gen);
  nn::EncoderDecoder<bfloat16> half(options, gen_half);
  round_in_place<bfloat16>(wide);
  copy_rounded(wide, half);
  const auto src = randint<std::int64_t>({2, 9}, 0, 30, gen), tgt = randint<std::int64_t>({2, 7}, 0, 30, gen);
  const Tensor<bfloat16> logits = half.decode(tgt, half.encode(src));
  const Tensor<float> expected = wide.decode(tgt, wide.encode(src));
  CHECK(relative_error(logits.cast<float>(), expected) < 16 * 0x1p-8);
}

TEST_CASE("bfloat16 DecoderLM trains with AdamW<bfloat16>") {
  Generator gen(5);
  nn::DecoderLM<bfloat16> model(nn::DecoderLMOptions::gpt2_style(24, 32, 2, 4, 16), gen);
  optim::AdamW<bfloat16> opt(model.named_parameters(), {.lr = 3e-3, .weight_decay = 0.0});
  const auto tokens = randint<std::int64_t>({4, 13}, 0, 24, gen);
  const auto ids = tokens.narrow(1, 0, 12).contiguous();
  const auto targets = tokens.narrow(1, 1, 12).contiguous().reshape({48});
  double first = 0.0, last = 0.0;
  for (int step = 0; step < 60; ++step) {
    opt.zero_grad();
    const Tensor<bfloat16> loss = cross_entropy(model.forward(ids, mask::Causal{}).reshape({48, 24}), targets);
    loss.backward();
    optim::clip_grad_norm(model.named_parameters(), 1.0);
    opt.step();
    (step == 0 ? first : last) = static_cast<double>(static_cast<float>(loss.item()));
  }
  // One fixed batch: memorised (ln 24 = 3.18 at the start).
  CHECK(first > 2.5);
  CHECK(last < 0.5 * first);
}

TEST_CASE("bfloat16 DecoderLM: cached greedy generation gives the tokens of full re-computation") {
  Generator gen(6);
  nn::DecoderLM<bfloat16> model(nn::DecoderLMOptions::llama_style(32, 32, 2, 4, 2, 32), gen);
  const std::vector<std::vector<std::int64_t>> prompts = {{3, 7, 1, 9}, {4, 4}};
  nn::GenerateOptions options;
  options.max_new_tokens = 6;
  const auto cached = nn::generate(model, prompts, options, gen);
  REQUIRE(cached.size() == 2);
  NoGradGuard no_grad;
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    std::vector<std::int64_t> seq = prompts[b];
    for (std::size_t i = 0; i < cached[b].size(); ++i) {
      const auto n = static_cast<std::int64_t>(seq.size());
      const Tensor<float> logits = model.forward(from_vector<std::int64_t>(seq, {1, n}), mask::Causal{})
                                       .narrow(1, n - 1, 1)
                                       .reshape({32})
                                       .cast<float>();
      const auto v = logits.to_vector();
      const auto best = static_cast<std::int64_t>(std::max_element(v.begin(), v.end()) - v.begin());
      CAPTURE(b);
      CAPTURE(i);
      CHECK(cached[b][i] == best);
      seq.push_back(cached[b][i]);
    }
  }
}

TEST_CASE("bfloat16 DecoderLM: training resumes from a checkpoint bit for bit") {
  const auto options = nn::DecoderLMOptions::gpt2_style(24, 32, 1, 4, 16);
  const optim::AdamWOptions adamw{.lr = 1e-2, .weight_decay = 0.1};
  Generator gen(7), other(8);
  const auto tokens = randint<std::int64_t>({2, 9}, 0, 24, gen);
  const auto ids = tokens.narrow(1, 0, 8).contiguous();
  const auto targets = tokens.narrow(1, 1, 8).contiguous().reshape({16});
  const auto train = [&](const nn::DecoderLM<bfloat16>& model, optim::AdamW<bfloat16>& opt, int steps) {
    for (int i = 0; i < steps; ++i) {
      opt.zero_grad();
      cross_entropy(model.forward(ids, mask::Causal{}).reshape({16, 24}), targets).backward();
      opt.step();
    }
  };
  nn::DecoderLM<bfloat16> a(options, gen);
  optim::AdamW<bfloat16> opt_a(a.named_parameters(), adamw);
  train(a, opt_a, 2);
  const std::string path = condense::testing::temp_path("half_resume.safetensors");
  io::save_training_checkpoint(path, a, opt_a);
  train(a, opt_a, 2);

  nn::DecoderLM<bfloat16> b(options, other);  // other weights: the checkpoint replaces them
  optim::AdamW<bfloat16> opt_b(b.named_parameters(), adamw);
  CHECK(io::load_training_checkpoint(path, b, opt_b) == 2);
  train(b, opt_b, 2);
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CAPTURE(pa[i].first);
    CHECK(max_abs_diff(pa[i].second.cast<float>(), pb[i].second.cast<float>()) == 0.0);
  }
  std::remove(path.c_str());
}

}  // namespace test_half_models
