#!/usr/bin/env python3
"""Golden fixtures for `generate` (tests/generate/, tests/golden/generate/).

Run with the reference virtualenv (transformers 5.24, peft 0.21.2, torch CPU):

    ~/.cache/qlora-train/venv-ref/bin/python tools/reference/make_generate_fixtures.py

Everything in float32 on CPU, eager attention.

greedy.json + <case>/ (config.json, model.safetensors, adapter/ from PEFT
save_pretrained): greedy ids of transformers' generate (do_sample=False, no
EOS stop, 64 new tokens) from a prompt, for the base model and with the PEFT
adapter loaded (PeftModel). Cases: the real stories260K (read from
../shared/data, adapter tests/golden/model/stories/adapter) and random tiny
llama (untied, attention + MLP bias), mistral (no sliding window) and qwen2
(q/k/v bias, tied) configs with max_position_embeddings 128. A greedy
decision whose top-2 logit margin is within rounding of our forward would
make the comparison test the rounding, not the model: for each case the
prompt is the first of seeds 0.. whose 64 steps all have a margin >= 1e-3
(recorded as min_margin), and the script fails if none of 40 seeds does.

processors.safetensors + processors.json: random logits (V 1000, some ties)
and a history of ids, run through the processors transformers' generate
builds (model._get_logits_processor for a GenerationConfig with the given
temperature/top_k/top_p/min_p/repetition_penalty): `kept.<i>` (I32 0/1 per
id: the logit is finite after processing) and `out.<i>` (the processed
logits, -inf removed, for the repetition-penalty and temperature arithmetic).
Cases whose top-p or min-p threshold lies within 1e-6 of a probability (where
fp32 torch and our double sums may round to different sides) are redrawn.

chat.json: apply_chat_template(messages, tokenize=False,
add_generation_prompt=True) of the real tokenizers in ../shared/data/tokenizers
(llama3, qwen3; llama2 has no template) for several conversations.
"""
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_dir, write_meta  # noqa: E402

import peft  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, GenerationConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
STORIES = os.path.join(SHARED, "stories260K")
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NEW = 64
OUT = golden_dir("generate")


def bf16_exact(t):
    return t.to(torch.bfloat16).to(torch.float32)


def tiny_model(case):
    torch.manual_seed({"llama": 21, "mistral": 22, "qwen2": 23}[case])
    common = dict(num_hidden_layers=2, rms_norm_eps=1e-5, max_position_embeddings=128,
                  bos_token_id=1, eos_token_id=2)
    if case == "llama":
        cfg = transformers.LlamaConfig(vocab_size=71, hidden_size=32, intermediate_size=48,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=False, attention_bias=True,
                                       mlp_bias=True, **common)
    elif case == "mistral":
        cfg = transformers.MistralConfig(vocab_size=59, hidden_size=32, intermediate_size=40,
                                         num_attention_heads=4, num_key_value_heads=1,
                                         tie_word_embeddings=False, sliding_window=None,
                                         rope_theta=1000000.0, **common)
    else:
        cfg = transformers.Qwen2Config(vocab_size=83, hidden_size=32, intermediate_size=44,
                                       num_attention_heads=4, num_key_value_heads=4,
                                       tie_word_embeddings=True, use_sliding_window=False,
                                       **common)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            elif "norm" in n:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:  # 1.5/sqrt(in): greedy paths that visit many ids (at make_model_fixtures'
                # 0.6 a two-layer model soon repeats one id forever)
                p.copy_(torch.randn_like(p) * (1.5 / p.shape[-1] ** 0.5))
    return model.eval()


def add_adapter(model, seed):
    cfg = peft.LoraConfig(r=4, lora_alpha=8.0, target_modules=list(ALL7), lora_dropout=0.0)
    pm = peft.get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(bf16_exact(torch.randn(p.shape, generator=g) * 0.3))
    return pm.eval()


def greedy(model, prompt):
    gc = GenerationConfig(do_sample=False, max_new_tokens=NEW, min_new_tokens=0,
                          eos_token_id=None, pad_token_id=0, bos_token_id=None)
    ids = torch.tensor([prompt])
    inner = model.get_base_model() if isinstance(model, peft.PeftModel) else model
    inner.generation_config.eos_token_id = None  # else the model's own EOS still stops
    with torch.no_grad():
        r = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc,
                           output_scores=True, return_dict_in_generate=True)
    out = r.sequences[0, len(prompt):].tolist()
    margin = min(float(torch.topk(s[0], 2).values[0] - torch.topk(s[0], 2).values[1]) for s in r.scores)
    assert len(out) == NEW
    return out, margin


