#!/usr/bin/env python3
"""bench/bench_gguf_model.py — an 8B-shaped random Llama (Llama-3-8B dimensions: hidden 4096,
intermediate 14336, 32 heads / 8 KV heads, vocab 128256, untied) in bf16 safetensors, for
bench/bench_gguf.sh. Only numpy is needed (no torch): values come from an integer hash,
uniform in +-0.0625 (norms ~1). `--layers N` writes the first N layers (32 for the whole 8B:
16 GB; check `df -h` first). Written OUTSIDE the repository; delete it afterwards.

    python3 bench/bench_gguf_model.py OUT_DIR [--layers N]
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOK = os.path.join(HERE, "..", "..", "shared", "data", "tokenizers", "llama3")


def values(seed, n, norm):
    out = np.empty(n, dtype=np.uint16)
    step = 1 << 24
    for s in range(0, n, step):
        i = np.arange(s, min(n, s + step), dtype=np.uint64)
        u = (i * np.uint64(2654435761) + np.uint64(seed * 0x9E3779B9 & 0xFFFFFFFF)) & np.uint64(0xFFFFFFFF)
        u ^= u >> np.uint64(16)
        u = (u * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
        u ^= u >> np.uint64(13)
        v = ((u >> np.uint64(8)).astype(np.int64) - 8388608).astype(np.float32) * np.float32(2.0 ** -27)
        if norm:
            v = v + np.float32(1.0)
        out[s - 0:s - 0 + len(i)] = ((v.view(np.uint32) + np.uint32(0x8000)) >> np.uint32(16)).astype(np.uint16)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=32)
    a = ap.parse_args()
    C, F, H, K, V, L = 4096, 14336, 32, 8, 128256, a.layers
    D = C // H
    shapes = [("model.embed_tokens.weight", (V, C), False)]
    for l in range(L):
        p = f"model.layers.{l}."
        shapes += [(p + "input_layernorm.weight", (C,), True), (p + "post_attention_layernorm.weight", (C,), True),
                   (p + "self_attn.q_proj.weight", (H * D, C), False), (p + "self_attn.k_proj.weight", (K * D, C), False),
                   (p + "self_attn.v_proj.weight", (K * D, C), False), (p + "self_attn.o_proj.weight", (C, H * D), False),
                   (p + "mlp.gate_proj.weight", (F, C), False), (p + "mlp.up_proj.weight", (F, C), False),
                   (p + "mlp.down_proj.weight", (C, F), False)]
    shapes += [("model.norm.weight", (C,), True), ("lm_head.weight", (V, C), False)]
    os.makedirs(a.out, exist_ok=True)
    header, off = {}, 0
    for name, shp, _ in shapes:
        n = int(np.prod(shp))
        header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + 2 * n]}
        off += 2 * n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for k, (name, shp, norm) in enumerate(shapes):
            f.write(values(k + 1, int(np.prod(shp)), norm).tobytes())
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=C, intermediate_size=F,
               num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=K, vocab_size=V,
               max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
               bos_token_id=128000, eos_token_id=128001, hidden_act="silu", torch_dtype="bfloat16")
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOK, fn), os.path.join(a.out, fn))
    print(f"wrote {a.out}: {L} layers, {off / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
