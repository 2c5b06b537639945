#!/usr/bin/env python3
"""The figures the CUDA issue is judged by, from the Google Benchmark JSON files that
tests/run_gpu_checks.sh writes (attention.json, decode.json, matmul.json, memory.json,
train.json in one folder), as a Markdown summary for docs/results.md:

- attention: forward and backward TFLOP/s of the tensor-core kernels (bf16) per policy, head
  dim and T; the backward alone is (fwd+bwd time - fwd time) with 2.5x the forward's useful
  FLOPs; the deterministic backward (its own dq kernel) next to the default (dq by atomics);
  the causal head-dim-128 T=4096 figures against the targets (300 forward, 200 backward);
- decoding steps: the split-key kernels against the general ones in the same process;
- GEMM: condense's linear against cuBLAS called directly on the same shapes (target 95%);
- memory-bound ops: GB/s against cudaMemcpy in the same process;
- training: GPT-2-small step tokens/s per precision mode.

Standard library only; a missing file skips its section. Usage:
  python3 bench/summarize_gpu_results.py RESULTS_DIR [--out summary.md]
"""
import argparse
import json
import os
import re
import sys

TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def load(folder, name):
    """The iteration runs of one benchmark JSON file (None when it is missing or empty)."""
    path = os.path.join(folder, name)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as f:
        data = json.load(f)
    runs = [b for b in data.get("benchmarks", []) if b.get("run_type", "iteration") == "iteration"]
    for b in runs:
        b["seconds"] = b["real_time"] * TIME_UNITS[b.get("time_unit", "ns")]
    return runs


def base_name(name):
    """The benchmark name without Google Benchmark's suffixes (/real_time, /iterations:N, ...)."""
    return re.sub(r"/(real_time|iterations:\d+|min_time:[0-9.]+)", "", name)


