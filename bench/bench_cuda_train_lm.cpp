// Training throughput of a GPT-2-small-sized DecoderLM on the GPU: one full step (forward,
// cross_entropy, backward, gradient clipping, AdamW) per iteration, reported as tokens/s.
// bench/torch_train_lm.py --device cuda runs the same model in PyTorch eager side by side.
// Model: vocabulary 50257, 12 layers, d_model 768, 12 heads, GELU (tanh) MLP of 3072,
// LayerNorm, learned positions, tied embeddings; batch 8 x 1024 tokens. Argument 0: float
// parameters with TF32 GEMMs (cuda::set_allow_tf32). Argument 1: float parameters with
// bfloat16 GEMMs and attention, fp32 accumulation (cuda::set_allow_bf16_matmul and
// cuda::set_allow_bf16_attention: operands converted on every call). Argument 2: bfloat16
// parameters and activations (DecoderLM<bfloat16>: bf16 GEMMs and tensor-core attention
// with no conversion copies) trained by AdamW<bfloat16> on float master weights.
// Without a CUDA device the benchmark is skipped. CONDENSE_BENCH_SMOKE=1 (bench/smoke.hpp):
// vocabulary 97, 2 layers, d_model 64, 4 heads, batch 2 x 16 tokens, one step each.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/factories.hpp"
#include "condense/mask/basic.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/ops/losses.hpp"
#include "condense/optim/adamw.hpp"
#include "condense/optim/clip.hpp"
#include "smoke.hpp"

using namespace condense;

namespace {

/// Times the training step of a DecoderLM<T> (T: float or bfloat16).
template <class T>
void time_train_step(benchmark::State& state) {
  using condense::bench::bench_size;
  const std::int64_t vocab = bench_size(50257, 97), d_model = bench_size(768, 64), layers = bench_size(12, 2),
                     heads = bench_size(12, 4), seq = bench_size(1024, 16), batch = bench_size(8, 2);
  Generator gen(0);
  nn::DecoderLM<T, mask::Causal> model(nn::DecoderLMOptions::gpt2_style(vocab, d_model, layers, heads, seq), gen);
  model.to(Device::cuda());
  optim::AdamWOptions adamw;
  adamw.lr = 3e-4;
  adamw.weight_decay = 0.1;
  optim::AdamW<T> opt(model.named_parameters(), adamw);
  const auto tokens = randint<std::int64_t>({batch, seq + 1}, 0, vocab, gen);
  const auto inputs = tokens.narrow(1, 0, seq).contiguous().to(Device::cuda());
  const auto targets = tokens.narrow(1, 1, seq).contiguous().reshape({batch * seq}).to(Device::cuda());
  auto step = [&] {
    opt.zero_grad();
    const auto logits = model.forward(inputs, mask::Causal{});
    auto loss = cross_entropy(logits.reshape({batch * seq, vocab}), targets);
    loss.backward();
    optim::clip_grad_norm(model.named_parameters(), 1.0);
    opt.step();
    return static_cast<float>(loss.item());  // waits for the step to finish
  };
  step();  // warm-up: fills the caching allocator and creates the cuBLAS handle
  for (auto _ : state) benchmark::DoNotOptimize(step());
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(batch * seq), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak GiB"] = static_cast<double>(cuda::memory_stats(0).peak_bytes) / (1 << 30);
}

void BM_cuda_train_step_gpt2_small(benchmark::State& state) {
  if (!cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int mode = static_cast<int>(state.range(0));
  cuda::set_allow_tf32(true);
  cuda::set_allow_bf16_matmul(mode == 1);
  cuda::set_allow_bf16_attention(mode == 1);
  state.SetLabel(mode == 0 ? "tf32 GEMMs" : mode == 1 ? "bf16 GEMMs + attention" : "bf16 parameters, float masters");
  if (mode == 2) {
    time_train_step<bfloat16>(state);
  } else {
    time_train_step<float>(state);
  }
  cuda::set_allow_tf32(false);
  cuda::set_allow_bf16_matmul(false);
  cuda::set_allow_bf16_attention(false);
}

}  // namespace

BENCHMARK(BM_cuda_train_step_gpt2_small)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Apply([](benchmark::internal::Benchmark* b) {
      if (condense::bench::smoke_mode()) {
        b->Iterations(1);
      } else {
        b->MinTime(5.0);
      }
    });

BENCHMARK_MAIN();
