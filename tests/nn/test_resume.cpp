// Resuming training from a checkpoint is bit-exact for a real model: a tiny LLaMA-style
// DecoderLM trained with AdamW, a warmup-cosine schedule and gradient clipping on batches
// drawn from a seeded Generator. 2N steps straight give the same bits as N steps, a
// checkpoint, a fresh model/optimizer/generator (other seeds) restored from it and N more
// steps. Leaving out the generator state or the optimizer state breaks the equality (so the
// comparison can fail), and load_training_checkpoint's errors change nothing.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/io/checkpoint.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/ops/losses.hpp"
#include "condense/optim/adamw.hpp"
#include "condense/optim/clip.hpp"
#include "condense/optim/schedule.hpp"
#include "condense/optim/sgd.hpp"
#include "io/io_test_util.hpp"

namespace test_resume {

using namespace condense;
using condense::io::NamedTensors;
using condense::testing::temp_path;

namespace {

constexpr std::int64_t vocab = 40, seq = 12, batch = 4;
constexpr std::int64_t half_steps = 4, total_steps = 2 * half_steps;  // N = 4
constexpr double base_lr = 3e-3, min_lr = 3e-4, max_norm = 0.5;
constexpr std::int64_t warmup_steps = 2;

nn::DecoderLMOptions model_options(std::int64_t d_model = 32) {
  return nn::DecoderLMOptions::llama_style(vocab, d_model, 2, 4, 2, seq);
}

/// A fixed token stream with some structure (each token mostly follows from the previous).
const std::vector<std::int64_t>& corpus() {
  static const std::vector<std::int64_t> tokens = [] {
    Generator g(5);
    std::vector<std::int64_t> out{0};
    for (int i = 1; i < 400; ++i)
      out.push_back(g.below(4) == 0 ? static_cast<std::int64_t>(g.below(vocab)) : (out.back() * 7 + 3) % vocab);
    return out;
  }();
  return tokens;
}

/// One training run: model (initialised from `init_seed`), optimizer, and the generator that
/// draws the batches.
struct Run {
  Generator init;
  nn::DecoderLM<float> model;
  optim::AdamW<float> opt;
  Generator data;
  Run(std::uint64_t init_seed, std::uint64_t data_seed, std::int64_t d_model = 32)
      : init(init_seed),
        model(model_options(d_model), init),
        opt(model.named_parameters(), {.lr = base_lr, .weight_decay = 0.1}),
        data(data_seed) {}

  /// One optimizer step on a batch of random windows of the corpus; returns the gradient
  /// norm before clipping.
  double step() {
    const auto& text = corpus();
    std::vector<std::int64_t> in, target;
    for (std::int64_t b = 0; b < batch; ++b) {
      const auto at = static_cast<std::size_t>(data.below(text.size() - seq - 1));
      in.insert(in.end(), text.begin() + static_cast<std::ptrdiff_t>(at),
                text.begin() + static_cast<std::ptrdiff_t>(at + seq));
      target.insert(target.end(), text.begin() + static_cast<std::ptrdiff_t>(at + 1),
                    text.begin() + static_cast<std::ptrdiff_t>(at + seq + 1));
    }
    const auto logits = model.forward(from_vector<std::int64_t>(in, {batch, seq}));
    auto loss = cross_entropy(logits.reshape({batch * seq, vocab}), from_vector<std::int64_t>(target, {batch * seq}));
    loss.backward();
    const double norm = optim::clip_grad_norm(opt.parameters(), max_norm);
    opt.set_lr(optim::warmup_cosine(opt.steps(), base_lr, warmup_steps, total_steps, min_lr));
    opt.step();
    opt.zero_grad();
    return norm;
  }

