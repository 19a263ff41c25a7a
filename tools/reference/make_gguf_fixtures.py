#!/usr/bin/env python3
"""GGUF export fixtures (tests/golden/gguf/, tests/gguf/): llama.cpp is the reference.

    VENV/bin/python tools/reference/make_gguf_fixtures.py --qlora-train build/train/qlora-train \\
        --llama-cpp-src DIR [--work /tmp/gguf-fixtures]

Needs the reference virtualenv plus `pip install gguf==0.19.0 llama-cpp-python==0.3.36 sentencepiece`
(llama-cpp-python builds llama.cpp from source, ~8 min on 2 cores). DIR is the llama.cpp source
that ships in that sdist (vendor/llama.cpp: `pip download --no-binary :all: --no-deps
llama-cpp-python==0.3.36` and unpack): its convert_hf_to_gguf.py and convert_lora_to_gguf.py are
the metadata and layout reference. On CPUs with AMX, llama.cpp's AMX buffers crash on tiny
models; models are loaded with use_extra_bufts off (below).

What it checks (the script fails on any mismatch; nothing is written then):
  1. For each model (stories260K, and random models written here: rand256 = llama with every
     dimension a multiple of 256 and GQA, so Q4_K and Q6_K are really used; qwen2t = qwen2 with
     q/k/v biases and tied embeddings; llama31 = llama with Llama-3.1 rope scaling) and each
     export.gguf_type:
       f32/f16/bf16: our file equals convert_hf_to_gguf.py --outtype f32/f16/bf16 of the same
                     model directory: every KV (but general.size_label, which convert guesses
                     from the parameter count) and every tensor byte;
       q8_0/q4_k_m:  our file equals llama_model_quantize(our f32 file, MOSTLY_Q8_0 / Q4_K_M):
                     every KV and every tensor byte;
     and gguf.GGUFReader's dequantization of every tensor equals ours (via the f32 export).
  2. llama.cpp's next-token loss over data (BOS + text + EOS, truncated to seq_len, as
     `qlora-train eval`) of every export vs `qlora-train eval` of the same model: f32 1e-5
     relative, f16 1e-4, q8_0 2e-3, q4_k_m 2e-2; llama.cpp's token ids (from our metadata) equal
     `qlora-train tokenize` on the whole file.
  3. stories260K + the PEFT adapter tests/golden/model/stories/adapter: the merged GGUF
     (f32, q8_0, q4_k_m) vs `qlora-train eval` of the merged HF export (fp32); the GGUF LoRA
     adapter (f32, f16, bf16, q8_0) equals convert_lora_to_gguf.py's (tensors, KVs but
     general.name), and base GGUF + adapter in llama.cpp gives the merged model's loss (1e-5).
  4. Byte-level BPE tokenizers (../shared/data/tokenizers/llama3, qwen3): our tokenizer KVs equal
     convert_hf_to_gguf.py --vocab-only's (model, pre, tokens, types, merges, special ids, flags,
     chat template); a random model with each exports and llama.cpp tokenizes the data file as
     `qlora-train tokenize` does.
Recorded (tests/golden/gguf/expected.json): for every base-model export, each reference KV
(scalars as values, arrays and strings as sha256 of their element bytes) and each reference
tensor (type, ne, sha256 of its bytes); for adapters the same; for the BPE tokenizers their KV
digests; all losses. The C test (tests/gguf/test_gguf_export.c) regenerates the random models
with the same integer formula (see rand_values), exports in-process and compares.
"""
import argparse
import ctypes
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_dir, write_meta  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared", "data")
STORIES = os.path.join(SHARED, "stories260K")
ADAPTER = os.path.join(ROOT, "tests", "golden", "model", "stories", "adapter")
DATA = os.path.join(SHARED, "tinystories", "valid.jsonl")
SEQ_LEN = 256
TYPES = ["f32", "f16", "bf16", "q8_0", "q4_k_m"]
TOL = {"f32": 1e-5, "f16": 1e-4, "bf16": 1e-2, "q8_0": 2e-3, "q4_k_m": 2e-2}
FTYPE = {"q8_0": 7, "q4_k_m": 15}
CONVERT_GUESSES = ("general.name", "general.size_label", "general.basename", "general.finetune")

