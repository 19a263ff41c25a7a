#!/usr/bin/env python3
"""Golden fixtures for model/hf_config.c: config.json files and the values
transformers resolves from them.

Run with the reference virtualenv (transformers 5.24, torch; e.g. /work/venv-ref
or ~/.cache/qlora-train/venv-ref, see tools/reference/setup_venv.sh where present):

    ~/.cache/qlora-train/venv-ref/bin/python tools/reference/make_hf_config_fixtures.py

For every case it writes tests/golden/hf_config/<case>/config.json (the input)
and tests/golden/hf_config/<case>/expected.json (what transformers makes of it),
plus tests/golden/hf_config/index.json listing the cases. Two kinds of input:

* "saved" cases: a LlamaConfig / MistralConfig / Qwen2Config / Qwen3Config /
  Gemma2Config / Gemma3TextConfig / Gemma3Config / Phi3Config built here and
  written with save_pretrained (the transformers v5 layout: `rope_parameters`,
  `dtype`, `layer_types`).
* "legacy" cases: config.json text in the older layout found on the Hub
  (`rope_scaling` with "type" or "rope_type", top-level `rope_theta`,
  `torch_dtype`, keys left out so that class defaults apply). The text is an
  input only; the expected values still come from transformers.

Expected values are read back through AutoConfig.from_pretrained, and the
architecture facts (head_dim, biases per projection, fused projections, q/k
norms, sandwich norms, (1 + weight) norms, embedding scale, score scale,
soft-caps, tied lm_head, sliding window per layer) from a model instantiated on
the meta device, so they are what transformers' modeling code actually builds,
not what the config says. For models small enough, the model is also built on
the CPU and saved with save_pretrained, and the prefix of the saved
embed_tokens.weight (the decoder's weight prefix: "model.", or
"language_model.model." for a Gemma3ForConditionalGeneration, which
save_pretrained writes in the original checkpoint layout) and whether
lm_head.weight was written are recorded.

"unsupported" cases are configs transformers loads (the expected.json records
what it resolves) but qlora-train refuses: expected.json holds "expect_error"
(the status) and "expect_message" (a substring of the message).
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
from transformers import (AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig, Gemma2Config,
                          Gemma3Config, Gemma3TextConfig, GenerationConfig, LlamaConfig, MistralConfig,
                          Phi3Config, Qwen2Config, Qwen3Config)

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
        # Qwen3 class defaults: head_dim 128 (not hidden/heads), no window, no bias.
        ("qwen3_default", Qwen3Config(**TINY, num_attention_heads=4, num_key_value_heads=2)),
        # Window on layers >= max_window_layers, q/k/v/o biases, tied, theta 1e6.
        ("qwen3_swa_bias", Qwen3Config(
            **dict(TINY, num_hidden_layers=3, vocab_size=151936), num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, use_sliding_window=True, sliding_window=32, max_window_layers=1, attention_bias=True,
            tie_word_embeddings=True, eos_token_id=151645, dtype="bfloat16",
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        # Gemma2: sliding on even layers, softcaps 50 / 30, query_pre_attn_scalar != head_dim.
        ("gemma2_tiny", Gemma2Config(
            **dict(TINY, num_hidden_layers=3), num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            query_pre_attn_scalar=24, sliding_window=32, dtype="bfloat16")),
        # Gemma3 text, saved in the v5 layout (rope_parameters per layer type).
        ("gemma3_text_saved", Gemma3TextConfig(
            **dict(TINY, num_hidden_layers=7), num_attention_heads=4, num_key_value_heads=1, head_dim=32,
            sliding_window=16, sliding_window_pattern=3, rope_local_base_freq=20000.0, rope_theta=500000.0,
            rope_scaling={"rope_type": "linear", "factor": 8.0}, query_pre_attn_scalar=32,
            final_logit_softcapping=30.0, dtype="bfloat16")),
        # Gemma3ForConditionalGeneration: the text model inside a multimodal config.
        ("gemma3_mm_saved", Gemma3Config(
            text_config=dict(TINY, num_hidden_layers=4, vocab_size=300, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, sliding_window=8, sliding_window_pattern=2,
                             rope_scaling={"rope_type": "linear", "factor": 4.0}),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=28, patch_size=14),
            mm_tokens_per_image=4, boi_token_index=297, eoi_token_index=298, image_token_index=299,
            dtype="bfloat16")),
        # Phi3: fused qkv / gate_up, window on every layer, Phi3Config token ids.
        ("phi3_swa", Phi3Config(
            **dict(TINY, vocab_size=32064), num_attention_heads=4, num_key_value_heads=2, sliding_window=32,
            dtype="bfloat16")),
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
        # Qwen3 sizes only (kv heads given: the default 32 does not divide 4 heads):
        # head_dim 128, max_position_embeddings 32768, no bos/eos.
        ("minimal_qwen3", dict(base, model_type="qwen3", num_attention_heads=4, num_key_value_heads=4)),
        # Gemma2 as on the Hub: both hidden_act and hidden_activation, softcaps null.
        ("legacy_gemma2_nocap", dict(base, model_type="gemma2", num_attention_heads=4, num_key_value_heads=4,
                                     head_dim=16, hidden_act="gelu_pytorch_tanh",
                                     hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=None,
                                     final_logit_softcapping=None, attention_bias=True, rope_theta=10000.0,
                                     torch_dtype="float32")),
        # Gemma3 text as on the Hub (gemma-3-1b style): sliding_window_pattern,
        # rope_local_base_freq, linear rope_scaling on full attention, no layer_types.
        ("legacy_gemma3_text", dict(base, model_type="gemma3_text", num_hidden_layers=7,
                                    num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                                    query_pre_attn_scalar=256, sliding_window=16, sliding_window_pattern=3,
                                    rope_theta=1000000.0, rope_local_base_freq=10000.0,
                                    rope_scaling={"rope_type": "linear", "factor": 8.0},
                                    torch_dtype="bfloat16", eos_token_id=[1, 106])),
        # A gemma-3-4b style multimodal config: a sparse text_config (Gemma3TextConfig
        # defaults: 8 heads, 4 kv heads, head_dim 256, vocab 262208), token ids at top level.
        ("legacy_gemma3_mm", {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                              "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
                              "eos_token_id": [1, 106], "mm_tokens_per_image": 256, "torch_dtype": "bfloat16",
                              "text_config": {"hidden_size": 64, "intermediate_size": 172,
                                              "model_type": "gemma3_text", "num_hidden_layers": 7,
                                              "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                                              "sliding_window": 16},
                              "vision_config": {"hidden_size": 32, "image_size": 28, "intermediate_size": 64,
                                                "model_type": "siglip_vision_model", "num_attention_heads": 2,
                                                "num_hidden_layers": 1, "patch_size": 14,
                                                "vision_use_head": False}}),
        # Phi3 as on the Hub, no window (null).
        ("legacy_phi3", dict(base, vocab_size=32064, model_type="phi3", num_attention_heads=8,
                             num_key_value_heads=8, rope_theta=10000.0, rope_scaling=None, sliding_window=None,
                             torch_dtype="bfloat16", bos_token_id=1, eos_token_id=32000, pad_token_id=32000)),
    ]


def unsupported_cases():
    """(name, config.json dict, status, message substring): transformers loads them, we refuse."""
    base = dict(TINY, vocab_size=32064, model_type="phi3", num_attention_heads=4)
    return [
        # Phi-4-mini: rotary embeddings on 3/4 of each head.
        ("phi3_partial_rotary", dict(base, partial_rotary_factor=0.75), "unsupported",
         "partial rotary embeddings (phi-4-mini) are not supported"),
        # Phi-3-mini-128k: longrope (short/long factors of head_dim / 2 entries).
        ("phi3_longrope", dict(base, max_position_embeddings=131072, original_max_position_embeddings=4096,
                               rope_scaling={"type": "longrope", "short_factor": [1.0] * 8,
                                             "long_factor": [2.0] * 8}),
         "unsupported", "key 'rope_scaling.type': rope type 'longrope' is not supported"),
        # The older spelling "su" that Phi3Config maps to longrope.
        ("phi3_su", dict(base, rope_scaling={"type": "su", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
                                             "original_max_position_embeddings": 4096}),
         "unsupported", "key 'rope_scaling.type': rope type 'su' is not supported"),
    ]


def rope_of(rp):
    """The rope dict of one attention kind as qlora-train records it."""
    rope = {"type": rp["rope_type"], "theta": float(rp["rope_theta"])}
    if rp["rope_type"] in ("linear", "llama3"):
        rope["factor"] = float(rp["factor"])
    if rp["rope_type"] == "llama3":
        rope["low_freq_factor"] = float(rp["low_freq_factor"])
        rope["high_freq_factor"] = float(rp["high_freq_factor"])
        rope["original_max_position_embeddings"] = int(rp["original_max_position_embeddings"])
    return rope


def norm_plus_one(norm):
    """Whether an RMSNorm of this class multiplies by (1 + weight): run a fresh
    one with a zero weight on the CPU (the model itself is on the meta device)."""
    n = type(norm)(4, eps=1e-6)
    with torch.no_grad():
        n.weight.zero_()
        y = n(torch.ones(1, 4))
    return bool(y.abs().sum() > 0)


def saved_layout(cfg):
    """(weight prefix, lm_head.weight written) of a save_pretrained checkpoint,
    from the key of the saved embed_tokens.weight; None for models too large
    to build here or quantized ones."""
    from safetensors import safe_open
    if getattr(cfg, "quantization_config", None) is not None:
        return None
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    if model.num_parameters() > 64_000_000:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        keys = []
        for fn in sorted(os.listdir(tmp)):
            if fn.endswith(".safetensors"):
                with safe_open(os.path.join(tmp, fn), "pt") as f:
                    keys += list(f.keys())
    emb = [k for k in keys if k.endswith("embed_tokens.weight")]
    assert len(emb) == 1, emb
    return emb[0][: -len("embed_tokens.weight")], "lm_head.weight" in keys


ARCH = {"gemma3_text": "gemma3"}  # qlora-train's arch name of a model_type


def expected_of(config_dir):
    cfg = AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    multimodal = cfg.model_type == "gemma3"
    tcfg = cfg.get_text_config(decoder=True)
    decoder = model.model.language_model if multimodal else model.model
    layers = decoder.layers
    attn = layers[0].self_attn
    mlp = layers[0].mlp
    gemma = tcfg.model_type in ("gemma2", "gemma3_text")
    rp = dict(tcfg.rope_parameters)
    rope_local = None
    if "full_attention" in rp or "sliding_attention" in rp:  # per layer type (gemma3)
        rope = rope_of(rp["full_attention"])
        rope_local = rope_of(rp["sliding_attention"])
    else:
        rope = rope_of(rp)
    # What each layer's attention mask uses (modeling_mistral / modeling_phi3:
    # config.sliding_window for every layer; qwen2/qwen3/gemma: self_attn.sliding_window per layer).
    windows = []
    for layer in layers:
        w = getattr(layer.self_attn, "sliding_window", tcfg.sliding_window
                    if tcfg.model_type in ("mistral", "phi3") else None)
        windows.append(w)
    # Token ids: a multimodal config's generation defaults (GenerationConfig.from_model_config:
    # the outer config first, then its text_config).
    ids = GenerationConfig.from_model_config(cfg) if multimodal else tcfg
    eos = ids.eos_token_id
    eos = [] if eos is None else (list(eos) if isinstance(eos, (list, tuple)) else [eos])
    fused_qkv = hasattr(attn, "qkv_proj")
    fused_gate_up = hasattr(mlp, "gate_up_proj")
    q = attn.qkv_proj if fused_qkv else attn.q_proj
    k = attn.qkv_proj if fused_qkv else attn.k_proj
    v = attn.qkv_proj if fused_qkv else attn.v_proj
    gate = mlp.gate_up_proj if fused_gate_up else mlp.gate_proj
    embed = decoder.embed_tokens
    dt = getattr(cfg, "dtype", None) or getattr(tcfg, "dtype", None)
    exp = {
        "model_type": ARCH.get(cfg.model_type, cfg.model_type),
        "hidden_size": tcfg.hidden_size,
        "num_attention_heads": tcfg.num_attention_heads,
        "num_key_value_heads": attn.config.num_key_value_heads,
        "head_dim": attn.head_dim,
        "intermediate_size": down_in(mlp),
        "num_hidden_layers": len(layers),
        "vocab_size": model.lm_head.out_features,
        "rms_norm_eps": float(decoder.norm.variance_epsilon if hasattr(decoder.norm, "variance_epsilon")
                              else decoder.norm.eps),
        "max_position_embeddings": tcfg.max_position_embeddings,
        "rope": rope,
        "rope_local": rope_local,
        "tie_word_embeddings": model.lm_head.weight is embed.weight,
        "q_bias": q.bias is not None,
        "k_bias": k.bias is not None,
        "v_bias": v.bias is not None,
        "o_bias": attn.o_proj.bias is not None,
        "mlp_bias": gate.bias is not None,
        # The activation the MLP applies (gemma: hidden_activation; hidden_act is ignored).
        "hidden_act": tcfg.hidden_activation if gemma else tcfg.hidden_act,
        "fused_qkv": fused_qkv,
        "fused_gate_up": fused_gate_up,
        "qk_norm": hasattr(attn, "q_norm") and hasattr(attn, "k_norm"),
        "norm_plus_one": norm_plus_one(decoder.norm),
        "sandwich_norm": hasattr(layers[0], "pre_feedforward_layernorm")
                         and hasattr(layers[0], "post_feedforward_layernorm"),
        "embed_scale": float(getattr(embed, "scalar_embed_scale", 1.0)),
        "attn_scale": float(attn.scaling),
        "attn_softcap": getattr(attn, "attn_logit_softcapping", None),
        "final_softcap": getattr(tcfg, "final_logit_softcapping", None),
        "bos_token_id": ids.bos_token_id,
        "eos_token_ids": eos,
        "pad_token_id": ids.pad_token_id,
        "dtype": None if dt is None else str(dt).replace("torch.", ""),
        "layer_sliding_window": windows,
        "quantization": None,
    }
    layout = saved_layout(cfg)
    if layout is not None:
        exp["weight_prefix"], exp["lm_head_saved"] = layout
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
    q_out = q.out_features // 1
    if fused_qkv:
        q_out -= 2 * attn.config.num_key_value_heads * attn.head_dim
    assert q_out == tcfg.num_attention_heads * attn.head_dim
    return exp


def down_in(mlp):
    return mlp.down_proj.in_features


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
            if os.path.isdir(p) and (os.path.exists(os.path.join(p, "expected.json"))
                                     or os.path.exists(os.path.join(p, "config.json"))):
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
    for name, text, status, message in unsupported_cases():
        d = os.path.join(OUT, name)
        os.makedirs(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(text, f, indent=2)
            f.write("\n")
        exp = {"expect_error": status, "expect_message": message,
               "transformers_rope_parameters": dict(AutoConfig.from_pretrained(d).rope_parameters)}
        write_expected(d, exp, "hand-written config.json that transformers loads and qlora-train refuses")
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
