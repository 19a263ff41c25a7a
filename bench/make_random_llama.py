#!/usr/bin/env python3
"""bench/make_random_llama.py — write a randomly initialised Llama of about 100M
parameters (fp32 safetensors + the Llama-2 tokenizer) for bench/bench_train.sh.

    /work/venv-ref/bin/python bench/make_random_llama.py OUT_DIR

Shape: hidden 768, 12 layers, 12 heads (head_dim 64, no GQA), intermediate 2048,
vocab 32000 (the Llama-2 tokenizer in ../shared/data/tokenizers/llama2), untied
lm_head as Llama-2: 85.0M decoder linear + 2 x 24.6M embedding/lm_head = 134.1M
parameters in all, 109.6M in matmuls. Weights come from transformers' own
initialiser (normal, std = initializer_range 0.02) under torch.manual_seed(0).
The model is written OUTSIDE the repository (never commit weights); when OUT_DIR
already holds a config.json and model.safetensors it is left as it is.

Needs torch and transformers: the reference virtualenv (/work/venv-ref, or
tools/reference/setup_venv.sh).
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_DIR = os.path.join(HERE, "..", "..", "shared", "data", "tokenizers", "llama2")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = os.path.abspath(sys.argv[1])
    repo = os.path.abspath(os.path.join(HERE, ".."))
    if out == repo or out.startswith(repo + os.sep):
        print(f"make_random_llama.py: {out} is inside the repository; write model weights elsewhere",
              file=sys.stderr)
        return 2
    if os.path.exists(os.path.join(out, "config.json")) and os.path.exists(os.path.join(out, "model.safetensors")):
        print(f"make_random_llama.py: {out} exists, kept")
        return 0

    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                      intermediate_size=2048, vocab_size=32000, max_position_embeddings=2048,
                      rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, initializer_range=0.02)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    n = sum(p.numel() for p in model.parameters())
    os.makedirs(out, exist_ok=True)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER_DIR, f), os.path.join(tmp, f))
    with open(os.path.join(tmp, "bench_meta.json"), "w") as fh:
        json.dump({"params": n, "seed": 0, "torch": torch.__version__, "transformers": transformers.__version__}, fh)
    for f in os.listdir(tmp):
        os.replace(os.path.join(tmp, f), os.path.join(out, f))
    os.rmdir(tmp)
    print(f"make_random_llama.py: wrote {out} ({n / 1e6:.1f}M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