def attention_section(runs):
    # BM_cuda_attention_<fwd|fwdbwd>/<precision>/<policy>/d<D>/<T>
    pattern = re.compile(r"BM_cuda_attention_(fwd|fwdbwd)/(\w+)/(\w+)/d(\d+)/(\d+)$")
    table = {}
    for b in runs:
        m = pattern.match(base_name(b["name"]))
        if not m or b.get("error_occurred"):
            continue
        mode, precision, policy, dim, t = m.group(1), m.group(2), m.group(3), int(m.group(4)), int(m.group(5))
        table[(mode, precision, policy, dim, t)] = b
    lines = ["## Attention (tensor cores, bf16)", "",
             "| policy | D | T | density | fwd TFLOP/s | bwd TFLOP/s | bwd, deterministic | fwd+bwd ms |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []

    def backward_rate(fwd, fwdbwd):
        """TFLOP/s of the backward alone: 2.5x the forward's useful FLOPs over the extra time."""
        if not fwd or not fwdbwd:
            return None
        flops = fwd["TFLOP/s"] * fwd["seconds"]  # in TFLOP
        extra = fwdbwd["seconds"] - fwd["seconds"]
        return 2.5 * flops / extra if extra > 0 else None

    fmt = lambda v: "-" if v is None else f"{v:.3g}"
    keys = sorted({(k[2], k[3], k[4]) for k in table if k[1] == "bf16"})
    for policy, dim, t in keys:
        fwd = table.get(("fwd", "bf16", policy, dim, t))
        both = table.get(("fwdbwd", "bf16", policy, dim, t))
        deterministic = table.get(("fwdbwd", "bf16_deterministic", policy, dim, t))
        bwd, bwd_det = backward_rate(fwd, both), backward_rate(fwd, deterministic)
        density = (fwd or both or {}).get("density")
        density_text = "-" if density is None else "%.3f" % density
        total_ms = "-" if not both else "%.2f" % (both["seconds"] * 1e3)
        lines.append(f"| {policy} | {dim} | {t} | {density_text} | {fmt(fwd and fwd['TFLOP/s'])} | {fmt(bwd)} | "
                     f"{fmt(bwd_det)} | {total_ms} |")
        if policy == "causal" and dim == 128 and t == 4096:
            if fwd:
                verdicts.append(f"- causal d128 T=4096 forward: {fwd['TFLOP/s']:.0f} TFLOP/s (target 300: "
                                f"{'met' if fwd['TFLOP/s'] >= 300 else 'NOT met'})")
            if bwd is not None:
                verdicts.append(f"- causal d128 T=4096 backward: {bwd:.0f} TFLOP/s (target 200: "
                                f"{'met' if bwd >= 200 else 'NOT met'}); deterministic: {fmt(bwd_det)}")
    if not keys:
        lines.append("| (no bf16 runs) | | | | | | | |")
    return lines + [""] + verdicts


def decode_section(runs):
    # BM_cuda_attention_decode/<split_keys|general>/<L>
    pattern = re.compile(r"BM_cuda_attention_decode/(split_keys|general)/(\d+)$")
    table = {}
    for b in runs:
        m = pattern.match(base_name(b["name"]))
        if m and not b.get("error_occurred"):
            table[(m.group(1), int(m.group(2)))] = b
    lines = ["## Decoding step (bf16 cache, 32 query / 8 kv heads, D=128, one query, 8 sequences)", "",
             "| L | split-key us | GB/s | general kernels us | speed-up |", "|---|---|---|---|---|"]
    for length in sorted({k[1] for k in table}):
        split, general = table.get(("split_keys", length)), table.get(("general", length))
        us = lambda b: "-" if not b else "%.1f" % (b["seconds"] * 1e6)
        rate = "-" if not split else "%.0f" % split.get("GB/s", 0)
        ratio = "-" if not (split and general) else "%.1fx" % (general["seconds"] / split["seconds"])
        lines.append(f"| {length} | {us(split)} | {rate} | {us(general)} | {ratio} |")
    return lines


def matmul_section(runs):
    times = {base_name(b["name"]): b for b in runs if not b.get("error_occurred")}
    lines = ["## GEMM: condense linear against cuBLAS called directly", "",
             "| benchmark | shape | condense ms | cuBLAS ms | condense / cuBLAS speed |", "|---|---|---|---|---|"]
    worst = None
    for name, ours in sorted(times.items()):
        if not name.startswith("BM_condense_linear"):
            continue
        theirs = times.get(name.replace("BM_condense_linear", "BM_cublas_direct"))
        if not theirs:
            continue
        ratio = theirs["seconds"] / ours["seconds"]
        worst = ratio if worst is None else min(worst, ratio)
        lines.append(f"| {name} | {ours.get('label', '')} | {ours['seconds'] * 1e3:.3f} | "
                     f"{theirs['seconds'] * 1e3:.3f} | {ratio:.1%} |")
    if worst is not None:
        lines += ["", f"- slowest shape: {worst:.1%} of cuBLAS (target 95%: {'met' if worst >= 0.95 else 'NOT met'})"]
    return lines


def memory_section(runs):
    ok = [b for b in runs if not b.get("error_occurred") and "bytes_per_second" in b]
    copy = next((b for b in ok if base_name(b["name"]).startswith("BM_memcpy")), None)
    lines = ["## Memory-bound ops against cudaMemcpy", "", "| benchmark | GB/s | of cudaMemcpy |", "|---|---|---|"]
    for b in ok:
        rate = b["bytes_per_second"] / 1e9
        share = "-" if not copy else f"{b['bytes_per_second'] / copy['bytes_per_second']:.0%}"
        lines.append(f"| {base_name(b['name'])} | {rate:.0f} | {share} |")
    return lines


def train_section(runs):
    lines = ["## GPT-2-small training step", "", "| mode | tokens/s | peak GiB |", "|---|---|---|"]
    for b in runs:
        if b.get("error_occurred"):
            continue
        lines.append(f"| {b.get('label', base_name(b['name']))} | {b.get('tokens/s', 0):.0f} | "
                     f"{b.get('peak GiB', 0):.2f} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--out", help="also write the summary to this file")
    args = parser.parse_args()
    sections = []
    device = os.path.join(args.folder, "device.txt")
    if os.path.exists(device):
        with open(device) as f:
            sections.append(["Device: " + " ".join(f.read().split("\n")[1:]).strip()])
    for name, section in (("attention.json", attention_section), ("decode.json", decode_section),
                          ("matmul.json", matmul_section),
                          ("memory.json", memory_section), ("train.json", train_section)):
        runs = load(args.folder, name)
        if runs is not None:
            sections.append(section(runs))
    if not sections:
        print(f"no benchmark results in {args.folder}", file=sys.stderr)
        return 1
    text = "\n\n".join("\n".join(s) for s in sections) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
