#!/usr/bin/env python3
"""Side-by-side attention benchmark: condense (bench_attention) against PyTorch on the same
machine and thread count: scaled_dot_product_attention (is_causal, and with the policy's
boolean mask), flex_attention with the equivalent block mask (where it runs on the CPU),
and the naive composition (matmul, masked_fill, softmax, matmul). Prints times and ratios.

Usage: python3 bench/torch_attention.py [--bench build/release/bench/bench_attention]
       [--threads 2] [--sizes 512,1024,2048,4096] [--no-flex] [--json out.json]
       python3 bench/torch_attention.py --decode   (decode steps and short chunks against a KV cache, SDPA
       on the same views; 32 query heads over 8 kv heads with enable_gqa)
Installs PyTorch with pip when it is missing.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import ensure_torch, run_condense_bench, timeit, to_ms  # noqa: E402


def policy_masks(torch, name, t):
    """(Tq, Tk, allowed(q_idx, k_idx) as a function of index tensors) for each policy."""
    g1 = t * 3 // 4
    g0 = g1 - 8
    if name == "causal":
        return t, t, lambda q, k: k <= q
    if name == "none":
        return t, t, lambda q, k: (k >= 0) & (q >= 0)
    if name == "sliding_window_256":
        return t, t, lambda q, k: (k <= q) & (k >= q - 256)
    if name == "key_padding_75pct":
        return t, t, lambda q, k: (k < g1) & (q >= 0)
    if name == "gist_prompt_75pct":
        return t, t, lambda q, k: (k <= q) & ((q < g1) | (k >= g0))
    if name == "gist_bidirectional":
        return t, t, lambda q, k: torch.where(q < g1, k < g1, k >= g0)
    if name == "chunked_local_8":
        period = t // 8
        return t, t, lambda q, k: (k <= q) & (q // period == k // period)
    if name == "pruned_keep_20pct":
        gen = torch.Generator().manual_seed(7)
        keep = torch.rand(t, generator=gen) < 0.2
        return t, t, lambda q, k: (k <= q) & keep[k]
    if name == "digest_cross_n_T_over_8":
        n = t // 8
        return n, t + n, lambda q, k: (k < t) | (k - t <= q)
    raise KeyError(name)


def torch_cases(torch, name, t, with_flex, heads=8, dim=64):
    F = torch.nn.functional
    tq, tk, allowed = policy_masks(torch, name, t)
    qi = torch.arange(tq).view(-1, 1)
    ki = torch.arange(tk).view(1, -1)
    mask = allowed(qi, ki)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, heads, tq, dim, generator=gen)
    k = torch.randn(1, heads, tk, dim, generator=gen)
    v = torch.randn(1, heads, tk, dim, generator=gen)
    out = {}

    def both(label, f):
        with torch.no_grad():
            out[label + "_fwd"] = timeit(f)
        qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
        out[label + "_fwdbwd"] = timeit(lambda: f(qq, kk, vv).sum().backward())

    def sdpa_mask(qq=q, kk=k, vv=v):
        return F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask)

    def naive(qq=q, kk=k, vv=v):
        s = (qq @ kk.transpose(-1, -2)) * dim ** -0.5
        return torch.softmax(s.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0) @ vv

    if name == "causal":
        both("sdpa_causal", lambda qq=q, kk=k, vv=v: F.scaled_dot_product_attention(qq, kk, vv, is_causal=True))
    both("sdpa_mask", sdpa_mask)
    both("naive", naive)
    if with_flex:
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            compiled = torch.compile(flex_attention)

            def mask_mod(b, h, q_idx, kv_idx):
                return allowed(q_idx, kv_idx)

            block_mask = create_block_mask(mask_mod, 1, 1, tq, tk, device="cpu")
            both("flex", lambda qq=q, kk=k, vv=v: compiled(qq, kk, vv, block_mask=block_mask))
        except Exception as e:  # flex_attention needs inductor's CPU backend
            out["flex_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    return out


def decode_comparison(torch, args):
    """One decode step against a KV cache's prefix (bench_attention's BM_attention_decode):
    SDPA on the same views, 8 heads over 8 kv heads, 32 query heads over the same 8 kv heads
    (enable_gqa), and chunks of 4 and 16 new queries per head with 8 or 32 query heads
    (causal among themselves after the cached keys: an explicit boolean mask, since SDPA's
    is_causal aligns the first query with the first key), next to condense's runs of the
    same cases."""
    cases = {"cache_prefix_in_place": (8, 1), "grouped_32_over_8_heads": (32, 1),
             "chunk_of_4_queries": (8, 4), "chunk_of_16_queries": (8, 16),
             "chunk_of_4_queries_grouped_32_over_8_heads": (32, 4),
             "chunk_of_16_queries_grouped_32_over_8_heads": (32, 16)}
    benches = run_condense_bench(args.bench, args.threads, "BM_attention_decode/(" + "|".join(cases) + ")/")
    ours = {}
    for b in benches:
        parts = b["name"].split("/")  # BM_attention_decode/<case>/<L>[/real_time]
        ours[(parts[1], int(parts[2]))] = to_ms(b)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}")
    print(f"{'L':>6s} {'heads':>9s} {'queries':>8s} {'condense us':>12s} {'SDPA us':>9s} {'SDPA / condense':>16s}")
    for length in sorted({l for _, l in ours}):
        gen = torch.Generator().manual_seed(2)
        kc = torch.randn(1, 8, 2 * length, 64, generator=gen)
        vc = torch.randn(1, 8, 2 * length, 64, generator=gen)
        k, v = kc[:, :, :length], vc[:, :, :length]
        for case, (heads, queries) in cases.items():
            mine = ours.get((case, length))
            if mine is None:
                continue
            q = torch.randn(1, heads, queries, 64, generator=gen)
            mask = None
            if queries > 1:  # query i sits at position length - queries + i
                rows = torch.arange(queries).unsqueeze(1) + (length - queries)
                mask = torch.arange(length).unsqueeze(0) <= rows
            with torch.no_grad():
                theirs = timeit(lambda: sdpa(q, k, v, attn_mask=mask, enable_gqa=heads != 8))
            print(f"{length:6d} {str(heads) + '/8':>9s} {queries:8d} {mine * 1e3:12.1f} {theirs * 1e3:9.1f} "
                  f"{theirs / mine:16.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/release/bench/bench_attention")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--policies", default="")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--decode", action="store_true", help="compare decode steps instead (BM_attention_decode)")
    args = ap.parse_args()
    ensure_torch()
    import torch

    torch.set_num_threads(args.threads)
    if args.decode:
        decode_comparison(torch, args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    filt = "BM_attention_(fwd|fwdbwd)/(" + (args.policies.replace(",", "|") or ".*") + ")/(" + "|".join(map(str, sizes)) + ")(/|$)"
    benches = run_condense_bench(args.bench, args.threads, filt)
    ours = {}
    for b in benches:
        parts = b["name"].split("/")  # BM_attention_<mode>/<policy>/<T>[/real_time]
        mode, policy, size = parts[0].rsplit("_", 1)[1], parts[1], int(parts[2])
        ours[(policy, size, mode)] = {"ms": to_ms(b), "gflops": b["GFLOP/s"], "density": b["density"],
                                      "skipped": b["skipped"]}
    policies = sorted({p for p, _, _ in ours}, key=lambda p: (p != "causal", p))
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}")
    rows = []
    header = (f"{'policy':26s} {'T':>5s} {'mode':6s} {'dens':>5s} {'condense':>9s} {'GF/s':>6s} "
              f"{'sdpa_c':>8s} {'sdpa_m':>8s} {'flex':>8s} {'naive':>8s} {'x sdpa_m':>8s} {'x flex':>7s} {'x naive':>7s} {'/causal':>7s}")
    print(header)
    for t in sizes:
        for policy in policies:
            theirs = torch_cases(torch, policy, t, not args.no_flex)
            for mode in ("fwd", "fwdbwd"):
                o = ours.get((policy, t, mode))
                if not o:
                    continue
                c = ours.get(("causal", t, mode))
                get = lambda k: theirs.get(f"{k}_{mode}")
                fmt = lambda x: f"{x:8.2f}" if x else f"{'-':>8s}"
                ratio = lambda x: f"{x / o['ms']:7.2f}" if x else f"{'-':>7s}"
                rel = o["ms"] / c["ms"] if c else float("nan")
                print(f"{policy:26s} {t:5d} {mode:6s} {o['density']:5.2f} {o['ms']:9.2f} {o['gflops']:6.1f} "
                      f"{fmt(get('sdpa_causal'))} {fmt(get('sdpa_mask'))} {fmt(get('flex'))} {fmt(get('naive'))} "
                      f"{ratio(get('sdpa_mask'))} {ratio(get('flex'))} {ratio(get('naive'))} {rel:7.2f}", flush=True)
                rows.append({"policy": policy, "T": t, "mode": mode, "condense_ms": o["ms"], "gflops": o["gflops"],
                             "density": o["density"], "skipped": o["skipped"], "torch": theirs})
            if "flex_error" in theirs:
                print(f"  (flex_attention unavailable: {theirs['flex_error']})")
    print("x ...: PyTorch time / condense time (above 1: condense faster). /causal: condense time / its causal time.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
