// CUDA parity of whole models: a GPT-2-style and a LLaMA-style DecoderLM built twice from
// the same seed, one moved to the GPU with Module::to, run through forward, cross_entropy,
// backward, gradient clipping and AdamW steps on both devices (losses, every parameter
// gradient and the updated parameters must agree); generation with a KV cache, gist
// compression and generation from a gist cache (decoder-only and encoder-decoder) on both
// devices; what a training step after the first asks of the device (no fresh device
// memory; on the emulated device, host waits that do not grow with depth). Skips without a
// CUDA device.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"
#include "emulation/device_counters.hpp"

namespace test_cuda_models {

using namespace condense;
using condense::testing::allclose;
using condense::testing::max_abs_diff;
using condense::testing::relative_error;

namespace {

/// Tolerances of a whole model step (float: fast single-precision functions, reordered sums).
template <FloatingElement T>
constexpr double model_rtol = std::is_same_v<T, float> ? 2e-3 : 1e-9;
template <FloatingElement T>
constexpr double model_atol = std::is_same_v<T, float> ? 2e-5 : 1e-11;

/// Checks that every parameter (or its gradient, when `grads`) of `gpu` matches `cpu`.
template <FloatingElement T, class Model>
void check_parameters_match(const Model& cpu, const Model& gpu, bool grads) {
  const auto a = cpu.named_parameters();
  const auto b = gpu.named_parameters();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    REQUIRE(a[i].first == b[i].first);
    REQUIRE(b[i].second.device() == Device::cuda());
    const Tensor<T> want = grads ? a[i].second.grad() : a[i].second;
    const Tensor<T> got = grads ? b[i].second.grad() : b[i].second;
    REQUIRE(want.defined());
    REQUIRE(got.defined());
    CHECK_MESSAGE(allclose(got.cpu(), want, model_rtol<T>, model_atol<T>), "differs by ",
                  max_abs_diff(got.cpu(), want));
  }
}

/// Two identical models (same seed), the second on the GPU; `steps` training steps on both
/// (forward, loss, backward, clip, AdamW), comparing losses, gradients and parameters.
template <FloatingElement T, class Mask>
void check_training_parity(const nn::DecoderLMOptions& options, std::int64_t batch, std::int64_t seq, int steps) {
  Generator gen_cpu(3), gen_gpu(3);
  nn::DecoderLM<T, Mask> cpu(options, gen_cpu);
  nn::DecoderLM<T, Mask> gpu(options, gen_gpu);
  gpu.to(Device::cuda());
  CHECK(gpu.device() == Device::cuda());
  CHECK(cpu.device() == Device::cpu());
  check_parameters_match<T>(cpu, gpu, false);

  optim::AdamWOptions adamw;
  adamw.lr = 1e-2;
  adamw.weight_decay = 0.1;
  // eps well above the rounding residue of gradients that are zero in exact arithmetic (the
  // key bias's, by softmax's shift invariance): with eps 1e-8, Adam's first step turns that
  // residue into updates of size lr, different on each device. The AdamW kernels have their
  // own exact parity tests (test_cuda_optim.cpp).
  adamw.eps = 1e-4;
  optim::AdamW<T> opt_cpu(cpu.named_parameters(), adamw);
  optim::AdamW<T> opt_gpu(gpu.named_parameters(), adamw);
  Generator data(11);
  for (int step = 0; step < steps; ++step) {
    CAPTURE(step);
    const auto tokens = randint<std::int64_t>({batch, seq + 1}, 0, options.vocab_size, data);
    const auto inputs = tokens.narrow(1, 0, seq).contiguous();
    const auto targets = tokens.narrow(1, 1, seq).contiguous().reshape({batch * seq});
    opt_cpu.zero_grad();
    opt_gpu.zero_grad();
    const auto loss_cpu =
        cross_entropy(cpu.forward(inputs).reshape({batch * seq, options.vocab_size}), targets);
    const auto loss_gpu = cross_entropy(gpu.forward(inputs.to(Device::cuda())).reshape({batch * seq, options.vocab_size}),
                                        targets.to(Device::cuda()));
    REQUIRE(loss_gpu.device() == Device::cuda());
    CHECK(loss_gpu.item() == doctest::Approx(loss_cpu.item()).epsilon(model_rtol<T>));
    loss_cpu.backward();
    loss_gpu.backward();
    check_parameters_match<T>(cpu, gpu, true);
    const double norm_cpu = optim::clip_grad_norm(cpu.named_parameters(), 1.0);
    const double norm_gpu = optim::clip_grad_norm(gpu.named_parameters(), 1.0);
    CHECK(norm_gpu == doctest::Approx(norm_cpu).epsilon(model_rtol<T>));
    opt_cpu.step();
    opt_gpu.step();
    check_parameters_match<T>(cpu, gpu, false);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("cuda parity: GPT-2-style DecoderLM training steps", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  CONDENSE_REQUIRE_CUDA_ATTENTION_FOR(T);
  // Learned positions, LayerNorm, GELU (tanh), biases, tied embeddings, causal attention.
  const auto options = nn::DecoderLMOptions::gpt2_style(67, 64, 2, 4, 32);
  check_training_parity<T, mask::Causal>(options, 3, 29, 3);
}

TEST_CASE_TEMPLATE("cuda parity: LLaMA-style DecoderLM training steps", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  CONDENSE_REQUIRE_CUDA_ATTENTION_FOR(T);
  // Rotary positions, RMSNorm, SwiGLU, grouped-query attention (4 heads, 2 KV heads), untied head.
  const auto options = nn::DecoderLMOptions::llama_style(53, 64, 2, 4, 2, 32);
  check_training_parity<T, mask::Causal>(options, 2, 31, 3);
}

namespace {

/// A bfloat16 DecoderLM on both devices: the loss and every gradient agree within the
/// bf16 rounding of the activations (the GPU's tensor-core attention also rounds its
/// probabilities to bf16); then, from the same gradients, AdamW<bfloat16> takes the same
/// step on both devices (float masters within float rounding, parameters within one ulp).
template <class Mask>
void check_bf16_training_parity(const nn::DecoderLMOptions& options, std::int64_t batch, std::int64_t seq) {
  using T = bfloat16;
  Generator gen_cpu(5), gen_gpu(5);
  nn::DecoderLM<T, Mask> cpu(options, gen_cpu);
  nn::DecoderLM<T, Mask> gpu(options, gen_gpu);
  gpu.to(Device::cuda());
  const optim::AdamWOptions adamw{.lr = 1e-2, .weight_decay = 0.1};
  optim::AdamW<T> opt_cpu(cpu.named_parameters(), adamw);
  optim::AdamW<T> opt_gpu(gpu.named_parameters(), adamw);
  Generator data(12);
  const auto tokens = randint<std::int64_t>({batch, seq + 1}, 0, options.vocab_size, data);
  const auto inputs = tokens.narrow(1, 0, seq).contiguous();
  const auto targets = tokens.narrow(1, 1, seq).contiguous().reshape({batch * seq});
  const auto loss_cpu = cross_entropy(cpu.forward(inputs).reshape({batch * seq, options.vocab_size}), targets);
  const auto loss_gpu = cross_entropy(gpu.forward(inputs.to(Device::cuda())).reshape({batch * seq, options.vocab_size}),
                                      targets.to(Device::cuda()));
  REQUIRE(loss_gpu.device() == Device::cuda());
  CHECK(static_cast<float>(loss_gpu.item()) == doctest::Approx(static_cast<float>(loss_cpu.item())).epsilon(2e-2));
  loss_cpu.backward();
  loss_gpu.backward();
  const auto a = cpu.named_parameters(), b = gpu.named_parameters();
  double largest = 0.0;
  for (const auto& [name, p] : a)
    for (const float x : p.grad().template cast<float>().to_vector()) largest = std::max(largest, static_cast<double>(std::abs(x)));
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    REQUIRE(b[i].second.grad().defined());
    CHECK(b[i].second.grad().device() == Device::cuda());
    CHECK(relative_error(b[i].second.grad(), a[i].second.grad(), 1e-3 * largest) < 8e-2);
  }
  // The optimizer alone: the CPU takes the GPU's gradients, so both steps start equal.
  for (std::size_t i = 0; i < a.size(); ++i) a[i].second.set_grad(b[i].second.grad().cpu());
  opt_cpu.step();
  opt_gpu.step();
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    CHECK(allclose(opt_gpu.master_parameters()[i].second.cpu(), opt_cpu.master_parameters()[i].second, 1e-6, 1e-7));
    CHECK(relative_error(b[i].second, a[i].second, 1e-30) <= 0x1p-7);
  }
}

}  // namespace

TEST_CASE("cuda parity: bfloat16 DecoderLM (GPT-2 and LLaMA styles) loss, gradients and an AdamW step") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  check_bf16_training_parity<mask::Causal>(nn::DecoderLMOptions::gpt2_style(67, 64, 2, 4, 32), 3, 29);
  check_bf16_training_parity<mask::Causal>(nn::DecoderLMOptions::llama_style(53, 128, 2, 2, 1, 32), 2, 31);
}

