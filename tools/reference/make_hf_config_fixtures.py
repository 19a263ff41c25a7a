#!/usr/bin/env python3
"""Golden fixtures for model/hf_config.c: config.json files and the values
transformers resolves from them.

Run with the reference virtualenv (transformers 5.x, torch; e.g. /work/venv-ref,
see tools/reference/setup_venv.sh where present):

    /work/venv-ref/bin/python tools/reference/make_hf_config_fixtures.py

For every case it writes tests/golden/hf_config/<case>/config.json (the input)
and tests/golden/hf_config/<case>/expected.json (what transformers makes of it),
plus tests/golden/hf_config/index.json listing the cases. Two kinds of input:

* "saved" cases: a LlamaConfig / MistralConfig / Qwen2Config built here and
  written with save_pretrained (the transformers v5 layout: `rope_parameters`,
  `dtype`, `layer_types`).
* "legacy" cases: config.json text in the older layout found on the Hub
  (`rope_scaling` with "type" or "rope_type", top-level `rope_theta`,
  `torch_dtype`, keys left out so that class defaults apply). The text is an
  input only; the expected values still come from transformers.

Expected values are read back through AutoConfig.from_pretrained, and the
architecture facts (head_dim, biases per projection, tied lm_head, sliding
window per layer) from a model instantiated on the meta device, so they are
what transformers' modeling code actually builds, not what the config says.
The real config of /work/shared/data/stories260K gets an expected.json only
(its config.json stays in the shared data folder).

For `qlora-train inspect` (tests/train/test_inspect.sh) it also writes
tests/golden/hf_config/models/: a tiny Llama quantized by bitsandbytes (nf4,
double quant) and saved by transformers as a sharded checkpoint, and for it
and stories260K an inspect_expected.txt: one line per tensor
("name DTYPE [shape] bytes", plus "nf4 (4-bit), double quant, blocksize B,
DTYPE [shape]" for 4-bit weights, read from their quant_state JSON by Python)
and the totals, whose parameter count is the unquantized model's
num_parameters() from transformers.
"""
import json
import os
import platform
import shutil
import sys
import tempfile

import torch
import transformers
from transformers import (AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig,
                          LlamaConfig, MistralConfig, Qwen2Config)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (tools/reference/common.py: library versions)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "hf_config")
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "stories260K"))

TINY = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, vocab_size=512)


def versions():
    v = dict(common.library_versions())
    v["python"] = platform.python_version()
    return v


