#!/usr/bin/env python3
"""Side-by-side training throughput: one full training step (forward, backward, AdamW) of a
GPT-2-style DecoderLM in condense and the same model in PyTorch eager on the same machine.
Prints tokens/s of both and the ratio.

CPU (default): condense's bench_train_lm against PyTorch with the same thread count. Model
(both sides): byte vocabulary (256), 4 layers, d_model 256, 4 heads, MLP 4x with GELU (tanh
form), LayerNorm pre-norm, learned positions, tied embeddings, causal attention (PyTorch:
scaled_dot_product_attention(is_causal=True)); batch 8 x 256 tokens; AdamW.

GPU (--device cuda): condense's bench_cuda_train_lm against PyTorch on the same GPU, the
GPT-2-small size (vocabulary 50257, 12 layers, d_model 768, 12 heads, batch 8 x 1024 tokens)
with gradient clipping at 1.0 before AdamW, float parameters, and either TF32 GEMMs on both
sides (default) or --bf16: condense's bfloat16 GEMMs against torch.autocast(bfloat16), or
--bf16-params: condense's DecoderLM<bfloat16> with AdamW<bfloat16> (float master weights)
against the same torch.autocast(bfloat16) run (PyTorch's usual mixed-precision recipe).

Usage: python3 bench/torch_train_lm.py [--device cpu|cuda] [--bf16 | --bf16-params] [--bench PATH] [--threads 2]
       [--layers N] [--d-model N] [--heads N] [--seq N] [--batch N] [--vocab N] [--steps 10]
Installs PyTorch with pip when it is missing.
"""
import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import ensure_torch, run_condense_bench  # noqa: E402


def build_model(torch, vocab, layers, d, heads, seq, device):
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, _ = x.shape
            h = self.norm1(x)
            split = lambda y: y.view(b, t, heads, d // heads).transpose(1, 2)  # noqa: E731
            a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
            return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(seq, d)
            self.layers = nn.ModuleList(Block() for _ in range(layers))
            self.norm = nn.LayerNorm(d)

        def forward(self, ids):
            x = self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=device))
            for layer in self.layers:
                x = layer(x)
            return self.norm(x) @ self.embed.weight.t()

    return LM().to(device)


def torch_tokens_per_second(torch, args):
    torch.manual_seed(0)
    gpu = args.device == "cuda"
    model = build_model(torch, args.vocab, args.layers, args.d_model, args.heads, args.seq, args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1 if gpu else 0.01)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=args.device)
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16) if gpu and args.bf16 else contextlib.nullcontext():
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, args.vocab), y.reshape(-1))
        loss.backward()
        if gpu:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()  # waits for the step to finish

    step()
    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - start
    return args.steps * args.batch * args.seq / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--bench", default=None, help="the condense benchmark binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--d-model", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--bf16", action="store_true", help="GPU: bfloat16 GEMMs and attention (condense) against autocast (PyTorch)")
    ap.add_argument("--bf16-params", action="store_true",
                    help="GPU: bfloat16 parameters with float master weights (condense) against autocast (PyTorch)")
    args = ap.parse_args()
    mode = 2 if args.bf16_params else 1 if args.bf16 else 0
    args.bf16 = mode > 0  # PyTorch runs autocast for both bf16 modes
    gpu = args.device == "cuda"
    # Defaults per device: the sizes the condense benchmark of that device uses.
    for name, cpu_value, gpu_value in [("layers", 4, 12), ("d_model", 256, 768), ("heads", 4, 12), ("seq", 256, 1024),
                                       ("vocab", 256, 50257)]:
        if getattr(args, name) is None:
            setattr(args, name, gpu_value if gpu else cpu_value)
    if args.bench is None:
        args.bench = "build/release/bench/" + ("bench_cuda_train_lm" if gpu else "bench_train_lm")
    ensure_torch()
    import torch

    torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    bench_name = (f"BM_cuda_train_step_gpt2_small/{mode}$" if gpu else "BM_train_step_gpt2_small")
    ours = [b for b in run_condense_bench(args.bench, args.threads, bench_name, 5.0 if gpu else 2.0)
            if b.get("run_type", "iteration") == "iteration"]
    ours_tps = ours[0]["tokens/s"]
    theirs_tps = torch_tokens_per_second(torch, args)
    where = torch.cuda.get_device_name() if gpu else f"threads={torch.get_num_threads()}"
    precision = (["tf32 GEMMs", "bf16 GEMMs and attention / autocast bf16",
                  "bf16 parameters + float masters / autocast bf16"][mode]) if gpu else "float32"
    print(f"torch {torch.__version__}, {where}, {precision}; model: vocab {args.vocab}, {args.layers} layers, "
          f"d={args.d_model}, {args.heads} heads, T={args.seq}, batch {args.batch}")
    print(f"condense      {ours_tps:10.0f} tokens/s")
    print(f"torch eager   {theirs_tps:10.0f} tokens/s")
    print(f"ratio condense/torch: {ours_tps / theirs_tps:.2f}")


if __name__ == "__main__":
    main()