TEST_CASE("cuda: a training step after the first needs no fresh device memory, and its host waits do not grow with depth") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // A GPU is fed well when the host can queue a step ahead of it: the caching allocator must
  // serve every allocation of a step it has seen (memory_stats, on any device), and the host
  // may wait for the device only where the step reads something back, never per layer
  // (counted by the emulated device, emulation/device_counters.hpp; on a GPU the counts
  // stay zero). The waits of a step today are its four downloads: the token ids (validated
  // on the host, bucketed there for the embedding's backward), the targets (validated,
  // counted), the gradient norm of clip_grad_norm and the loss. Uploads (the position ids,
  // the embedding backwards' plans) do not wait: the driver stages pageable memory.
  using condense_cuda_emulation::DeviceCounts;
  const auto count_step = [](std::int64_t layers) {
    const std::int64_t vocab = 61, d_model = 32, heads = 4, seq = 16, batch = 2;
    Generator gen(3);
    nn::DecoderLM<float, mask::Causal> model(nn::DecoderLMOptions::gpt2_style(vocab, d_model, layers, heads, seq), gen);
    model.to(Device::cuda());
    optim::AdamWOptions adamw;
    adamw.weight_decay = 0.1;
    optim::AdamW<float> opt(model.named_parameters(), adamw);
    const auto tokens = randint<std::int64_t>({batch, seq + 1}, 0, vocab, gen);
    const auto inputs = tokens.narrow(1, 0, seq).contiguous().to(Device::cuda());
    const auto targets = tokens.narrow(1, 1, seq).contiguous().reshape({batch * seq}).to(Device::cuda());
    const auto step = [&] {
      opt.zero_grad();
      const auto logits = model.forward(inputs, mask::Causal{});
      auto loss = cross_entropy(logits.reshape({batch * seq, vocab}), targets);
      loss.backward();
      optim::clip_grad_norm(model.named_parameters(), 1.0);
      opt.step();
      return loss.item();
    };
    step();
    const std::size_t misses = cuda::memory_stats(0).misses;
    const DeviceCounts before = DeviceCounts::now();
    step();
    const DeviceCounts d = DeviceCounts::now() - before;
    CHECK(cuda::memory_stats(0).misses == misses);
    MESSAGE("training step, ", layers, " layers: ", d.launches, " kernel launches, ", d.gemms, " cuBLAS products, ",
            d.host_waits, " host waits, ", d.copies_to_host, " copies to the host, ", d.copies_to_device,
            " to the device, ", d.device_copies, " on the device, ", d.memsets, " memsets, ", d.mallocs, " cudaMalloc");
    return d;
  };
  const DeviceCounts two = count_step(2), four = count_step(4);
  if (two.launches == 0) return;  // a GPU: the emulated device's counts are not kept
  CHECK(two.mallocs == 0);
  CHECK(two.frees == 0);
  CHECK(four.mallocs == 0);
  CHECK(four.launches > two.launches);
  CHECK(four.gemms > two.gemms);
  CHECK(four.host_waits == two.host_waits);
  CHECK(four.copies_to_host == two.copies_to_host);
  CHECK(four.copies_to_device == two.copies_to_device);
  CHECK(two.copies_to_host == 4);
  CHECK(two.host_waits == two.copies_to_host);
}