  /// Runs `n` steps; returns their gradient norms.
  std::vector<double> steps(std::int64_t n) {
    std::vector<double> norms;
    for (std::int64_t i = 0; i < n; ++i) norms.push_back(step());
    return norms;
  }
};

/// True when both lists have the same names, shapes and bits.
bool same_bits(const NamedTensors<float>& a, const NamedTensors<float>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || a[i].second.shape() != b[i].second.shape()) return false;
    const auto va = a[i].second.contiguous().to_vector();
    const auto vb = b[i].second.contiguous().to_vector();
    if (std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

/// Deep copies of a module's parameters (later steps do not change them).
NamedTensors<float> snapshot(const nn::Module<float>& m) {
  NamedTensors<float> out;
  for (const auto& [name, p] : m.named_parameters()) out.emplace_back(name, p.detach().clone());
  return out;
}

}  // namespace

TEST_CASE("resuming from a training checkpoint is bit-exact: DecoderLM, AdamW, warmup-cosine, clipping, data generator") {
  const std::string path = temp_path("resume_lm.safetensors");

  Run straight(1, 7);
  const auto norms = straight.steps(total_steps);
  // The run exercises clipping (some steps clipped) and moves the weights.
  int clipped = 0;
  for (double n : norms) clipped += n > max_norm;
  CHECK(clipped > 0);
  CHECK_FALSE(same_bits(snapshot(straight.model), snapshot(Run(1, 7).model)));

  Run first(1, 7);
  first.steps(half_steps);
  io::save_training_checkpoint(path, first.model, first.opt, {{"data", &first.data}}, {{"note", "half"}});

  Run resumed(99, 4242);  // other init and data seeds: everything must come from the file
  CHECK_FALSE(same_bits(snapshot(resumed.model), snapshot(first.model)));
  CHECK(io::load_training_checkpoint(path, resumed.model, resumed.opt, {{"data", &resumed.data}}) == half_steps);
  CHECK(resumed.opt.steps() == half_steps);
  CHECK(same_bits(snapshot(resumed.model), snapshot(first.model)));
  CHECK(same_bits(resumed.opt.state(), first.opt.state()));
  CHECK(resumed.data.state() == first.data.state());
  CHECK(io::read_checkpoint<float>(path).metadata.at("note") == "half");

  const auto resumed_norms = resumed.steps(half_steps);
  CHECK(resumed.opt.steps() == total_steps);
  CHECK(same_bits(snapshot(resumed.model), snapshot(straight.model)));
  CHECK(same_bits(resumed.opt.state(), straight.opt.state()));
  CHECK(resumed.data.state() == straight.data.state());
  for (std::int64_t i = 0; i < half_steps; ++i)
    CHECK(resumed_norms[static_cast<std::size_t>(i)] == norms[static_cast<std::size_t>(half_steps + i)]);
  std::filesystem::remove(path);
}

TEST_CASE("the resume comparison fails when a piece of the state is not restored") {
  const std::string path = temp_path("resume_lm_partial.safetensors");
  Run straight(1, 7);
  straight.steps(total_steps);
  Run first(1, 7);
  first.steps(half_steps);
  io::save_training_checkpoint(path, first.model, first.opt, {{"data", &first.data}});

  SUBCASE("generator state not restored: the batch stream restarts from its seed") {
    Run resumed(99, 7);
    Generator unused(0);
    // Restore into a throwaway generator, so the run's own data generator keeps its seed.
    io::load_training_checkpoint(path, resumed.model, resumed.opt, {{"data", &unused}});
    CHECK(same_bits(snapshot(resumed.model), snapshot(first.model)));
    resumed.steps(half_steps);
    CHECK_FALSE(same_bits(snapshot(resumed.model), snapshot(straight.model)));
  }
  SUBCASE("optimizer state not restored: fresh moments and step count") {
    Run resumed(99, 4242);
    io::load_checkpoint(path, resumed.model.named_parameters(), NamedTensors<float>{}, {{"data", &resumed.data}},
                        /*strict=*/false);
    CHECK(same_bits(snapshot(resumed.model), snapshot(first.model)));
    CHECK(resumed.opt.steps() == 0);
    resumed.steps(half_steps);
    CHECK_FALSE(same_bits(snapshot(resumed.model), snapshot(straight.model)));
    CHECK_FALSE(same_bits(resumed.opt.state(), straight.opt.state()));
  }
  std::filesystem::remove(path);
}

TEST_CASE("load_training_checkpoint errors change nothing") {
  const std::string path = temp_path("resume_lm_errors.safetensors");
  Run first(1, 7);
  first.steps(1);
  io::save_training_checkpoint(path, first.model, first.opt, {{"data", &first.data}});

  Run other(3, 8);
  const auto before = snapshot(other.model);
  const auto state_before = other.opt.state();
  const auto data_before = other.data.state();
  const auto unchanged = [&] {
    CHECK(same_bits(snapshot(other.model), before));
    CHECK(same_bits(other.opt.state(), state_before));
    CHECK(other.opt.steps() == 0);
    CHECK(other.data.state() == data_before);
  };

  // A generator the file does not hold.
  Generator extra(1);
  CHECK_THROWS_WITH_AS(io::load_training_checkpoint(path, other.model, other.opt,
                                                    {{"data", &other.data}, {"dropout", &extra}}),
                       doctest::Contains("1 generator missing from the file: 'rng.dropout'"), Error);
  unchanged();
  // A generator in the file that is not restored (strict).
  CHECK_THROWS_WITH_AS(io::load_training_checkpoint(path, other.model, other.opt),
                       doctest::Contains("1 unexpected generator in the file: 'rng.data'"), Error);
  unchanged();

  // A model of another width: the shape mismatch is named.
  Run wide(3, 8, 48);
  const auto wide_before = snapshot(wide.model);
  CHECK_THROWS_WITH_AS(io::load_training_checkpoint(path, wide.model, wide.opt, {{"data", &wide.data}}),
                       doctest::Contains("tensor 'model.embed_tokens.weight': file has shape (40x32), "
                                         "model has (40x48)"),
                       Error);
  CHECK(same_bits(snapshot(wide.model), wide_before));

  // An optimizer state the optimizer rejects (SGD without momentum saves none): the
  // optimizer's message, prefixed by the file; the model is not touched either.
  const std::string sgd_path = temp_path("resume_lm_sgd.safetensors");
  optim::SGD<float> sgd(first.model.named_parameters(), {.lr = 0.1});
  io::save_training_checkpoint(sgd_path, first.model, sgd, {{"data", &first.data}});
  CHECK_THROWS_WITH_AS(io::load_training_checkpoint(sgd_path, other.model, other.opt, {{"data", &other.data}}),
                       doctest::Contains("[AdamW] load_state: missing state entry 'embed_tokens.weight.exp_avg'"),
                       Error);
  unchanged();

  std::filesystem::remove(path);
  std::filesystem::remove(sgd_path);
}

}  // namespace test_resume