def greedy_cases():
    res = {}
    for case in ["stories", "llama", "mistral", "qwen2"]:
        d = os.path.join(OUT, case)
        if case == "stories":
            base = AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32,
                                                        attn_implementation="eager").eval()
            lora = peft.PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32,
                                                     attn_implementation="eager"),
                os.path.join(ROOT, "tests", "golden", "model", "stories", "adapter")).eval()
        else:
            base = tiny_model(case)
            if os.path.isdir(d):
                shutil.rmtree(d)
            base.save_pretrained(d)
            os.remove(os.path.join(d, "generation_config.json"))
            lora = add_adapter(tiny_model(case), seed=5)
            lora.save_pretrained(os.path.join(d, "adapter"))
            os.remove(os.path.join(d, "adapter", "README.md"))
        V = base.config.vocab_size
        for seed in range(40):
            g = torch.Generator().manual_seed(1000 + seed)
            prompt = [1] + torch.randint(3, V, (6,), generator=g).tolist()
            ob, mb = greedy(base, prompt)
            ol, ml = greedy(lora, prompt)
            if min(mb, ml) >= 1e-3:
                break
        else:
            raise SystemExit(f"{case}: no prompt with every greedy margin >= 1e-3")
        res[case] = {"prompt": prompt, "base": ob, "lora": ol, "min_margin": min(mb, ml),
                     "prompt_seed": 1000 + seed}
        print(case, "prompt seed", 1000 + seed, "min margin", min(mb, ml))
    with open(os.path.join(OUT, "greedy.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")


PROC_CASES = [
    dict(do_sample=False, repetition_penalty=1.3),
    dict(do_sample=True, temperature=0.7),
    dict(do_sample=True, temperature=1.0, top_k=10),
    dict(do_sample=True, temperature=1.0, top_k=1),
    dict(do_sample=True, temperature=1.0, top_p=0.9),
    dict(do_sample=True, temperature=1.0, top_p=0.5),
    dict(do_sample=True, temperature=1.0, min_p=0.1),
    dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.8),
    dict(do_sample=True, temperature=1.3, top_k=200, top_p=0.95, min_p=0.05,
         repetition_penalty=1.2),
    dict(do_sample=True, temperature=0.5, min_p=0.3, repetition_penalty=0.9),
]


def near_threshold(proc_logits_before, c):
    """True when a top-p cut or min-p threshold lies within 1e-6 of a
    cumulative / scaled probability (float64 view)."""
    z = proc_logits_before.double()
    if c.get("top_p") is not None:
        s = torch.sort(z[torch.isfinite(z)]).values
        cum = torch.softmax(s, 0).cumsum(0)
        if (cum - (1 - c["top_p"])).abs().min() < 1e-6:
            return True
    if c.get("min_p") is not None:
        p = torch.softmax(z, 0)
        if (p - c["min_p"] * p.max()).abs().min() < 1e-6:
            return True
    return False


def processor_cases(model):
    V = 1000
    tensors, meta = {}, []
    g = torch.Generator().manual_seed(7)
    for i, c in enumerate(PROC_CASES):
        for attempt in range(50):
            logits = (torch.randn(V, generator=g) * 3.0).float()
            # a few exact ties, including around the top-k boundary
            order = torch.argsort(logits, descending=True)
            logits[order[10]] = logits[order[9]]
            logits[order[3]] = logits[order[2]]
            logits[order[0:3:2]] = logits[order[0:3:2]].abs()
            logits[order[500:510]] = -logits[order[500:510]].abs()
            hist = torch.randint(0, V, (30,), generator=g)
            hist[5] = order[0]  # the top token was seen (penalty on a positive logit)
            hist[6] = order[600]
            gc = GenerationConfig(**{**c, "top_k": c.get("top_k", 0)})  # 0: not the default 50
            procs = model._get_logits_processor(generation_config=gc, input_ids_seq_length=30,
                                                encoder_input_ids=hist[None],
                                                prefix_allowed_tokens_fn=None,
                                                logits_processor=None, device="cpu")
            # the score the thresholds see: everything before top-p / min-p
            x = logits[None].clone()
            before = None
            for p in procs:
                if type(p).__name__ in ("TopPLogitsWarper", "MinPLogitsWarper") and before is None:
                    before = x[0].clone()
                x = p(hist[None], x)
            if before is not None and near_threshold(before, c):
                continue
            break
        else:
            raise SystemExit(f"processor case {i}: no draw away from thresholds")
        out = x[0]
        kept = torch.isfinite(out).to(torch.int32)
        tensors[f"logits.{i}"] = logits.contiguous()
        tensors[f"hist.{i}"] = hist.to(torch.int32).contiguous()
        tensors[f"kept.{i}"] = kept.contiguous()
        tensors[f"out.{i}"] = torch.where(torch.isfinite(out), out, torch.zeros_like(out)).contiguous()
        meta.append({"temperature": c.get("temperature", 0.0) if c["do_sample"] else 0.0,
                     "top_k": c.get("top_k", 0), "top_p": c.get("top_p", 1.0),
                     "min_p": c.get("min_p", 0.0),
                     "repetition_penalty": c.get("repetition_penalty", 1.0),
                     "kept": int(kept.sum()),
                     "processors": [type(p).__name__ for p in procs]})
        print("processors", i, c, "kept", int(kept.sum()), [type(p).__name__ for p in procs])
    save_file(tensors, os.path.join(OUT, "processors.safetensors"))
    with open(os.path.join(OUT, "processors.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "  Name a color. "}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "And 3+3?\nExplain."}],
    [{"role": "system", "content": "Sys"}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b"}, {"role": "user", "content": "ünïcödé ✓ 日本"}],
]


def chat_cases():
    from transformers import AutoTokenizer
    res = {}
    for name in ["llama3", "qwen3"]:
        tok = AutoTokenizer.from_pretrained(os.path.join(SHARED, "tokenizers", name))
        res[name] = []
        for conv in CONVERSATIONS:
            text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            res[name].append({"messages": conv, "text": text})
    with open(os.path.join(OUT, "chat.json"), "w") as f:
        json.dump(res, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    torch.set_num_threads(2)
    chat_cases()
    processor_cases(tiny_model("llama"))
    greedy_cases()
    write_meta("generate", "generate", {"script": "tools/reference/make_generate_fixtures.py"})


if __name__ == "__main__":
    main()