TEST_CASE("cuda: Module::to moves parameters and keeps shared storage shared") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(5);
  nn::DecoderLM<float> model(nn::DecoderLMOptions::gpt2_style(31, 32, 1, 2, 8), gen);
  const auto before = model.named_parameters();
  model.to(Device::cuda());
  const auto after = model.named_parameters();
  REQUIRE(before.size() == after.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    CAPTURE(before[i].first);
    CHECK(after[i].second.device() == Device::cuda());
    CHECK(after[i].second.requires_grad());
    CHECK(testing::values(after[i].second.cpu()) == testing::values(before[i].second));
  }
  model.to(Device::cpu());
  CHECK(model.device() == Device::cpu());
  for (std::size_t i = 0; i < before.size(); ++i)
    CHECK(testing::values(model.named_parameters()[i].second) == testing::values(before[i].second));
}

namespace {

using Rows = std::vector<std::vector<std::int64_t>>;

/// Rows right-padded with 0 into a [B, max length] id tensor on the CPU.
Tensor<std::int64_t> pad_right(const Rows& rows) {
  std::size_t n = 0;
  for (const auto& r : rows) n = std::max(n, r.size());
  std::vector<std::int64_t> flat(rows.size() * n, 0);
  for (std::size_t b = 0; b < rows.size(); ++b)
    std::copy(rows[b].begin(), rows[b].end(), flat.begin() + static_cast<std::ptrdiff_t>(b * n));
  return from_vector<std::int64_t>(flat, {static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(n)});
}

/// Gist spans (g0, g1) of prefixes that end with `k` gist tokens.
std::vector<std::int32_t> spans_of(const Rows& prefixes, std::int64_t k) {
  std::vector<std::int32_t> s;
  for (const auto& p : prefixes) {
    s.push_back(static_cast<std::int32_t>(static_cast<std::int64_t>(p.size()) - k));
    s.push_back(static_cast<std::int32_t>(p.size()));
  }
  return s;
}

/// The decoder-only presets the generation tests run.
std::vector<nn::DecoderLMOptions> generation_presets() {
  return {nn::DecoderLMOptions::gpt2_style(61, 32, 2, 4, 64), nn::DecoderLMOptions::llama_style(61, 32, 2, 4, 2, 64)};
}

}  // namespace