def saved_cases():
    """(name, config object) pairs written with save_pretrained."""
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                             bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16,
                             llm_int8_skip_modules=["lm_head"])
    llama_bnb = LlamaConfig(**TINY, num_attention_heads=4, num_key_value_heads=2, dtype="bfloat16")
    llama_bnb.quantization_config = bnb
    bnb_fp4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4",
                                 bnb_4bit_compute_dtype=torch.float16,
                                 bnb_4bit_quant_storage=torch.bfloat16)
    mistral_fp4 = MistralConfig(**TINY, num_attention_heads=8, num_key_value_heads=4,
                                sliding_window=None, dtype="float16")
    mistral_fp4.quantization_config = bnb_fp4
    return [
        ("llama_default", LlamaConfig(**TINY, num_attention_heads=8)),
        # Llama-3.1 style: llama3 RoPE, GQA, tied embeddings, eos list.
        ("llama3_rope_gqa_tied", LlamaConfig(
            **dict(TINY, num_hidden_layers=3, vocab_size=128256), num_attention_heads=8,
            num_key_value_heads=2, max_position_embeddings=16384, tie_word_embeddings=True, rms_norm_eps=1e-5,
            bos_token_id=128000, eos_token_id=[128001, 128008, 128009], dtype="bfloat16",
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192})),
        # head_dim != hidden/heads, linear RoPE, biases everywhere, untied.
        ("llama_linear_headdim_bias", LlamaConfig(
            **TINY, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
            attention_bias=True, mlp_bias=True, dtype="float16",
            rope_parameters={"rope_type": "linear", "rope_theta": 20000.0, "factor": 4.0})),
        ("mistral_swa_gqa", MistralConfig(
            **TINY, num_attention_heads=8, num_key_value_heads=2, sliding_window=128,
            max_position_embeddings=4096, dtype="bfloat16")),
        ("mistral_headdim_nowindow", MistralConfig(
            **TINY, num_attention_heads=8, num_key_value_heads=8, head_dim=16,
            sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        ("qwen2_tied_gqa", Qwen2Config(
            **dict(TINY, vocab_size=151936), num_attention_heads=8, num_key_value_heads=2,
            tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645, dtype="bfloat16",
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        # Sliding window active on layers >= max_window_layers.
        ("qwen2_swa", Qwen2Config(
            **dict(TINY, num_hidden_layers=3), num_attention_heads=4, num_key_value_heads=4,
            use_sliding_window=True, sliding_window=32, max_window_layers=1)),
        ("llama_bnb_nf4_dq", llama_bnb),
        ("mistral_bnb_fp4", mistral_fp4),
    ]


def legacy_cases():
    """(name, config.json dict) in the transformers 4.x / Hub layout."""
    base = dict(TINY)
    return [
        # A Llama-3.1 config.json as transformers 4.4x wrote it.
        ("legacy_llama31", dict(base, vocab_size=128256, architectures=["LlamaForCausalLM"], model_type="llama",
                                num_attention_heads=8, num_key_value_heads=2, hidden_act="silu",
                                max_position_embeddings=131072, rms_norm_eps=1e-5,
                                rope_theta=500000.0, bos_token_id=128000,
                                eos_token_id=[128001, 128008, 128009],
                                rope_scaling={"factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 8192,
                                              "rope_type": "llama3"},
                                tie_word_embeddings=False, torch_dtype="bfloat16",
                                attention_bias=False, mlp_bias=False)),
        # Old spelling "type", no rope_theta (default 10000).
        ("legacy_linear_type", dict(base, model_type="llama", num_attention_heads=8,
                                    rope_scaling={"type": "linear", "factor": 2.0},
                                    torch_dtype="float16")),
        # llama3 without original_max_position_embeddings: transformers takes
        # max_position_embeddings.
        ("legacy_llama3_no_orig", dict(base, model_type="llama", num_attention_heads=8,
                                       max_position_embeddings=4096, rope_theta=500000.0,
                                       rope_scaling={"rope_type": "llama3", "factor": 4.0,
                                                     "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0})),
        # Only the sizes: class defaults (Mistral: 8 kv heads, window 4096, eos 2).
        ("minimal_mistral", dict(base, model_type="mistral", num_attention_heads=8)),
        # Only the sizes: Qwen2 defaults (32 kv heads, no window, no bos/eos).
        ("minimal_qwen2", dict(base, hidden_size=128, model_type="qwen2", num_attention_heads=32)),
        # Only the sizes: Llama defaults (kv heads = heads, bos 1, eos 2).
        ("minimal_llama", dict(base, model_type="llama", num_attention_heads=16)),
        # Qwen2 with a window that use_sliding_window=false switches off, and
        # attention_bias in the file (Qwen2 ignores it: q/k/v always have bias).
        ("qwen2_window_off", dict(base, model_type="qwen2", num_attention_heads=4,
                                  num_key_value_heads=2, use_sliding_window=False,
                                  sliding_window=4096, max_window_layers=1,
                                  attention_bias=False, torch_dtype="float32")),
        # A bare bitsandbytes block: BitsAndBytesConfig defaults fill the rest
        # (fp4, no double quant, fp32 compute, uint8 storage).
        ("legacy_bnb_minimal", dict(base, model_type="llama", num_attention_heads=8,
                                    torch_dtype="float16",
                                    quantization_config={"quant_method": "bitsandbytes",
                                                         "load_in_4bit": True})),
    ]


def expected_of(config_dir):
    cfg = AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    layers = model.model.layers
    attn = layers[0].self_attn
    mlp = layers[0].mlp
    rp = dict(cfg.rope_parameters)
    rope = {"type": rp["rope_type"], "theta": float(rp["rope_theta"])}
    if rp["rope_type"] in ("linear", "llama3"):
        rope["factor"] = float(rp["factor"])
    if rp["rope_type"] == "llama3":
        rope["low_freq_factor"] = float(rp["low_freq_factor"])
        rope["high_freq_factor"] = float(rp["high_freq_factor"])
        rope["original_max_position_embeddings"] = int(rp["original_max_position_embeddings"])
    # What each layer's attention mask uses (modeling_mistral: config.sliding_window
    # for every layer; modeling_qwen2: self_attn.sliding_window per layer).
    windows = []
    for layer in layers:
        w = getattr(layer.self_attn, "sliding_window", cfg.sliding_window
                    if cfg.model_type == "mistral" else None)
        windows.append(w)
    eos = cfg.eos_token_id
    eos = [] if eos is None else (list(eos) if isinstance(eos, (list, tuple)) else [eos])
    exp = {
        "model_type": cfg.model_type,
        "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": attn.config.num_key_value_heads,
        "head_dim": attn.head_dim,
        "intermediate_size": mlp.intermediate_size,
        "num_hidden_layers": len(layers),
        "vocab_size": model.lm_head.out_features,
        "rms_norm_eps": float(model.model.norm.variance_epsilon),
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope": rope,
        "tie_word_embeddings": model.lm_head.weight is model.model.embed_tokens.weight,
        "q_bias": attn.q_proj.bias is not None,
        "k_bias": attn.k_proj.bias is not None,
        "v_bias": attn.v_proj.bias is not None,
        "o_bias": attn.o_proj.bias is not None,
        "mlp_bias": mlp.gate_proj.bias is not None,
        "hidden_act": cfg.hidden_act,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_ids": eos,
        "dtype": None if cfg.dtype is None else str(cfg.dtype).replace("torch.", ""),
        "layer_sliding_window": windows,
        "quantization": None,
    }
    qc = getattr(cfg, "quantization_config", None)
    if qc is not None:
        b = BitsAndBytesConfig.from_dict(dict(qc))
        exp["quantization"] = {
            "quant_method": str(b.quant_method.value if hasattr(b.quant_method, "value") else b.quant_method),
            "load_in_4bit": b.load_in_4bit,
            "load_in_8bit": b.load_in_8bit,
            "bnb_4bit_quant_type": b.bnb_4bit_quant_type,
            "bnb_4bit_use_double_quant": b.bnb_4bit_use_double_quant,
            "bnb_4bit_compute_dtype": str(b.bnb_4bit_compute_dtype).replace("torch.", ""),
            "bnb_4bit_quant_storage": str(b.bnb_4bit_quant_storage).replace("torch.", ""),
            "llm_int8_skip_modules": b.llm_int8_skip_modules,
        }
    # Sanity: the architecture is what the modeling code built.
    assert attn.q_proj.out_features == cfg.num_attention_heads * attn.head_dim
    return exp


def inspect_lines(model_dir, n_params):
    """Expected `inspect` lines of a model directory, from the safetensors library."""
    from safetensors import safe_open
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    sizes = {"F32": 4, "BF16": 2, "F16": 2, "U8": 1, "I64": 8}
    tensors = {}
    for fn in files:
        with safe_open(os.path.join(model_dir, fn), "pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                tensors[k] = (sl.get_dtype(), sl.get_shape(), f.get_tensor(k))
    lines = []
    total = 0
    for name in sorted(tensors):
        dt, shape, t = tensors[name]
        nbytes = sizes[dt] * int(torch.tensor(shape).prod().item() if shape else 1)
        total += nbytes
        line = "%s %s [%s] %d" % (name, dt, ", ".join(str(d) for d in shape), nbytes)
        for kind in ("nf4", "fp4"):
            qs = tensors.get(name + ".quant_state.bitsandbytes__" + kind)
            if qs is not None:
                st = json.loads(bytes(qs[2].tolist()).decode("utf-8"))
                line += " %s (4-bit), %s, blocksize %d, %s [%s]" % (
                    st["quant_type"], "double quant" if "nested_blocksize" in st else "no double quant",
                    st["blocksize"], st["dtype"], ", ".join(str(d) for d in st["shape"]))
        lines.append(line)
    lines.append("total: %d tensors, %d bytes" % (len(tensors), total))
    lines.append("%d parameters" % n_params)
    return lines


def make_models():
    """tests/golden/hf_config/models/: checkpoints for the inspect test."""
    out = os.path.join(OUT, "models")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64, dtype="bfloat16")
    fp = LlamaForCausalLM(cfg).to(torch.bfloat16)
    n_params = fp.num_parameters()
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    d = os.path.join(out, "llama_nf4_sharded")
    with tempfile.TemporaryDirectory() as tmp:
        fp.save_pretrained(tmp)
        q = LlamaForCausalLM.from_pretrained(tmp, quantization_config=bnb, device_map="cpu")
        q.save_pretrained(d, max_shard_size="16KB")
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json")), "expected a sharded save"
    for junk in ("generation_config.json",):
        if os.path.exists(os.path.join(d, junk)):
            os.remove(os.path.join(d, junk))
    with open(os.path.join(d, "inspect_expected.txt"), "w") as f:
        f.write("\n".join(inspect_lines(d, n_params)) + "\n")
    # stories260K: expected listing only (the model stays in the shared folder).
    s = os.path.join(out, "stories260K")
    os.makedirs(s)
    n = AutoModelForCausalLM.from_pretrained(SHARED).num_parameters()
    with open(os.path.join(s, "inspect_expected.txt"), "w") as f:
        f.write("\n".join(inspect_lines(SHARED, n)) + "\n")


def write_expected(case_dir, exp, source):
    exp = dict(exp)
    exp["source"] = source
    exp["versions"] = versions()
    with open(os.path.join(case_dir, "expected.json"), "w") as f:
        json.dump(exp, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    if os.path.isdir(OUT):
        for name in os.listdir(OUT):
            p = os.path.join(OUT, name)
            if os.path.isdir(p) and os.path.exists(os.path.join(p, "expected.json")):
                shutil.rmtree(p)
    os.makedirs(OUT, exist_ok=True)
    names = []
    for name, cfg in saved_cases():
        d = os.path.join(OUT, name)
        cfg.save_pretrained(d)
        write_expected(d, expected_of(d), "save_pretrained of %s" % type(cfg).__name__)
        names.append(name)
    for name, text in legacy_cases():
        d = os.path.join(OUT, name)
        os.makedirs(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(text, f, indent=2)
            f.write("\n")
        write_expected(d, expected_of(d), "hand-written legacy config.json read by AutoConfig")
        names.append(name)
    # The real stories260K config: expected values only.
    d = os.path.join(OUT, "stories260K")
    os.makedirs(d)
    write_expected(d, expected_of(SHARED), "data/stories260K/config.json read by AutoConfig")
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump({"cases": names, "shared_cases": {"stories260K": "data/stories260K"},
                   "versions": versions()}, f, indent=2)
        f.write("\n")
    make_models()
    common.write_meta("hf_config", "hf_config", {"script": "tools/reference/make_hf_config_fixtures.py",
                                                 "cases": names + ["stories260K", "models/llama_nf4_sharded",
                                                                   "models/stories260K"]})
    print("wrote %d cases + stories260K + models/ to %s" % (len(names), OUT))


if __name__ == "__main__":
    main()
