// Training throughput of a small GPT-2-style DecoderLM: one full step (forward, backward,
// AdamW) per iteration, reported as tokens/s. The same model in PyTorch eager runs side by
// side in bench/torch_train_lm.py. Model: byte vocabulary (256), 4 layers, d_model 256,
// 4 heads, GELU (tanh) MLP of 1024, LayerNorm, learned positions, tied embeddings; batch 8
// x 256 tokens. Threads: CONDENSE_THREADS (default 2).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>

#include "condense/backend/cpu/parallel.hpp"
#include "condense/core/factories.hpp"
#include "condense/mask/basic.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/ops/losses.hpp"
#include "condense/optim/adamw.hpp"

using namespace condense;

namespace {

const int threads = [] {
  const char* env = std::getenv("CONDENSE_THREADS");
  const int n = env ? std::atoi(env) : 0;
  set_num_threads(n > 0 ? n : 2);
  return n > 0 ? n : 2;
}();

void BM_train_step_gpt2_small(benchmark::State& state) {
  constexpr std::int64_t vocab = 256, d_model = 256, layers = 4, heads = 4, seq = 256, batch = 8;
  Generator gen(0);
  nn::DecoderLM<float, mask::Causal> model(nn::DecoderLMOptions::gpt2_style(vocab, d_model, layers, heads, seq), gen);
  optim::AdamWOptions adamw;
  adamw.lr = 3e-4;
  adamw.weight_decay = 0.01;
  optim::AdamW<float> opt(model.named_parameters(), adamw);
  const auto tokens = randint<std::int64_t>({batch, seq + 1}, 0, vocab, gen);
  const auto inputs = tokens.narrow(1, 0, seq).contiguous();
  const auto targets = tokens.narrow(1, 1, seq).contiguous().reshape({batch * seq});
  auto step = [&] {
    opt.zero_grad();
    const auto logits = model.forward(inputs, mask::Causal{});
    auto loss = cross_entropy(logits.reshape({batch * seq, vocab}), targets);
    loss.backward();
    opt.step();
    return loss.item();
  };
  step();  // warm-up: first touches of every buffer
  for (auto _ : state) benchmark::DoNotOptimize(step());
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(batch * seq), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = threads;
}

}  // namespace

BENCHMARK(BM_train_step_gpt2_small)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

BENCHMARK_MAIN();