# Random models: (name, config.json fields). Tokenizer: stories260K's (SentencePiece, 512).
RANDOM_MODELS = {
    "rand256": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=256,
                    intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
                    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                    bos_token_id=1, eos_token_id=2, hidden_act="silu"),
    "qwen2t": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=256,
                   intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
                   rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                   bos_token_id=1, eos_token_id=2, hidden_act="silu", use_sliding_window=False),
    "llama31": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=128,
                    intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, vocab_size=512, max_position_embeddings=512,
                    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                      high_freq_factor=4.0, original_max_position_embeddings=64),
                    bos_token_id=1, eos_token_id=2, hidden_act="silu"),
}
# Random models with byte-level BPE tokenizers (tokenization and loading only: not in the C test).
BPE_MODELS = {
    "llama3tok": (os.path.join(SHARED, "tokenizers", "llama3"),
                  dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64,
                       intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=128256, max_position_embeddings=512,
                       rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
                       bos_token_id=128000, eos_token_id=128001, hidden_act="silu")),
    "qwen3tok": (os.path.join(SHARED, "tokenizers", "qwen3"),
                 dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=64,
                      intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=151936, max_position_embeddings=512,
                      rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                      eos_token_id=151645, hidden_act="silu", use_sliding_window=False)),
}


def fnv1a(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def rand_values(name, n, kind):
    """Integer-hash values, exact in float32 (the C test computes the same bits):
    u = mix32(i * 2654435761 + (fnv1a(name) + 1) * 0x9E3779B9), v = ((u >> 8) - 2^23) * 2^-23;
    weights and biases v * 2^-4, norms 1 + v * 2^-3 (one float32 rounding)."""
    i = np.arange(n, dtype=np.uint64)
    u = (i * np.uint64(2654435761) + np.uint64(((fnv1a(name) + 1) * 0x9E3779B9) & 0xFFFFFFFF)) & np.uint64(0xFFFFFFFF)
    u ^= u >> np.uint64(16)
    u = (u * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    u ^= u >> np.uint64(13)
    v = ((u >> np.uint64(8)).astype(np.int64) - 8388608).astype(np.float32) * np.float32(2.0 ** -23)
    if kind == "norm":
        return np.float32(1.0) + v * np.float32(0.125)
    return v * np.float32(0.0625)


def hf_tensor_shapes(cfg):
    C, F, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    H, K = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = C // H
    qwen = cfg["model_type"] == "qwen2"
    out = [("model.embed_tokens.weight", (V, C), "w")]
    for l in range(L):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (C,), "norm"), (p + "post_attention_layernorm.weight", (C,), "norm")]
        for nm, shp in (("q_proj", (H * D, C)), ("k_proj", (K * D, C)), ("v_proj", (K * D, C)), ("o_proj", (C, H * D))):
            out.append((p + "self_attn." + nm + ".weight", shp, "w"))
            if qwen and nm != "o_proj":
                out.append((p + "self_attn." + nm + ".bias", (shp[0],), "w"))
        for nm, shp in (("gate_proj", (F, C)), ("up_proj", (F, C)), ("down_proj", (C, F))):
            out.append((p + "mlp." + nm + ".weight", shp, "w"))
    out.append(("model.norm.weight", (C,), "norm"))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (V, C), "w"))
    return out


def write_random_model(d, cfg, tok_dir):
    from safetensors.numpy import save_file
    os.makedirs(d, exist_ok=True)
    ts = {n: rand_values(n, int(np.prod(s)), k).reshape(s) for n, s, k in hf_tensor_shapes(cfg)}
    save_file(ts, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, torch_dtype="float32"), f, indent=1)
    for fn in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tok_dir, fn)):
            shutil.copy(os.path.join(tok_dir, fn), os.path.join(d, fn))


# ---- llama.cpp -----------------------------------------------------------------

