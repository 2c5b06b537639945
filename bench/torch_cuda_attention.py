#!/usr/bin/env python3
"""Side-by-side GPU attention benchmark: condense (bench_cuda_attention) against PyTorch on
the same GPU: scaled_dot_product_attention (is_causal for causal, the policy's boolean mask
otherwise) and flex_attention with the equivalent block mask, each in fp32 (against the
condense portable kernel) and bf16 (against the condense tensor-core kernels). B*T = 16k
tokens, hidden 2048, head dims 64 and 128. Prints times, TFLOP/s over allowed pairs, and
ratios (PyTorch time / condense time) per precision.

Usage: python3 bench/torch_cuda_attention.py [--bench build/release/bench/bench_cuda_attention]
       [--sizes 512,1024,...,16384] [--dims 64,128] [--policies causal,...] [--json out.json]
Installs PyTorch with pip when it is missing; needs a CUDA device.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_attention import policy_masks  # noqa: E402
from torch_common import ensure_torch, run_condense_bench, to_ms  # noqa: E402

TOKENS, HIDDEN = 16384, 2048


def cuda_time_ms(torch, fn, reps=10):
    """Median time of fn() on the GPU in milliseconds (CUDA events), after a warm-up."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def torch_cases(torch, name, t, dim, dtype):
    F = torch.nn.functional
    tq, tk, allowed = policy_masks(torch, name, t)
    batch, heads = max(1, TOKENS // tk), HIDDEN // dim
    dev = "cuda"
    qi = torch.arange(tq, device=dev).view(-1, 1)
    ki = torch.arange(tk, device=dev).view(1, -1)
    mask = allowed(qi.cpu(), ki.cpu()).to(dev)
    q = torch.randn(batch, heads, tq, dim, device=dev, dtype=dtype)
    k = torch.randn(batch, heads, tk, dim, device=dev, dtype=dtype)
    v = torch.randn(batch, heads, tk, dim, device=dev, dtype=dtype)
    out = {}

    def both(label, f):
        with torch.no_grad():
            out[label + "_fwd"] = cuda_time_ms(torch, f)
        qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
        out[label + "_fwdbwd"] = cuda_time_ms(torch, lambda: f(qq, kk, vv).sum().backward())

    if name == "causal":
        both("sdpa", lambda qq=q, kk=k, vv=v: F.scaled_dot_product_attention(qq, kk, vv, is_causal=True))
    else:
        both("sdpa", lambda qq=q, kk=k, vv=v: F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask))
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        compiled = torch.compile(flex_attention)
        cpu_allowed = allowed

        def mask_mod(b, h, q_idx, kv_idx):
            return cpu_allowed(q_idx, kv_idx)

        block_mask = create_block_mask(mask_mod, 1, 1, tq, tk, device=dev)
        both("flex", lambda qq=q, kk=k, vv=v: compiled(qq, kk, vv, block_mask=block_mask))
    except Exception as e:  # noqa: BLE001 - report and go on
        out["flex_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/release/bench/bench_cuda_attention")
    ap.add_argument("--sizes", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--policies", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    ensure_torch()
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: nothing to compare")
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    filt = ("BM_cuda_attention_.*/(fp32|bf16)/(" + (args.policies.replace(",", "|") or ".*") + ")/d(" +
            "|".join(map(str, dims)) + ")/(" + "|".join(map(str, sizes)) + ")(/|$)")
    ours = {}
    for b in run_condense_bench(args.bench, 1, filt):
        parts = b["name"].split("/")  # BM_cuda_attention_<mode>/<precision>/<policy>/d<D>/<T>[/real_time]
        mode, prec, policy = parts[0].rsplit("_", 1)[1], parts[1], parts[2]
        dim, size = int(parts[3][1:]), int(parts[4])
        ours[(policy, dim, size, mode, prec)] = {"ms": to_ms(b), "tflops": b["TFLOP/s"], "density": b["density"]}
    policies = sorted({key[0] for key in ours}, key=lambda p: (p != "causal", p))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print(f"{'policy':22s} {'D':>4s} {'T':>6s} {'mode':6s} {'prec':4s} {'dens':>5s} {'condense':>9s} {'TF/s':>6s} "
          f"{'sdpa':>8s} {'flex':>8s} {'x sdpa':>8s} {'x flex':>8s}")
    rows = []
    for dim in dims:
        for t in sizes:
            for policy in policies:
                fp32 = torch_cases(torch, policy, t, dim, torch.float32)
                bf16 = torch_cases(torch, policy, t, dim, torch.bfloat16)
                for mode in ("fwd", "fwdbwd"):
                    for prec, theirs in (("fp32", fp32), ("bf16", bf16)):
                        o = ours.get((policy, dim, t, mode, prec))
                        if not o:
                            continue
                        fmt = lambda x: f"{x:8.2f}" if x else f"{'-':>8s}"
                        ratio = lambda x: f"{x / o['ms']:8.2f}" if x else f"{'-':>8s}"
                        sdpa, flex = theirs.get(f"sdpa_{mode}"), theirs.get(f"flex_{mode}")
                        print(f"{policy:22s} {dim:4d} {t:6d} {mode:6s} {prec:4s} {o['density']:5.2f} {o['ms']:9.2f} "
                              f"{o['tflops']:6.1f} {fmt(sdpa)} {fmt(flex)} {ratio(sdpa)} {ratio(flex)}", flush=True)
                        rows.append({"policy": policy, "D": dim, "T": t, "mode": mode, "precision": prec,
                                     "condense": o, "torch": theirs})
    print("x ...: PyTorch time / condense time in the same precision (above 1: condense faster).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