// The generation tests run in double where the build has double attention kernels (so no
// near-tie of two logits can flip an argmax) and in float everywhere (top logits closer than
// float's rounding are unlikely on these random models, but a flip there would not be a bug).
TEST_CASE_TEMPLATE("cuda parity: greedy and sampled generation with a KV cache", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  CONDENSE_REQUIRE_CUDA_ATTENTION_FOR(T);
  const Rows prompts = {{1, 2, 3, 4, 5}, {6, 7}, {8, 9, 10, 11}};
  for (const auto& options : generation_presets()) {
    Generator gen_cpu(4), gen_gpu(4);
    nn::DecoderLM<T> cpu(options, gen_cpu);
    nn::DecoderLM<T> gpu(options, gen_gpu);
    gpu.to(Device::cuda());
    nn::GenerateOptions greedy;
    greedy.max_new_tokens = 6;
    Generator draws_cpu(9), draws_gpu(9);
    CHECK(nn::generate(gpu, prompts, greedy, draws_gpu) == nn::generate(cpu, prompts, greedy, draws_cpu));
    nn::GenerateOptions sampled = greedy;
    sampled.do_sample = true;
    sampled.top_k = 8;
    sampled.temperature = 0.8;
    CHECK(nn::generate(gpu, prompts, sampled, draws_gpu) == nn::generate(cpu, prompts, sampled, draws_cpu));
  }
}