def _llama():
    import llama_cpp
    import llama_cpp.llama as ll
    if not getattr(llama_cpp, "_qt_patched", False):
        orig = llama_cpp.llama_model_default_params

        def patched():
            p = orig()
            p.use_extra_bufts = False  # AMX extra buffers crash on tiny models
            return p
        llama_cpp.llama_model_default_params = patched
        ll.llama_cpp.llama_model_default_params = patched
        llama_cpp._qt_patched = True
    return llama_cpp


def llama_loss(model, texts, lora=None):
    """Next-token loss of `qlora-train eval` semantics, computed from llama.cpp's logits (f32 KV cache)."""
    llama_cpp = _llama()
    llm = llama_cpp.Llama(model_path=model, n_ctx=SEQ_LEN, n_batch=SEQ_LEN, n_ubatch=SEQ_LEN, logits_all=True,
                          verbose=False, lora_path=lora, n_threads=2, type_k=0, type_v=0, seed=0)
    eos = llm.token_eos()
    tot, n, ids_all = 0.0, 0, []
    for t in texts:
        ids = (llm.tokenize(t.encode(), add_bos=True, special=False) + [eos])[:SEQ_LEN]
        ids_all.append(ids)
        llm.reset()
        llm.eval(ids)
        lg = np.array(llm.scores[:len(ids)], dtype=np.float64)
        m = lg.max(axis=1, keepdims=True)
        lse = np.log(np.exp(lg - m).sum(axis=1)) + m[:, 0]
        tot += float((lse[:-1] - lg[np.arange(len(ids) - 1), ids[1:]]).sum())
        n += len(ids) - 1
    llm.close()
    return tot / n, n, ids_all


def llama_quantize(src, dst, ftype):
    llama_cpp = _llama()
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({src}) failed: {rc}")


# ---- qlora-train ---------------------------------------------------------------

