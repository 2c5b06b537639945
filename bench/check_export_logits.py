#!/usr/bin/env python3
"""Cross-checks examples/export_logits against an independent forward pass.

Reads the checkpoint written by examples/train_tiny_lm (float or, with --dtype bf16,
bfloat16 weights) and the file written by
examples/export_logits with nothing but the standard library (the safetensors header is
parsed by hand; no numpy, torch or safetensors package), recomputes the logits of the
GPT-2-style model (learned positions, LayerNorm, GELU MLP, biases, tied embeddings) in
double precision, and compares them with the exported float32 logits.

    python3 bench/check_export_logits.py [CHECKPOINT] [EXPORT]

Defaults: train_tiny_lm.safetensors and export_logits.safetensors. Exit status 0 when the
largest difference is below 1e-4 * max(1, max |logit|), 1 otherwise.
"""

import array
import json
import math
import operator
import struct
import sys

DTYPES = {"F32": ("f", 4), "F64": ("d", 8), "I64": ("q", 8), "I32": ("i", 4), "BF16": ("H", 2), "F16": ("e", 2)}


def bf16_to_float(bits):
    """The float value of each bfloat16 bit pattern (the upper half of a float32)."""
    widened = array.array("I", (b << 16 for b in bits))
    return array.array("f", widened.tobytes()).tolist()


def read_safetensors(path):
    """Returns ({name: (shape, flat list)}, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    data = raw[8 + n :]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        code, size = DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        if code == "e":  # float16: array has no such type code; struct decodes it
            tensors[name] = (entry["shape"], [v for (v,) in struct.iter_unpack("<e", data[begin:end])])
            continue
        values = array.array(code)
        values.frombytes(data[begin:end])
        if sys.byteorder != "little":
            values.byteswap()
        tensors[name] = (entry["shape"], bf16_to_float(values) if entry["dtype"] == "BF16" else values.tolist())
    return tensors, metadata


def rows(flat, n_out, n_in):
    return [flat[o * n_in : (o + 1) * n_in] for o in range(n_out)]


def linear(x, w_rows, bias):
    out = [sum(map(operator.mul, row, x)) for row in w_rows]
    return [a + b for a, b in zip(out, bias)] if bias is not None else out


def layer_norm(x, weight, bias, eps):
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)
    inv = 1.0 / math.sqrt(var + eps)
    return [(v - mean) * inv * w + b for v, w, b in zip(x, weight, bias)]


def gelu(x, approximation):
    if approximation == "tanh":
        c = math.sqrt(2.0 / math.pi)
        return [0.5 * v * (1.0 + math.tanh(c * (v + 0.044715 * v * v * v))) for v in x]
    return [0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x]


def forward(params, o, ids):
    """Logits [T][V] of a GPT-2-style DecoderLM for the token ids."""
    d, H = o["d_model"], o["n_heads"]
    Hkv = o["n_kv_heads"] or H
    Dh = o["head_dim"] or d // H
    V, eps = o["vocab_size"], o["norm_eps"]

    def p(name):
        return params["model." + name][1]

    def mat(name, n_out, n_in):
        return rows(p(name), n_out, n_in)

    embed = mat("embed_tokens.weight", V, d)
    pos = mat("embed_positions.weight", o["max_len"], d)
    x = [[a + b for a, b in zip(embed[t], pos[i])] for i, t in enumerate(ids)]
    T = len(ids)
    for layer in range(o["n_layers"]):
        pre = f"layers.{layer}."
        q_w, k_w = mat(pre + "attn.q_proj.weight", H * Dh, d), mat(pre + "attn.k_proj.weight", Hkv * Dh, d)
        v_w, o_w = mat(pre + "attn.v_proj.weight", Hkv * Dh, d), mat(pre + "attn.o_proj.weight", d, H * Dh)
        h = [layer_norm(v, p(pre + "attn_norm.weight"), p(pre + "attn_norm.bias"), eps) for v in x]
        q = [linear(v, q_w, p(pre + "attn.q_proj.bias")) for v in h]
        k = [linear(v, k_w, p(pre + "attn.k_proj.bias")) for v in h]
        v_ = [linear(v, v_w, p(pre + "attn.v_proj.bias")) for v in h]
        scale = 1.0 / math.sqrt(Dh)
        attn_out = []
        for i in range(T):
            out = []
            for head in range(H):
                kv = head // (H // Hkv)
                qi = q[i][head * Dh : (head + 1) * Dh]
                scores = [scale * sum(map(operator.mul, qi, k[j][kv * Dh : (kv + 1) * Dh])) for j in range(i + 1)]
                m = max(scores)
                e = [math.exp(s - m) for s in scores]
                z = sum(e)
                out += [sum(e[j] / z * v_[j][kv * Dh + c] for j in range(i + 1)) for c in range(Dh)]
            attn_out.append(linear(out, o_w, p(pre + "attn.o_proj.bias")))
        x = [[a + b for a, b in zip(xi, ai)] for xi, ai in zip(x, attn_out)]
        up_w = mat(pre + "mlp.up_proj.weight", o["d_ff"], d)
        down_w = mat(pre + "mlp.down_proj.weight", d, o["d_ff"])
        h = [layer_norm(v, p(pre + "mlp_norm.weight"), p(pre + "mlp_norm.bias"), eps) for v in x]
        mlp = [linear(gelu(linear(v, up_w, p(pre + "mlp.up_proj.bias")), o["gelu"]), down_w, p(pre + "mlp.down_proj.bias"))
               for v in h]
        x = [[a + b for a, b in zip(xi, mi)] for xi, mi in zip(x, mlp)]
    h = [layer_norm(v, p("norm.weight"), p("norm.bias"), eps) for v in x]
    return [linear(v, embed, None) for v in h]


def main():
    ckpt_path = sys.argv[1] if len(sys.argv) > 1 else "train_tiny_lm.safetensors"
    export_path = sys.argv[2] if len(sys.argv) > 2 else "export_logits.safetensors"
    params, meta = read_safetensors(ckpt_path)
    o = json.loads(meta["decoder_lm_options"])
    expected = {"norm": "layer_norm", "positions": "learned", "mlp": "gelu", "bias": True, "tie_embeddings": True}
    for key, value in expected.items():
        if o[key] != value:
            sys.exit(f"{ckpt_path}: only GPT-2-style models are supported ({key} is {o[key]!r}, expected {value!r})")
    exported, _ = read_safetensors(export_path)
    (_, T), ids = exported["input_ids"]
    shape, logits = exported["logits"]
    V = o["vocab_size"]
    if shape != [1, T, V]:
        sys.exit(f"{export_path}: logits have shape {shape}, expected [1, {T}, {V}]")
    ref = forward(params, o, ids)
    diff = max(abs(ref[t][c] - logits[t * V + c]) for t in range(T) for c in range(V))
    scale = max(abs(v) for v in logits)
    tol = 1e-4 * max(1.0, scale)
    print(f"{T} tokens x {V} logits: max |python - condense| = {diff:.3g} (max |logit| {scale:.3g}, tolerance {tol:.3g})")
    if diff > tol:
        print("MISMATCH")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
