#!/usr/bin/env python3
"""Side-by-side op benchmark: the condense core-op benchmarks (bench_matmul, bench_elementwise,
bench_softmax, bench_norms) against the same ops and sizes in PyTorch, same machine, same
thread count. Prints the times and the ratio PyTorch time / condense time per case (above 1:
condense faster), plus condense / Eigen for the GEMM cases measured in the same process.

Usage: python3 bench/torch_ops.py [--build build/release] [--threads 2] [--json out.json]
Installs PyTorch with pip when it is missing.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import ensure_torch, run_condense_bench, timeit, to_ms  # noqa: E402


def parse_name(name):
    """'BM_softmax/forward/rows:1024/cols:1024/real_time' -> ('BM_softmax/forward', [1024, 1024])."""
    base, args = [], []
    for part in name.split("/"):
        if part == "real_time":
            continue
        value = part.split(":")[-1]
        if value.isdigit():
            args.append(int(value))
        else:
            base.append(part)
    return "/".join(base), args


def torch_case(torch, base, args):
    """A no-argument callable running the PyTorch equivalent of one condense case, or None."""
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    uni = lambda n: torch.rand(n // 1024, 1024, generator=gen) * 8 - 4  # noqa: E731

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    def fwd_bwd(fn, *leaves, grad=None):
        leaves = [t.clone().requires_grad_() for t in leaves]

        def run():
            for t in leaves:
                t.grad = None
            y = fn(*leaves)
            y.backward(grad if grad is not None else None)
        return run

    unary = {"BM_exp": torch.exp, "BM_tanh": torch.tanh, "BM_sigmoid": torch.sigmoid, "BM_relu": torch.relu,
             "BM_gelu_erf": F.gelu, "BM_gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "BM_silu": F.silu}
    if base in unary:
        x = uni(args[0])
        return no_grad(lambda: unary[base](x))
    if base in ("BM_add", "BM_mul"):
        a, b = uni(args[0]), uni(args[0])
        return no_grad(lambda: a + b if base == "BM_add" else a * b)
    if base == "BM_add_broadcast_row":
        a, row = uni(args[0]), rnd(1024)
        return no_grad(lambda: a + row)
    if base.startswith("BM_gelu_backward"):
        x, g = uni(args[0]), uni(args[0])
        approx = "tanh" if "Tanh" in base else "none"
        return no_grad(lambda: torch.ops.aten.gelu_backward(g, x, approximate=approx))
    if base in ("BM_softmax/forward", "BM_log_softmax/forward"):
        x = rnd(*args)
        f = torch.softmax if base.startswith("BM_softmax") else torch.log_softmax
        return no_grad(lambda: f(x, -1))
    if base in ("BM_softmax/forward_backward", "BM_log_softmax/forward_backward"):
        x, g = rnd(*args), rnd(*args)
        f = torch.softmax if base.startswith("BM_softmax") else torch.log_softmax
        return fwd_bwd(lambda t: f(t, -1), x, grad=g)
    if base == "BM_logsumexp/lastdim":
        x = rnd(*args)
        return no_grad(lambda: torch.logsumexp(x, -1))
    if base == "BM_sum/lastdim":
        x = rnd(*args)
        return no_grad(lambda: x.sum(-1))
    if base in ("BM_layer_norm_fwd", "BM_rms_norm_fwd", "BM_layer_norm_fwd_bwd", "BM_rms_norm_fwd_bwd"):
        rows, d = args
        x, w, b, g = rnd(rows, d), rnd(d), rnd(d), rnd(rows, d)
        if "rms" in base:
            f = lambda x_, w_, b_: F.rms_norm(x_, (d,), w_, 1e-6)  # noqa: E731
        else:
            f = lambda x_, w_, b_: F.layer_norm(x_, (d,), w_, b_, 1e-5)  # noqa: E731
        if base.endswith("bwd"):
            return fwd_bwd(f, x, w, b, grad=g)
        return no_grad(lambda: f(x, w, b))
    if base in ("BM_cross_entropy_fwd", "BM_cross_entropy_fwd_bwd"):
        rows, classes = args
        logits, targets = rnd(rows, classes), torch.randint(0, classes, (rows,), generator=gen)
        if base.endswith("bwd"):
            return fwd_bwd(lambda z: F.cross_entropy(z, targets), logits)
        return no_grad(lambda: F.cross_entropy(logits, targets))
    if base in ("BM_embedding_fwd", "BM_embedding_fwd_bwd"):
        vocab, d, n = args
        weight, ids, g = rnd(vocab, d), torch.randint(0, vocab, (8, n // 8), generator=gen), rnd(8, n // 8, d)
        if base.endswith("bwd"):
            return fwd_bwd(lambda w: F.embedding(ids, w), weight, grad=g)
        return no_grad(lambda: F.embedding(ids, weight))
    if base == "BM_matmul_condense":
        a, b = rnd(args[0], args[0]), rnd(args[0], args[0])
        return no_grad(lambda: a @ b)
    if base == "BM_linear_forward_condense":
        x, w, b = rnd(8, 256, 1024), rnd(4096, 1024) * 0.03, rnd(4096)
        return no_grad(lambda: F.linear(x, w, b))
    if base == "BM_linear_forward_backward_condense":
        x, w, b, g = rnd(8, 256, 1024), rnd(4096, 1024) * 0.03, rnd(4096), rnd(8, 256, 4096)
        return fwd_bwd(lambda x_, w_, b_: F.linear(x_, w_, b_), x, w, b, grad=g)
    if base == "BM_matmul_batched_condense":
        a, b = rnd(64, 256, 64), rnd(64, 256)
        return no_grad(lambda: a @ b)
    if base == "BM_bmm_condense":
        a, b = rnd(64, 256, 64), rnd(64, 64, 256)
        return no_grad(lambda: torch.bmm(a, b))
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--benches", default="matmul,elementwise,softmax,norms")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    ensure_torch()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}")
    rows = []
    print(f"{'case':58s} {'condense ms':>11s} {'torch ms':>9s} {'torch/cond':>10s} {'eigen/cond':>10s}")
    for name in args.benches.split(","):
        benches = run_condense_bench(os.path.join(args.build, "bench", f"bench_{name}"), args.threads)
        eigen = {}  # the same GEMM through Eigen directly, keyed like the condense case
        for b in benches:
            if "_eigen" in b["name"] and "_loop" not in b["name"]:
                base, case_args = parse_name(b["name"].replace("_eigen_folded", "_condense").replace("_eigen", "_condense"))
                eigen[(base,) + tuple(case_args)] = to_ms(b)
        for b in benches:
            if "_eigen" in b["name"]:
                continue
            base, case_args = parse_name(b["name"])
            fn = torch_case(torch, base, case_args)
            ours = to_ms(b)
            theirs = timeit(fn) if fn else None
            e = eigen.get((base,) + tuple(case_args))
            label = base + "".join(f"/{a}" for a in case_args)
            fmt = lambda x, w: f"{x:{w}.3f}" if x else f"{'-':>{w}s}"  # noqa: E731
            print(f"{label:58s} {ours:11.3f} {fmt(theirs, 9)} {fmt(theirs / ours if theirs else None, 10)} "
                  f"{fmt(e / ours if e else None, 10)}", flush=True)
            rows.append({"case": label, "condense_ms": ours, "torch_ms": theirs, "eigen_ms": e})
    print("torch/cond: PyTorch time / condense time (above 1: condense faster); "
          "eigen/cond: Eigen called directly / condense, same process.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