def qt(args, *cmd, capture=True):
    r = subprocess.run([args.qlora_train, *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"qlora-train {' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout


def config(path, model_dir, out_dir):
    with open(path, "w") as f:
        f.write(f"model:\n  path: {model_dir}\n  quant: none\nlora:\n  r: 8\n  alpha: 16\n"
                f"data:\n  train: {DATA}\n  eval: {DATA}\n  seq_len: {SEQ_LEN}\noutput:\n  dir: {out_dir}\n")
    return path


def our_ids(args, model_dir, bos=True):
    flags = ["--bos", "--eos"] if bos else ["--eos"]
    out = subprocess.run([args.qlora_train, "tokenize", model_dir, *flags], input=open(DATA).read(),
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line)[:SEQ_LEN] for line in out.splitlines()]


# ---- GGUF files ------------------------------------------------------------------

def kv_digest(field):
    """(type name, value) of a GGUFReader field: scalars as values, strings and arrays as sha256
    of their element bytes (strings: u64 length + bytes each; numbers: little-endian)."""
    import gguf
    t = field.types
    if t[0] == gguf.GGUFValueType.ARRAY:
        et = t[1] if len(t) > 1 else None
        h = hashlib.sha256()
        if et == gguf.GGUFValueType.STRING:
            for s in field.contents():
                b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
                h.update(struct.pack("<Q", len(b)) + b)
        else:
            for idx in field.data:
                h.update(field.parts[idx].tobytes())
        return {"type": "array", "elem": et.name if et is not None else None, "n": len(field.data),
                "sha256": h.hexdigest()}
    if t[0] == gguf.GGUFValueType.STRING:
        b = bytes(field.parts[field.data[0]])
        return {"type": "STRING", "sha256": hashlib.sha256(b).hexdigest(), "len": len(b)}
    v = field.contents()
    if isinstance(v, (np.floating, float)):
        v = float(np.float32(v))
    elif isinstance(v, (bool, np.bool_)):
        v = bool(v)
    else:
        v = int(v)
    return {"type": t[0].name, "value": v}


def describe(path, skip_keys=()):
    import gguf
    r = gguf.GGUFReader(path)
    kvs = {k: kv_digest(f) for k, f in r.fields.items() if not k.startswith("GGUF.") and k not in skip_keys}
    ts = [{"name": t.name, "type": t.tensor_type.name, "ne": [int(x) for x in t.shape],
           "sha256": hashlib.sha256(np.asarray(t.data).tobytes()).hexdigest()} for t in r.tensors]
    return {"kv": kvs, "tensors": ts}


def same(ours, ref, what, skip_keys=()):
    a, b = describe(ours, skip_keys), describe(ref, skip_keys)
    if a["kv"] != b["kv"]:
        for k in sorted(set(a["kv"]) | set(b["kv"])):
            if a["kv"].get(k) != b["kv"].get(k):
                print(f"  KV {k}: ours {a['kv'].get(k)} ref {b['kv'].get(k)}", file=sys.stderr)
        raise SystemExit(f"{what}: KVs differ from the reference")
    ta, tb = {t["name"]: t for t in a["tensors"]}, {t["name"]: t for t in b["tensors"]}
    # rope_freqs: the converter computes it with torch's float32 pow, which may differ from the C
    # library's powf in the last bit: compared with a tolerance, the reference digest recorded
    if "rope_freqs.weight" in ta and "rope_freqs.weight" in tb:
        import gguf
        x = [t.data for t in gguf.GGUFReader(ours).tensors if t.name == "rope_freqs.weight"][0]
        y = [t.data for t in gguf.GGUFReader(ref).tensors if t.name == "rope_freqs.weight"][0]
        if not np.allclose(x, y, rtol=1e-6, atol=0):
            raise SystemExit(f"{what}: rope_freqs differ: {x} vs {y}")
        b["rope_freqs"] = [float(v) for v in y]
        ta["rope_freqs.weight"] = tb["rope_freqs.weight"]
    if ta != tb:
        for n in sorted(set(ta) | set(tb)):
            if ta.get(n) != tb.get(n):
                print(f"  tensor {n}: ours {ta.get(n)} ref {tb.get(n)}", file=sys.stderr)
        raise SystemExit(f"{what}: tensors differ from the reference")
    return b


def check_dequant(path, f32_path):
    """gguf-py's dequantization of every tensor vs our f32 export: exact for F32, within the
    type's rounding for the others (what a reader of our file sees)."""
    import gguf
    from gguf.quants import dequantize
    ref = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(f32_path).tensors}
    worst = 0.0
    for t in gguf.GGUFReader(path).tensors:
        x = dequantize(np.asarray(t.data), t.tensor_type).reshape(-1).astype(np.float64)
        y = ref[t.name].reshape(-1).astype(np.float64)
        err = float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30))
        worst = max(worst, err)
        if t.tensor_type == gguf.GGMLQuantizationType.F32 and err != 0:
            raise SystemExit(f"{path}: {t.name} F32 values differ")
        if err > 0.25:
            raise SystemExit(f"{path}: {t.name} dequantized values far from the f32 export ({err})")
    return worst


def convert(args, model_dir, outtype, out, extra=()):
    env = dict(os.environ, PYTHONPATH=os.path.join(args.llama_cpp_src, "gguf-py"))
    r = subprocess.run([sys.executable, os.path.join(args.llama_cpp_src, "convert_hf_to_gguf.py"), model_dir,
                        "--outtype", outtype, "--outfile", out, *extra], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"convert_hf_to_gguf.py {model_dir} failed:\n{r.stderr[-3000:]}")