TEST_CASE_TEMPLATE("cuda parity: gist compression, a cache moved to the GPU, and generation from it", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  CONDENSE_REQUIRE_CUDA_ATTENTION_FOR(T);
  constexpr std::int64_t k = 3, gist = 60;
  const Rows prefixes = {{1, 5, 6, gist, gist, gist}, {1, 7, 8, 9, 10, gist, gist, gist}, {1, 4, gist, gist, gist}};
  const Rows inputs = {{11, 12, 13}, {14}, {15, 16}};
  const auto spans = spans_of(prefixes, k);
  NoGradGuard no_grad;
  for (const auto& options : generation_presets()) {
    Generator gen_cpu(5), gen_gpu(5);
    nn::DecoderLM<T> cpu(options, gen_cpu);
    nn::DecoderLM<T> gpu(options, gen_gpu);
    gpu.to(Device::cuda());
    const nn::GistCache<T> cache_cpu = nn::compress_instructions(cpu, pad_right(prefixes), spans);
    const nn::GistCache<T> cache_gpu = nn::compress_instructions(gpu, pad_right(prefixes), spans);
    for (std::int64_t i = 0; i < cache_cpu.num_layers(); ++i) {
      CHECK(allclose(cache_gpu.kv.layer(i).keys().cpu(), cache_cpu.kv.layer(i).keys(), model_rtol<T>, model_atol<T>));
      CHECK(allclose(cache_gpu.kv.layer(i).values().cpu(), cache_cpu.kv.layer(i).values(), model_rtol<T>, model_atol<T>));
    }
    const auto expected = nn::generate_from_gist(cpu, cache_cpu, inputs, 5);
    CHECK(nn::generate_from_gist(gpu, cache_gpu, inputs, 5) == expected);
    // A CPU cache (e.g. loaded from a file) moved to the GPU, and one row answering several inputs.
    CHECK(nn::generate_from_gist(gpu, cache_cpu.to(Device::cuda()), inputs, 5) == expected);
    CHECK(nn::generate_from_gist(gpu, cache_gpu.select_rows({2, 2, 2}), inputs, 3) ==
          nn::generate_from_gist(cpu, cache_cpu.select_rows({2, 2, 2}), inputs, 3));
  }
}

TEST_CASE_TEMPLATE("cuda parity: encoder-decoder gist encoding and decoding from the cache", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  CONDENSE_REQUIRE_CUDA_ATTENTION_FOR(T);
  constexpr std::int64_t k = 3, gist = 60;
  const Rows prefixes = {{1, 5, 6, gist, gist, gist}, {1, 7, 8, 9, 10, gist, gist, gist}};
  const Rows inputs = {{11, 12, 13}, {14}};
  const std::vector<std::int64_t> input_lengths = {3, 1};
  const auto spans = spans_of(prefixes, k);
  const auto targets = pad_right(Rows{{3, 7, 9}, {5, 2, 0}});
  NoGradGuard no_grad;
  const auto options = nn::EncoderDecoderOptions::t5_style(61, 32, 2, 4, 32);
  Generator gen_cpu(6), gen_gpu(6);
  nn::EncoderDecoder<T> cpu(options, gen_cpu);
  nn::EncoderDecoder<T> gpu(options, gen_gpu);
  gpu.to(Device::cuda());
  const auto cache_cpu = nn::compress_instructions(cpu, pad_right(prefixes), spans);
  const auto cache_gpu = nn::compress_instructions(gpu, pad_right(prefixes), spans);
  CHECK(allclose(cache_gpu.states.cpu(), cache_cpu.states, model_rtol<T>, model_atol<T>));
  const auto enc_cpu = nn::encode_from_gist(cpu, cache_cpu, pad_right(inputs), input_lengths);
  const auto enc_gpu = nn::encode_from_gist(gpu, cache_gpu, pad_right(inputs), input_lengths);
  CHECK(allclose(enc_gpu.states.cpu(), enc_cpu.states, model_rtol<T>, model_atol<T>));
  const auto logits_cpu = nn::decode_from_gist(cpu, enc_cpu, targets);
  const auto logits_gpu = nn::decode_from_gist(gpu, enc_gpu, targets.to(Device::cuda()));
  CHECK(allclose(logits_gpu.cpu(), logits_cpu, model_rtol<T>, model_atol<T>));
  nn::GenerateOptions greedy;
  greedy.max_new_tokens = 4;
  Generator draws_cpu(1), draws_gpu(1);
  CHECK(nn::generate_from_gist(gpu, cache_gpu, inputs, 1, greedy, draws_gpu) ==
        nn::generate_from_gist(cpu, cache_cpu, inputs, 1, greedy, draws_cpu));
}

}  // namespace test_cuda_models
