#!/usr/bin/env python3
"""bench/make_random_llama.py — write a randomly initialised Llama (fp32 or
bf16 safetensors + a real tokenizer) for the benchmarks.

    ~/.cache/qlora-train/venv-ref/bin/python bench/make_random_llama.py OUT_DIR [--shape SHAPE]
        [--dtype fp32|bf16] [--device auto|cpu|cuda] [--tokenizers DIR]

SHAPE 134m (default; bench/bench_train.sh): hidden 768, 12 layers, 12 heads
(head_dim 64, no GQA), intermediate 2048, vocab 32000 (the Llama-2 tokenizer in
../shared/data/tokenizers/llama2), untied lm_head as Llama-2: 85.0M decoder
linear + 2 x 24.6M embedding/lm_head = 134.1M parameters in all, 109.6M in
matmuls.

SHAPE llama3.2-1b (bench/bench_generate.sh; meta-llama/Llama-3.2-1B's
config.json): hidden 2048, 16 layers, 32 heads of 64 with 8 KV heads,
intermediate 8192, vocab 128256 (the Llama-3 tokenizer), tied embeddings,
llama3 RoPE scaling (factor 32, theta 500000), 131072 positions: 1.236 B
parameters (0.973 B in the decoder linears, 0.263 B embedding).

SHAPE llama3-8b (bench/bench_gpu_train.sh; meta-llama/Meta-Llama-3-8B's
config.json): hidden 4096, 32 layers, 32 heads of 128 with 8 KV heads,
intermediate 14336, vocab 128256 (the Llama-3 tokenizer), untied lm_head,
rope_theta 500000 (no scaling), 8192 positions: 8.030 B parameters (6.980 B in
the decoder linears, 2 x 0.525 B embedding / lm_head); 16 GB in bf16.

SHAPE tiny (bench_gpu_train.sh --dry-run, a CPU plumbing check): the Llama-3
tokenizer and vocabulary with hidden 64, 2 layers, 4 heads of 16 with 2 KV
heads, intermediate 160, untied lm_head: 16.5M parameters, nearly all
embedding / lm_head.

--dtype bf16 writes bf16 tensors (initialised in bf16: the same distribution,
not the fp32 weights rounded); --device cuda initialises on the GPU (auto: the
GPU when torch.cuda.is_available(), the CPU otherwise), which an 8B shape
needs to be quick. The CPU and the GPU draw different numbers from the same
seed, so a model is reproducible only on the same device type and dtype
(bench_meta.json records both).

Weights come from transformers' own initialiser (normal, std =
initializer_range 0.02) under torch.manual_seed(0). The model is written
OUTSIDE the repository (never commit weights); when OUT_DIR already holds a
config.json and model.safetensors it is left as it is.

Needs torch and transformers: the reference virtualenv
(tools/reference/setup_venv.sh), or the GPU machine's python3.
"""
import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZERS = os.path.join(HERE, "..", "..", "shared", "data", "tokenizers")

# shape -> (tokenizer folder, LlamaConfig arguments)
SHAPES = {
    "134m": ("llama2", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            num_key_value_heads=12, intermediate_size=2048, vocab_size=32000,
                            max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                            hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                            initializer_range=0.02)),
    "llama3.2-1b": ("llama3", dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                                   num_key_value_heads=8, head_dim=64, intermediate_size=8192,
                                   vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
                                   hidden_act="silu", tie_word_embeddings=True, bos_token_id=128000,
                                   eos_token_id=128001, initializer_range=0.02,
                                   rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                    "factor": 32.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 8192})),
    "llama3-8b": ("llama3", dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                                 num_key_value_heads=8, head_dim=128, intermediate_size=14336,
                                 vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
                                 hidden_act="silu", tie_word_embeddings=False, bos_token_id=128000,
                                 eos_token_id=128001, initializer_range=0.02,
                                 rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
    "tiny": ("llama3", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, intermediate_size=160,
                            vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
                            hidden_act="silu", tie_word_embeddings=False, bos_token_id=128000,
                            eos_token_id=128001, initializer_range=0.02,
                            rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
}


def main() -> int:
    ap = argparse.ArgumentParser(description="write a random Llama for the benchmarks")
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="134m")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--tokenizers", default=TOKENIZERS,
                    help="folder of tokenizer folders (llama2/, llama3/); default ../shared/data/tokenizers")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    repo = os.path.abspath(os.path.join(HERE, ".."))
    # inside a git checkout only (the GPU bundle unpacks these scripts beside its work folder)
    if os.path.exists(os.path.join(repo, ".git")) and (out == repo or out.startswith(repo + os.sep)):
        print(f"make_random_llama.py: {out} is inside the repository; write model weights elsewhere",
              file=sys.stderr)
        return 2
    if os.path.exists(os.path.join(out, "config.json")) and os.path.exists(os.path.join(out, "model.safetensors")):
        print(f"make_random_llama.py: {out} exists, kept")
        return 0

    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    tok, kw = SHAPES[a.shape]
    tok_dir = os.path.join(a.tokenizers, tok)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if not os.path.exists(os.path.join(tok_dir, f)):
            print(f"make_random_llama.py: {os.path.join(tok_dir, f)} not found (--tokenizers)", file=sys.stderr)
            return 2
    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    cfg = LlamaConfig(**kw)
    torch.manual_seed(0)
    # Built directly in the target dtype on the target device: an 8B model in
    # fp32 on the CPU would take 32 GB and minutes of normal_() calls.
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model = model.to(dtype)
    n = sum(p.numel() for p in model.parameters())
    os.makedirs(out, exist_ok=True)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="20GB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(tmp, f))
    with open(os.path.join(tmp, "bench_meta.json"), "w") as fh:
        json.dump({"params": n, "seed": 0, "shape": a.shape, "dtype": a.dtype, "init_device": device,
                   "torch": torch.__version__, "transformers": transformers.__version__}, fh)
    for f in os.listdir(tmp):
        os.replace(os.path.join(tmp, f), os.path.join(out, f))
    os.rmdir(tmp)
    print(f"make_random_llama.py: wrote {out} ({a.shape}, {n / 1e6:.1f}M parameters, {a.dtype}, "
          f"initialised on {device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
