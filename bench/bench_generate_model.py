#!/usr/bin/env python3
"""bench/bench_generate_model.py — write a randomly initialised model of the
Llama-3.2-1B shape (fp32 safetensors + the Llama-3 tokenizer) for
bench/bench_generate.sh.

    ~/.cache/qlora-train/venv-ref/bin/python bench/bench_generate_model.py OUT_DIR

Shape (meta-llama/Llama-3.2-1B config.json): hidden 2048, 16 layers, 32 heads
of 64 with 8 KV heads, intermediate 8192, vocab 128256, tied embeddings,
llama3 RoPE scaling (factor 32, theta 500000), 131072 positions: 1.236 B
parameters (0.973 B in the decoder linears, 0.263 B embedding). Weights from
transformers' initialiser (normal, std 0.02) under torch.manual_seed(0). The
model is written OUTSIDE the repository (never commit weights); an OUT_DIR
that already holds config.json and model.safetensors is kept.
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_DIR = os.path.join(HERE, "..", "..", "shared", "data", "tokenizers", "llama3")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = os.path.abspath(sys.argv[1])
    repo = os.path.abspath(os.path.join(HERE, ".."))
    if out == repo or out.startswith(repo + os.sep):
        print(f"bench_generate_model.py: {out} is inside the repository; write weights elsewhere",
              file=sys.stderr)
        return 2
    if os.path.exists(os.path.join(out, "config.json")) and os.path.exists(os.path.join(out, "model.safetensors")):
        print(f"bench_generate_model.py: {out} exists, kept")
        return 0
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=64, intermediate_size=8192, vocab_size=128256, max_position_embeddings=131072,
                      rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True,
                      bos_token_id=128000, eos_token_id=128001, initializer_range=0.02,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192})
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    n = sum(p.numel() for p in model.parameters())
    os.makedirs(out, exist_ok=True)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="20GB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER_DIR, f), os.path.join(tmp, f))
    with open(os.path.join(tmp, "bench_meta.json"), "w") as fh:
        json.dump({"params": n, "seed": 0, "torch": torch.__version__,
                   "transformers": transformers.__version__}, fh)
    for f in os.listdir(tmp):
        os.replace(os.path.join(tmp, f), os.path.join(out, f))
    os.rmdir(tmp)
    print(f"bench_generate_model.py: wrote {out} ({n / 1e9:.3f} B parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
