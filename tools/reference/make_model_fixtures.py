#!/usr/bin/env python3
"""Golden fixtures for model/ and lora/ (tests/model_lora/, tests/golden/model/).

Run with the reference virtualenv (transformers 5.24, peft 0.21.2,
bitsandbytes 0.50.2, torch CPU; /work/venv-ref on the team machine, or one made
by tools/reference/setup_venv.sh):

    /work/venv-ref/bin/python tools/reference/make_model_fixtures.py
    /work/venv-ref/bin/python tools/reference/make_model_fixtures.py --check-ours DIR

Everything runs in float32 on CPU with eager attention.

Cases (tests/golden/model/<case>/):
  stories   the real stories260K from ../shared/data (not copied: the C test
            reads it from there); LoRA on all seven projections.
  tiny_a    random llama: untied embeddings, attention_bias + mlp_bias,
            llama3 rope scaling, head_dim 6 != hidden/heads = 3, GQA ratio 4 (8/2),
            rsLoRA on all seven projections.
  tiny_b    random qwen2: q/k/v bias (o and MLP none), tied embeddings, linear
            rope scaling, head_dim = hidden/heads, GQA ratio 1 (4/4), LoRA on
            q, v, down only.
  tiny_c    random mistral (sliding_window 16, longer than any row here),
            GQA ratio 2, untied, LoRA on o, gate, up.
  tiny_nf4  random llama (every in_features a multiple of 64, so no 4-bit
            block crosses a row: bitsandbytes' CPU dequantize kernel then
            agrees with the CUDA semantics quant/ implements, checked below),
            quantized by transformers BitsAndBytesConfig(load_in_4bit, nf4,
            double quant, compute float32) and saved with save_pretrained: the
            C model loads these very 4-bit tensors.
tiny_b_sharded/ holds tiny_b's weights saved with max_shard_size="30KB"
(model.safetensors.index.json + shards), for the sharded loader.
Each case dir holds (tiny_*) config.json + model.safetensors, adapter/ (written
by PEFT save_pretrained, F32, with A and B set to random nonzero values that
are exactly representable in bf16, so bf16 adapter storage loses nothing) and
expected.safetensors:
  ids, labels, pos, doc  I32 (B*T): a packed batch of B rows of T tokens;
                         labels unshifted (-100 ignored), pos restarts per
                         document, doc = document id per token;
  logits                 F32 (B*T, V)
  loss_sum               F64 [1] summed next-token CE (within documents)
  count                  I32 [1] number of targets
  grad.<PEFT key>        F32, d(loss_sum / count)/d(param) for every lora_A/B.
Packing: transformers cannot take several documents in one row without a
custom 4D mask, so each document is run as its own sequence (positions from
0) and its logits are placed at its slots of the packed row; the loss is
ForCausalLMLoss with num_items_in_batch = count summed over documents. That is
exactly what block-diagonal attention with restarting positions must give.

stories_eval.json: the stories260K base model's summed next-token loss over
../shared/data/tinystories/valid.jsonl (each story BOS + text + EOS, tokens by
the tokenizers library, whole file pooled), and greedy generation of 64
tokens from BOS (transformers generate, do_sample=False), in float32 (and the
float64 figures, for the record).

--check-ours DIR [BASE] (committed instances: tests/golden/model/ours_tiny_a, and
ours_fam_phi3 for BASE fam_phi3 (the fused modules), made by
`build/tests/model_lora/test_model_lora --write-peft-check DIR` first): DIR holds an adapter directory written by qlora-train
(DIR/adapter in F32, DIR/adapter_bf16 in BF16) for the tiny_a base, and DIR/ours.safetensors with the ids and
the logits the C model computed with it. Loads the adapter with
PeftModel.from_pretrained and writes DIR/peft_check.json with the max
relative logit difference (max|a-b| / max|b|).
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
from safetensors.torch import save_file, load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

SCRIPT = "tools/reference/make_model_fixtures.py"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
STORIES = os.path.join(SHARED, "stories260K")
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def bf16_exact(t):
    return t.to(torch.bfloat16).to(torch.float32)


def tiny_model(case):
    torch.manual_seed({"tiny_a": 11, "tiny_b": 12, "tiny_nf4": 13, "tiny_c": 14}[case])
    if case == "tiny_a":
        cfg = transformers.LlamaConfig(
            vocab_size=67, hidden_size=24, intermediate_size=36, num_hidden_layers=2,
            num_attention_heads=8, num_key_value_heads=2, head_dim=6, rms_norm_eps=1e-5,
            max_position_embeddings=64, tie_word_embeddings=False, attention_bias=True,
            mlp_bias=True, bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16})
    elif case == "tiny_b":
        cfg = transformers.Qwen2Config(
            vocab_size=53, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
            max_position_embeddings=64, tie_word_embeddings=True, use_sliding_window=False,
            bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "linear", "rope_theta": 1000.0, "factor": 2.0})
    elif case == "tiny_c":
        cfg = transformers.MistralConfig(
            vocab_size=41, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            max_position_embeddings=64, tie_word_embeddings=False, sliding_window=16,
            bos_token_id=1, eos_token_id=2, rope_theta=1000000.0)
    else:
        cfg = transformers.LlamaConfig(
            vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
            max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1,
            eos_token_id=2)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            elif "norm" in n:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:  # std 0.02 gives near-uniform logits; make them informative
                p.copy_(torch.randn_like(p) * (0.6 / p.shape[-1] ** 0.5))
    return model


def lora_setup(case):
    if case == "tiny_a":
        return dict(r=4, lora_alpha=6.0, target_modules=list(ALL7), use_rslora=True)
    if case == "tiny_b":
        return dict(r=2, lora_alpha=3.0, target_modules=["q_proj", "v_proj", "down_proj"],
                    use_rslora=False)
    if case == "tiny_c":
        return dict(r=3, lora_alpha=5.0, target_modules=["o_proj", "gate_proj", "up_proj"],
                    use_rslora=False)
    return dict(r=4, lora_alpha=8.0, target_modules=list(ALL7), use_rslora=False)


def batch(V, seed):
    """Two packed rows of 12 tokens: row 0 = docs of 5 and 7 tokens, row 1 = docs
    of 4, 3, 5; labels -100 on two tokens."""
    g = torch.Generator().manual_seed(seed)
    B, T = 2, 12
    splits = [[5, 7], [4, 3, 5]]
    ids = torch.randint(3, V, (B * T,), generator=g)
    labels = ids.clone()
    labels[2] = -100
    labels[T + 9] = -100
    pos, doc, docs = [], [], []
    d = 0
    for b in range(B):
        start = b * T
        for n in splits[b]:
            docs.append((start, start + n))
            pos += list(range(n))
            doc += [d] * n
            d += 1
            start += n
    return B, T, ids, labels, torch.tensor(pos), torch.tensor(doc), docs


def run_case(case, model, quantized=False):
    out = os.path.join(golden_dir("model"), case)
    os.makedirs(out, exist_ok=True)
    V = model.config.vocab_size
    lcfg = peft.LoraConfig(lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                           **lora_setup(case))
    pm = peft.get_peft_model(model, lcfg)
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n:
                p.copy_(bf16_exact((torch.rand(p.shape, generator=g) * 2 - 1) / p.shape[1] ** 0.5))
            elif "lora_B" in n:
                p.copy_(bf16_exact((torch.rand(p.shape, generator=g) * 2 - 1) * 0.3))
    # Name the base by its fixture, not by the temporary path it was loaded from.
    pm.peft_config["default"].base_model_name_or_path = (
        "stories260K" if case == "stories" else "tests/golden/model/" + case)
    adir = os.path.join(out, "adapter")
    if os.path.isdir(adir):
        shutil.rmtree(adir)
    pm.save_pretrained(adir)
    for f in os.listdir(adir):
        if f not in ("adapter_config.json", "adapter_model.safetensors"):
            os.remove(os.path.join(adir, f))
    B, T, ids, labels, pos, doc, docs = batch(V, 99)
    count = 0
    for s, e in docs:
        count += int((labels[s + 1:e] != -100).sum())
    pm.train()  # dropout 0: train mode only matters for grads
    logits = torch.zeros(B * T, V)
    total = None
    for s, e in docs:
        o = pm(input_ids=ids[s:e][None], labels=labels[s:e][None],
               num_items_in_batch=torch.tensor(count))
        logits[s:e] = o.logits[0].detach().float()
        total = o.loss if total is None else total + o.loss
    total.backward()
    exp = {"ids": ids.int(), "labels": labels.int(), "pos": pos.int(), "doc": doc.int(),
           "logits": logits.contiguous(),
           "loss_sum": torch.tensor([total.item() * count], dtype=torch.float64),
           "count": torch.tensor([count], dtype=torch.int32)}
    sd = peft.get_peft_model_state_dict(pm)
    byid = {id(p): n for n, p in pm.named_parameters()}
    named = dict(pm.named_parameters())
    ngrad = 0
    for key in sd:
        # key: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
        inner = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight")
        p = named[inner]
        assert byid[id(p)] == inner
        exp["grad." + key] = p.grad.detach().float().contiguous()
        ngrad += 1
    for n, p in named.items():
        if "lora_" not in n:
            assert p.grad is None or not p.requires_grad, n
    save_file(exp, os.path.join(out, "expected.safetensors"), metadata={"format": "pt"})
    write_meta("model", case, {"script": SCRIPT, "loss_mean": total.item(), "count": count,
                               "n_lora_grads": ngrad, "quantized": quantized})
    return pm


def tiny_case(case):
    model = tiny_model(case)
    out = os.path.join(golden_dir("model"), case)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    for f in os.listdir(out):
        if f == "generation_config.json":
            os.remove(os.path.join(out, f))
    if case == "tiny_b":
        # The same weights in three shards (model.safetensors.index.json): the
        # C loader must give bit-identical results from either layout.
        sh = os.path.join(golden_dir("model"), "tiny_b_sharded")
        if os.path.isdir(sh):
            shutil.rmtree(sh)
        model.save_pretrained(sh, max_shard_size="30KB")
        for f in os.listdir(sh):
            if f == "generation_config.json":
                os.remove(os.path.join(sh, f))
        assert os.path.exists(os.path.join(sh, "model.safetensors.index.json"))
    run_case(case, model)


def nf4_case():
    import bitsandbytes as bnb
    import bitsandbytes.functional as BF
    from transformers import BitsAndBytesConfig
    case = "tiny_nf4"
    out = os.path.join(golden_dir("model"), case)
    src = os.path.join(out, "_src")
    model = tiny_model(case)
    model.save_pretrained(src)
    bcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)
    q = AutoModelForCausalLM.from_pretrained(src, quantization_config=bcfg, dtype=torch.float32,
                                             device_map="cpu", attn_implementation="eager")
    shutil.rmtree(src)
    # Every 4-bit weight must dequantize on bnb's CPU kernel exactly as on the
    # flat (CUDA-semantics) path quant/ implements.
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code
    nq = 0
    for name, mod in q.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            qs = mod.weight.quant_state
            absmax = BF.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
            flat = _dequantize_4bit_compute(mod.weight.data.view(torch.uint8).reshape(-1),
                                            absmax.float(), _get_4bit_code(qs.quant_type, "cpu"),
                                            qs.blocksize, qs.shape, qs.dtype)
            assert torch.equal(flat, BF.dequantize_4bit(mod.weight.data, qs)), name
            nq += 1
    assert nq == 14
    q.save_pretrained(out)
    for f in os.listdir(out):
        if f == "generation_config.json":
            os.remove(os.path.join(out, f))
    run_case(case, q, quantized=True)


def stories_case():
    model = AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32,
                                                 attn_implementation="eager")
    run_case("stories", model)


def stories_eval():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(STORIES, "tokenizer.json"))
    res = {}
    for dt in (torch.float32, torch.float64):
        model = AutoModelForCausalLM.from_pretrained(STORIES, dtype=dt,
                                                     attn_implementation="eager").eval()
        total, count, n = 0.0, 0, 0
        with open(os.path.join(SHARED, "tinystories", "valid.jsonl")) as f:
            for line in f:
                text = json.loads(line)["text"]
                ids = [1] + tok.encode(text, add_special_tokens=False).ids + [2]
                x = torch.tensor([ids])
                with torch.no_grad():
                    o = model(input_ids=x, labels=x)
                total += o.loss.item() * (len(ids) - 1)
                count += len(ids) - 1
                n += 1
        with torch.no_grad():
            gen = model.generate(torch.tensor([[1]]), do_sample=False, max_new_tokens=64,
                                 min_new_tokens=64, eos_token_id=None, pad_token_id=0)
        key = "float32" if dt == torch.float32 else "float64"
        res[key] = {"loss_sum": total, "count": count, "stories": n, "mean": total / count,
                    "greedy": gen[0, 1:].tolist()}
    assert res["float32"]["greedy"] == res["float64"]["greedy"]
    res["greedy_text"] = tok.decode(res["float32"]["greedy"])
    path = os.path.join(golden_dir("model"), "stories_eval.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    write_meta("model", "stories_eval", {"script": SCRIPT})


def check_ours(d, base_case="tiny_a"):
    ours = load_file(os.path.join(d, "ours.safetensors"))
    ids = ours["ids"].long()
    a = ours["logits"].float()
    res = {"tokens": int(ids.numel()),
           "peft_config": json.load(open(os.path.join(d, "adapter", "adapter_config.json")))}
    for sub in ("adapter", "adapter_bf16"):
        base = AutoModelForCausalLM.from_pretrained(
            os.path.join(golden_dir("model"), base_case), dtype=torch.float32,
            attn_implementation="eager")
        pm = peft.PeftModel.from_pretrained(base, os.path.join(d, sub))
        pm.eval()
        with torch.no_grad():
            ref = pm(input_ids=ids[None]).logits[0].float()
        res["max_rel_logits_" + sub] = (a - ref).abs().max().item() / ref.abs().max().item()
    rel = max(res["max_rel_logits_adapter"], res["max_rel_logits_adapter_bf16"])
    res["max_rel_logits"] = rel
    res["ok"] = rel <= 1e-5
    with open(os.path.join(d, "peft_check.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    write_meta("model", "peft_check" if base_case == "tiny_a" else "peft_check_" + base_case,
               {"script": SCRIPT, "max_rel_logits": rel})
    print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    torch.set_num_threads(2)
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--check-ours":
        sys.exit(check_ours(*sys.argv[2:]))
    tiny_case("tiny_a")
    tiny_case("tiny_b")
    tiny_case("tiny_c")
    nf4_case()
    stories_case()
    stories_eval()
