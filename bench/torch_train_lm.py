#!/usr/bin/env python3
"""Side-by-side training throughput: one full training step (forward, backward, AdamW) of a
small GPT-2-style DecoderLM in condense (bench_train_lm) and the same model in PyTorch eager
on the same machine and thread count. Prints tokens/s of both and the ratio.

Model (both sides): byte vocabulary (256), 4 layers, d_model 256, 4 heads, MLP 4x with GELU
(tanh form), LayerNorm pre-norm, learned positions, tied embeddings, causal attention
(PyTorch: scaled_dot_product_attention(is_causal=True)); batch 8 x 256 tokens; AdamW.

Usage: python3 bench/torch_train_lm.py [--bench build/release/bench/bench_train_lm] [--threads 2]
       [--layers 4] [--d-model 256] [--heads 4] [--seq 256] [--batch 8] [--steps 10]
Installs PyTorch with pip when it is missing.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import ensure_torch, run_condense_bench  # noqa: E402


def build_model(torch, vocab, layers, d, heads, seq):
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
            x = self.embed(ids) + self.pos(torch.arange(ids.shape[1]))
            for layer in self.layers:
                x = layer(x)
            return self.norm(x) @ self.embed.weight.t()

    return LM()


def torch_tokens_per_second(torch, args):
    torch.manual_seed(0)
    model = build_model(torch, 256, args.layers, args.d_model, args.heads, args.seq)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    ids = torch.randint(0, 256, (args.batch, args.seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    step()
    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - start
    return args.steps * args.batch * args.seq / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/release/bench/bench_train_lm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    ensure_torch()
    import torch

    torch.set_num_threads(args.threads)
    ours = [b for b in run_condense_bench(args.bench, args.threads, "BM_train_step_gpt2_small", 2.0)
            if b.get("run_type", "iteration") == "iteration"]
    ours_tps = ours[0]["tokens/s"]
    theirs_tps = torch_tokens_per_second(torch, args)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}; model: {args.layers} layers, "
          f"d={args.d_model}, {args.heads} heads, T={args.seq}, batch {args.batch}")
    print(f"condense      {ours_tps:10.0f} tokens/s")
    print(f"torch eager   {theirs_tps:10.0f} tokens/s")
    print(f"ratio condense/torch: {ours_tps / theirs_tps:.2f}")


if __name__ == "__main__":
    main()