def convert_lora(args, base_dir, adapter, outtype, out):
    env = dict(os.environ, PYTHONPATH=os.path.join(args.llama_cpp_src, "gguf-py"))
    r = subprocess.run([sys.executable, os.path.join(args.llama_cpp_src, "convert_lora_to_gguf.py"), "--base",
                        base_dir, "--outtype", outtype, "--outfile", out, adapter], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        raise SystemExit(f"convert_lora_to_gguf.py failed:\n{r.stderr[-3000:]}")


def rel(a, b):
    return abs(a - b) / abs(b)


def export(args, cfg, typ, out, fmt="gguf", ckpt=None):
    cmd = ["export", cfg, "--format", fmt, "--set", f"export.gguf_type={typ}", "--out", out]
    if ckpt:
        cmd += ["--checkpoint", ckpt]
    qt(args, *cmd)


def eval_loss(args, cfg):
    return json.loads(qt(args, "eval", cfg).strip().splitlines()[-1])["loss"]


def base_model_case(args, name, model_dir, texts, work, result):
    print(f"== {name}", flush=True)
    cfg = config(os.path.join(work, name + ".yaml"), model_dir, os.path.join(work, name + "-out"))
    ours_loss = eval_loss(args, cfg)
    ids = our_ids(args, model_dir)
    case = {"eval_loss": ours_loss, "exports": {}}
    f32 = os.path.join(work, f"{name}-f32.gguf")
    for typ in TYPES:
        out = os.path.join(work, f"{name}-{typ}.gguf")
        export(args, cfg, typ, out)
        ref = os.path.join(work, f"{name}-{typ}.ref.gguf")
        if typ in FTYPE:
            llama_quantize(f32, ref, FTYPE[typ])
            d = same(out, ref, f"{name} {typ} vs llama_model_quantize", skip_keys=("general.name",))
        else:
            convert(args, model_dir, typ, ref)
            # convert guesses general.name and .size_label from the directory and parameter count
            d = same(out, ref, f"{name} {typ} vs convert_hf_to_gguf.py", skip_keys=CONVERT_GUESSES)
        worst = check_dequant(out, f32)
        loss, n, lids = llama_loss(out, texts)
        if lids != ids:
            raise SystemExit(f"{name} {typ}: llama.cpp's token ids differ from qlora-train tokenize")
        if rel(loss, ours_loss) > TOL[typ]:
            raise SystemExit(f"{name} {typ}: llama.cpp loss {loss} vs ours {ours_loss}: over {TOL[typ]}")
        print(f"  {typ}: llama.cpp loss {loss:.9g} (rel {rel(loss, ours_loss):.2e}), dequant max rel {worst:.2e}")
        d.update(llama_loss=loss, tokens=n, rel=rel(loss, ours_loss), tol=TOL[typ])
        case["exports"][typ] = d
    result[name] = case


def adapter_case(args, texts, work, result):
    print("== stories + adapter", flush=True)
    cfg = config(os.path.join(work, "stories-ad.yaml"), STORIES, os.path.join(work, "stories-ad-out"))
    merged = os.path.join(work, "stories-merged")
    shutil.rmtree(merged, ignore_errors=True)
    qt(args, "export", cfg, "--checkpoint", ADAPTER, "--format", "merged", "--set", "export.dtype=fp32",
       "--out", merged)
    mcfg = config(os.path.join(work, "stories-merged.yaml"), merged, os.path.join(work, "stories-m-out"))
    ours_loss = eval_loss(args, mcfg)
    case = {"eval_loss_merged": ours_loss, "merged": {}, "lora": {}}
    for typ in ("f32", "q8_0", "q4_k_m"):
        out = os.path.join(work, f"stories-ad-{typ}.gguf")
        export(args, cfg, typ, out, ckpt=ADAPTER)
        loss, n, _ = llama_loss(out, texts)
        if rel(loss, ours_loss) > TOL[typ]:
            raise SystemExit(f"merged {typ}: llama.cpp loss {loss} vs ours {ours_loss}")
        print(f"  merged {typ}: llama.cpp loss {loss:.9g} (rel {rel(loss, ours_loss):.2e})")
        case["merged"][typ] = {"llama_loss": loss, "tokens": n, "rel": rel(loss, ours_loss), "tol": TOL[typ]}
    base = os.path.join(work, "stories260K-f32.gguf")
    for typ in ("f32", "f16", "bf16", "q8_0"):
        out = os.path.join(work, f"stories-lora-{typ}.gguf")
        export(args, cfg, typ, out, fmt="gguf-lora", ckpt=ADAPTER)
        ref = os.path.join(work, f"stories-lora-{typ}.ref.gguf")
        convert_lora(args, STORIES, ADAPTER, typ, ref)
        d = same(out, ref, f"gguf-lora {typ} vs convert_lora_to_gguf.py", skip_keys=("general.name",))
        loss, n, _ = llama_loss(base, texts, lora=out)
        tol = 1e-5 if typ == "f32" else TOL[typ]
        if rel(loss, ours_loss) > tol:
            raise SystemExit(f"base + lora {typ}: llama.cpp loss {loss} vs merged {ours_loss}")
        print(f"  base f32 + lora {typ}: llama.cpp loss {loss:.9g} (rel {rel(loss, ours_loss):.2e})")
        d.update(llama_loss=loss, tokens=n, rel=rel(loss, ours_loss), tol=tol)
        case["lora"][typ] = d
    result["stories_adapter"] = case


def bpe_case(args, name, tok_dir, cfg, texts, work, result):
    print(f"== {name}", flush=True)
    d = os.path.join(work, name)
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        write_random_model(d, cfg, tok_dir)
    # vocabulary KVs vs convert --vocab-only of a directory with the tokenizer and this config.json
    ref = os.path.join(work, name + ".vocab.gguf")
    convert(args, d, "f32", ref, extra=("--vocab-only",))
    out = os.path.join(work, name + "-f32.gguf")
    qcfg = config(os.path.join(work, name + ".yaml"), d, os.path.join(work, name + "-out"))
    export(args, qcfg, "f32", out)
    a = {k: v for k, v in describe(out)["kv"].items() if k.startswith("tokenizer.")}
    b = {k: v for k, v in describe(ref)["kv"].items() if k.startswith("tokenizer.")}
    if a != b:
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                print(f"  KV {k}: ours {a.get(k)} ref {b.get(k)}", file=sys.stderr)
        raise SystemExit(f"{name}: tokenizer KVs differ from convert_hf_to_gguf.py --vocab-only")
    llama_cpp = _llama()
    llm = llama_cpp.Llama(model_path=out, vocab_only=True, verbose=False)
    bos = "bos_token_id" in cfg
    ids = our_ids(args, d, bos=bos)
    # BOS written explicitly: whether llama.cpp adds it itself follows tokenizer.ggml.add_bos_token
    lids = [(([llm.token_bos()] if bos else []) + llm.tokenize(t.encode(), add_bos=False, special=False)
             + [llm.token_eos()])[:SEQ_LEN] for t in texts]
    llm.close()
    if lids != ids:
        raise SystemExit(f"{name}: llama.cpp's token ids differ from qlora-train tokenize")
    loss, n, _ = llama_loss(out, texts[:4])
    print(f"  tokenizer KVs equal convert's; llama.cpp ids equal ours; loads, loss {loss:.4f}")
    result[name] = {"tokenizer_kv": b, "vocab_dir": os.path.relpath(tok_dir, SHARED), "config": cfg}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qlora-train", required=True)
    ap.add_argument("--llama-cpp-src", required=True)
    ap.add_argument("--work", default="/tmp/gguf-fixtures")
    args = ap.parse_args()
    args.qlora_train = os.path.abspath(args.qlora_train)
    os.makedirs(args.work, exist_ok=True)
    texts = [json.loads(line)["text"] for line in open(DATA)]
    result = {"seq_len": SEQ_LEN, "data": "tinystories/valid.jsonl", "random_models": RANDOM_MODELS}
    base_model_case(args, "stories260K", STORIES, texts, args.work, result)
    for name, cfg in RANDOM_MODELS.items():
        d = os.path.join(args.work, name)
        shutil.rmtree(d, ignore_errors=True)
        write_random_model(d, cfg, STORIES)
        base_model_case(args, name, d, texts, args.work, result)
    adapter_case(args, texts, args.work, result)
    for name, (tok_dir, cfg) in BPE_MODELS.items():
        bpe_case(args, name, tok_dir, cfg, texts, args.work, result)
    out = os.path.join(golden_dir("gguf"), "expected.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")
    import gguf
    import llama_cpp
    write_meta("gguf", "expected", {"script": "tools/reference/make_gguf_fixtures.py", "gguf": gguf.__version__
                                    if hasattr(gguf, "__version__") else "0.19.0",
                                    "llama_cpp_python": llama_cpp.__version__})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
