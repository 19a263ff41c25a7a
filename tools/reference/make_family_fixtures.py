#!/usr/bin/env python3
"""Golden fixtures for the model families beyond llama/qwen2/mistral
(tests/golden/model/fam_*/), in the format of make_model_fixtures.py (see its
docstring: config.json + model.safetensors, adapter/ written by PEFT
save_pretrained in F32 with A and B random nonzero and exactly representable
in bf16, expected.safetensors with ids, labels, pos, doc, logits, loss_sum,
count and grad.<PEFT key>; fp32, eager attention, every document run as its
own sequence).

Run with the reference virtualenv (transformers 5.24, peft 0.21.2,
bitsandbytes 0.50.2, torch CPU):

    ~/.cache/qlora-train/venv-ref/bin/python tools/reference/make_family_fixtures.py [case ...]

The packed batch here is longer than tiny_*'s, so that documents outrun the
sliding windows: 2 rows of 16 tokens, row 0 = documents of 13 and 3 tokens,
row 1 = documents of 6, 2 and 8 tokens; labels -100 at flat index 2 and 16+9.

Every weight is random (seeded per case): biases N(0, 0.1), RMSNorm weights
1 + N(0, 0.2) (gemma norms, which multiply by 1 + w, get N(0, 0.2) so the
factor is the same), the rest N(0, (0.6 / sqrt(fan_in))^2) unless a case
scales some up (gemma2: q/k and the tied embedding, so that both softcaps
act in their nonlinear range).

Cases:
  fam_qwen3      Qwen3ForCausalLM: q/k RMSNorm, head_dim 12 != hidden/heads = 8,
                 GQA 4/2, tied embeddings, attention_bias false, LoRA on all
                 seven projections.
  fam_qwen3_sw   qwen3, use_sliding_window true, sliding_window 5,
                 max_window_layers 1 (layer 0 full, layers 1-2 sliding),
                 untied, attention_bias true (q/k/v/o biases), LoRA q,k,v,o.
  fam_mistral_sw MistralForCausalLM, sliding_window 4 on every layer, GQA 4/1,
                 untied, LoRA q, v, gate, down.
  fam_gemma2     Gemma2ForCausalLM: head_dim 8 != hidden/heads = 12, GQA 4/2,
                 query_pre_attn_scalar 24, attn_logit_softcapping 5.0,
                 final_logit_softcapping 3.0, sliding_window 4 with the
                 default layer_types (sliding, full, sliding), tied,
                 gelu_pytorch_tanh, embeddings scaled by sqrt(hidden),
                 pre/post feed-forward norms; LoRA on all seven.
  fam_gemma3     Gemma3ForCausalLM (gemma3_text): q/k norms, head_dim 12 !=
                 hidden/heads = 8, query_pre_attn_scalar 20, sliding_window 4,
                 sliding_window_pattern 2 (layer_types sliding, full, sliding,
                 full), local rope theta 10000 (default rope), global rope
                 theta 1e6 with linear scaling factor 2, untied, 4 layers;
                 rsLoRA on all seven.
  fam_phi3       Phi3ForCausalLM: fused qkv_proj and gate_up_proj, GQA 4/2,
                 untied, sliding_window null; LoRA on qkv_proj, o_proj,
                 gate_up_proj, down_proj.
  fam_phi3_sw    phi3 with sliding_window 5 (Phi3Model builds its mask with
                 create_sliding_window_causal_mask: key j is seen by query i
                 iff i - 5 < j <= i, the same rule as mistral); LoRA on
                 qkv_proj and down_proj.
  fam_phi3_nf4   phi3 with every in_features a multiple of 64 (see tiny_nf4 in
                 make_model_fixtures.py), quantized by BitsAndBytesConfig(
                 load_in_4bit, nf4, double quant, compute float32) and saved
                 with save_pretrained; LoRA as fam_phi3.

Each case's meta.json records, besides the versions, the effect sizes that
show transformers applied the feature, all on the base model over the batch's
documents: max |logits(config) - logits(variant)| for the window (variant:
window 1000; also the first position within a document whose logits change,
asserted == the window: key j is visible from query i iff i - W < j <= i),
the layer pattern (variant: every layer sliding), gemma2's two softcaps
(variant: None) and gemma3's linear rope scaling on the global layers
(variant: default rope), plus gemma2's pre-cap logit and attention-score
ranges. max_position_embeddings is 128 everywhere (qlora-train refuses a
data.seq_len above it; it changes no number here).

The 20-step fine-tunes of the families are make_family_train_fixture.py's
(tests/golden/train/fam_*, tests/e2e/family_train.sh).
    ... make_family_fixtures.py [case ...]   only those cases
"""
import copy
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_dir, write_meta  # noqa: E402
from make_model_fixtures import bf16_exact  # noqa: E402

import peft  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

SCRIPT = "tools/reference/make_family_fixtures.py"
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PHI4 = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
SPLITS = [[13, 3], [6, 2, 8]]
T = 16
SEEDS = {"fam_qwen3": 21, "fam_qwen3_sw": 22, "fam_mistral_sw": 23, "fam_gemma2": 24,
         "fam_gemma3": 25, "fam_phi3": 26, "fam_phi3_sw": 27, "fam_phi3_nf4": 28}
CASES = list(SEEDS)


def family_config(case):
    common = dict(max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    if case == "fam_qwen3":
        return transformers.Qwen3Config(
            vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-6,
            tie_word_embeddings=True, attention_bias=False, use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **common)
    if case == "fam_qwen3_sw":
        return transformers.Qwen3Config(
            vocab_size=89, hidden_size=32, intermediate_size=40, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
            tie_word_embeddings=False, attention_bias=True, use_sliding_window=True,
            sliding_window=5, max_window_layers=1,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, **common)
    if case == "fam_mistral_sw":
        return transformers.MistralConfig(
            vocab_size=71, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-5,
            tie_word_embeddings=False, sliding_window=4, rope_theta=10000.0, **common)
    if case == "fam_gemma2":
        return transformers.Gemma2Config(
            vocab_size=83, hidden_size=48, intermediate_size=32, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
            query_pre_attn_scalar=24, attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
            sliding_window=4, tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh",
            pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            **common)
    if case == "fam_gemma3":
        return transformers.Gemma3TextConfig(
            vocab_size=79, hidden_size=32, intermediate_size=32, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-6,
            query_pre_attn_scalar=20, sliding_window=4, sliding_window_pattern=2,
            tie_word_embeddings=False, hidden_activation="gelu_pytorch_tanh", pad_token_id=0,
            rope_theta=1000000.0, rope_local_base_freq=10000.0,
            rope_scaling={"rope_type": "linear", "factor": 2.0}, **common)
    if case in ("fam_phi3", "fam_phi3_sw", "fam_phi3_nf4"):
        nf4 = case == "fam_phi3_nf4"
        return transformers.Phi3Config(
            vocab_size=96 if nf4 else 73, hidden_size=64 if nf4 else 32,
            intermediate_size=128 if nf4 else 48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            tie_word_embeddings=False, sliding_window=5 if case == "fam_phi3_sw" else None,
            original_max_position_embeddings=128, pad_token_id=0,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **common)
    raise ValueError(case)


def lora_setup(case):
    if case == "fam_qwen3":
        return dict(r=4, lora_alpha=6.0, target_modules=list(ALL7), use_rslora=False)
    if case == "fam_qwen3_sw":
        return dict(r=2, lora_alpha=4.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                    use_rslora=False)
    if case == "fam_mistral_sw":
        return dict(r=3, lora_alpha=6.0, target_modules=["q_proj", "v_proj", "gate_proj",
                                                         "down_proj"], use_rslora=False)
    if case == "fam_gemma2":
        return dict(r=4, lora_alpha=8.0, target_modules=list(ALL7), use_rslora=False)
    if case == "fam_gemma3":
        return dict(r=4, lora_alpha=4.0, target_modules=list(ALL7), use_rslora=True)
    if case in ("fam_phi3", "fam_phi3_nf4"):
        return dict(r=4, lora_alpha=8.0, target_modules=list(PHI4), use_rslora=False)
    if case == "fam_phi3_sw":
        return dict(r=3, lora_alpha=6.0, target_modules=["qkv_proj", "down_proj"],
                    use_rslora=False)
    raise ValueError(case)


def is_gemma(case):
    return case.startswith("fam_gemma")


def randomize(case, model):
    """Every weight random; see the docstring."""
    torch.manual_seed(SEEDS[case] * 1000 + 7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            elif "norm" in n:
                p.copy_((0.0 if is_gemma(case) else 1.0) + 0.2 * torch.randn_like(p))
            else:
                s = 0.6
                if case == "fam_gemma2" and ("q_proj" in n or "k_proj" in n):
                    s = 3.0  # attention scores of several units: softcap 5 bites
                if case == "fam_gemma2" and "embed_tokens" in n:
                    s = 2.5  # tied lm_head: pre-cap logits of several units
                p.copy_(torch.randn_like(p) * (s / p.shape[-1] ** 0.5))


def family_model(case, cfg=None):
    cfg = cfg if cfg is not None else family_config(case)
    torch.manual_seed(SEEDS[case])
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()
    randomize(case, model)
    return model


def batch(V, seed):
    """B rows of T tokens packed as SPLITS; labels -100 on two tokens."""
    g = torch.Generator().manual_seed(seed)
    B = len(SPLITS)
    ids = torch.randint(3, V, (B * T,), generator=g)
    labels = ids.clone()
    labels[2] = -100
    labels[T + 9] = -100
    pos, doc, docs = [], [], []
    d = 0
    for b in range(B):
        start = b * T
        assert sum(SPLITS[b]) == T
        for n in SPLITS[b]:
            docs.append((start, start + n))
            pos += list(range(n))
            doc += [d] * n
            d += 1
            start += n
    return B, ids, labels, torch.tensor(pos), torch.tensor(doc), docs


def doc_logits(model, ids, docs, V):
    out = torch.zeros(ids.numel(), V)
    with torch.no_grad():
        for s, e in docs:
            out[s:e] = model(input_ids=ids[s:e][None]).logits[0].float()
    return out


def variant_diff(case, sd, ids, docs, pos_out=False, **over):
    """max |logits(model) - logits(model with config changes `over`)|, base only."""
    cfg = copy.deepcopy(family_config(case))
    V = cfg.vocab_size
    ref = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()
    ref.load_state_dict(sd)
    cfg2 = copy.deepcopy(cfg)  # from_config keeps the object: never mutate ref's
    for k, v in over.items():
        setattr(cfg2, k, v)
    alt = AutoModelForCausalLM.from_config(cfg2, attn_implementation="eager").float()
    assert alt.config is not ref.config
    alt.load_state_dict(sd)
    ref.eval()
    alt.eval()
    d = (doc_logits(ref, ids, docs, V) - doc_logits(alt, ids, docs, V)).abs().max(dim=1).values
    if not pos_out:
        return d.max().item()
    # the first position (within its document) whose logits change
    pos = batch(V, 99)[3]
    changed = pos[d > 0]
    return d.max().item(), (int(changed.min()) if changed.numel() else None)


def effects(case, sd):
    cfg = family_config(case)
    V = cfg.vocab_size
    _, ids, _, _, _, docs = batch(V, 99)
    res = {}
    if getattr(cfg, "sliding_window", None) is not None:
        dmax, first = variant_diff(case, sd, ids, docs, pos_out=True, sliding_window=1000)
        res["window_on_vs_off_max_abs_logit_diff"] = dmax
        # key j visible from query i iff i - W < j <= i: positions < W see their
        # whole prefix, so the first position that changes is W itself
        res["window_on_vs_off_first_changed_pos"] = first
        assert first == cfg.sliding_window, (first, cfg.sliding_window)
    if case in ("fam_qwen3_sw", "fam_gemma2", "fam_gemma3"):
        # the full-attention layers really are full: all layers sliding differs
        res["all_layers_sliding_vs_config_max_abs_logit_diff"] = variant_diff(
            case, sd, ids, docs, layer_types=["sliding_attention"] * cfg.num_hidden_layers)
    if case == "fam_gemma2":
        res["attn_softcap_on_vs_off_max_abs_logit_diff"] = variant_diff(
            case, sd, ids, docs, attn_logit_softcapping=None)
        res["final_softcap_on_vs_off_max_abs_logit_diff"] = variant_diff(
            case, sd, ids, docs, final_logit_softcapping=None)
        # pre-cap logits and attention scores
        cfg2 = copy.deepcopy(cfg)
        cfg2.final_logit_softcapping = None
        m = AutoModelForCausalLM.from_config(cfg2, attn_implementation="eager").float()
        m.load_state_dict(sd)
        m.eval()
        raw = doc_logits(m, ids, docs, V)
        res["precap_logit_absmax"] = raw.abs().max().item()
        res["precap_logit_abs_mean"] = raw.abs().mean().item()
        res["precap_frac_abs_gt_softcap"] = (raw.abs() > 3.0).float().mean().item()
        scores = []

        import transformers.models.gemma2.modeling_gemma2 as mg
        orig = mg.eager_attention_forward

        def spy(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                softcap=None, **kw):
            k = mg.repeat_kv(key, module.num_key_value_groups)
            w = torch.matmul(query, k.transpose(2, 3)) * scaling
            scores.append(w.abs().max().item())
            return orig(module, query, key, value, attention_mask, dropout=dropout,
                        scaling=scaling, softcap=softcap, **kw)
        mg.eager_attention_forward = spy
        try:
            m2 = AutoModelForCausalLM.from_config(copy.deepcopy(cfg),
                                                  attn_implementation="eager").float()
            m2.load_state_dict(sd)
            m2.eval()
            doc_logits(m2, ids, docs, V)
        finally:
            mg.eager_attention_forward = orig
        res["precap_attn_score_absmax"] = max(scores) if scores else None
    if case == "fam_gemma3":
        # global layers' linear rope scaling: factor 2 vs none
        rp = copy.deepcopy(cfg.rope_parameters)
        rp["full_attention"] = {"rope_type": "default",
                                "rope_theta": rp["full_attention"]["rope_theta"]}
        res["rope_linear_on_vs_off_max_abs_logit_diff"] = variant_diff(case, sd, ids, docs,
                                                                       rope_parameters=rp)
    return res


def clean_dir(d):
    for f in os.listdir(d):
        if f == "generation_config.json":
            os.remove(os.path.join(d, f))


def save_adapter(pm, adir):
    """PEFT save_pretrained, only the config and the weights kept; target_modules
    (a set inside PEFT, so in hash order) sorted so reruns are byte-identical."""
    if os.path.isdir(adir):
        shutil.rmtree(adir)
    pm.save_pretrained(adir)
    for f in os.listdir(adir):
        if f not in ("adapter_config.json", "adapter_model.safetensors"):
            os.remove(os.path.join(adir, f))
    path = os.path.join(adir, "adapter_config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True))


def run_case(case, model, quantized=False, extra=None):
    out = os.path.join(golden_dir("model"), case)
    os.makedirs(out, exist_ok=True)
    V = model.config.vocab_size
    lcfg = peft.LoraConfig(lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                           **lora_setup(case))
    pm = peft.get_peft_model(model, lcfg)
    g = torch.Generator().manual_seed(1234 + SEEDS[case])
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n:
                p.copy_(bf16_exact((torch.rand(p.shape, generator=g) * 2 - 1) / p.shape[1] ** 0.5))
            elif "lora_B" in n:
                p.copy_(bf16_exact((torch.rand(p.shape, generator=g) * 2 - 1) * 0.3))
    pm.peft_config["default"].base_model_name_or_path = "tests/golden/model/" + case
    save_adapter(pm, os.path.join(out, "adapter"))
    B, ids, labels, pos, doc, docs = batch(V, 99)
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
    keys = []
    for key in sd:
        inner = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight")
        p = named[inner]
        assert byid[id(p)] == inner
        g_ = p.grad.detach().float().contiguous()
        assert g_.abs().max().item() > 0, key
        exp["grad." + key] = g_
        keys.append(key)
    for n, p in named.items():
        if "lora_" not in n:
            assert p.grad is None or not p.requires_grad, n
    save_file(exp, os.path.join(out, "expected.safetensors"), metadata={"format": "pt"})
    meta = {"script": SCRIPT, "loss_mean": total.item(), "count": count,
            "n_lora_grads": len(keys), "quantized": quantized,
            "logit_absmax": logits.abs().max().item()}
    meta.update(extra or {})
    meta["reload_max_abs_logit_diff"] = reload_check(case, logits)
    write_meta("model", case, meta)
    print(case, json.dumps(meta, sort_keys=True))
    print("  grad keys:", keys[:4], "...")
    return pm


def reload_check(case, logits):
    """The written files alone (config.json, model.safetensors, adapter/) must
    give the expected logits: loads them as a user would and compares."""
    out = os.path.join(golden_dir("model"), case)
    kw = {"device_map": "cpu"} if case.endswith("_nf4") else {}
    base = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                attn_implementation="eager", **kw)
    pm = peft.PeftModel.from_pretrained(base, os.path.join(out, "adapter"))
    # train mode (dropout is 0): in eval mode without grad, bitsandbytes on an
    # avx512bf16 CPU repacks 4-bit weights for a CPU kernel whose numbers differ
    # (~2e-2 in the logits here); the fixtures hold the dequantize + fp32 matmul
    # path, which is what training runs
    pm.train()
    V = base.config.vocab_size
    _, ids, _, _, _, docs = batch(V, 99)
    d = (doc_logits(pm, ids, docs, V) - logits).abs().max().item()
    assert d <= 1e-5 * max(1.0, logits.abs().max().item()), (case, d)
    return d


def dense_case(case):
    model = family_model(case)
    out = os.path.join(golden_dir("model"), case)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    model.save_pretrained(out)
    clean_dir(out)
    # the saved config must build the same model
    re = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                              attn_implementation="eager")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in re.state_dict().items():
        assert torch.equal(v, sd[k]), k
    eff = effects(case, sd)
    run_case(case, model, extra={"effects": eff})


def nf4_case(case="fam_phi3_nf4"):
    import bitsandbytes as bnb
    import bitsandbytes.functional as BF
    from transformers import BitsAndBytesConfig
    out = os.path.join(golden_dir("model"), case)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    src = os.path.join(out, "_src")
    model = family_model(case)
    for n, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in n:
            assert mod.in_features % 64 == 0, n
    model.save_pretrained(src)
    bcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)
    q = AutoModelForCausalLM.from_pretrained(src, quantization_config=bcfg, dtype=torch.float32,
                                             device_map="cpu", attn_implementation="eager")
    shutil.rmtree(src)
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
    assert nq == 8, nq  # qkv, o, gate_up, down x 2 layers
    q.save_pretrained(out)
    clean_dir(out)
    run_case(case, q, quantized=True, extra={"n_4bit_linears": nq})


def make(case):
    if case == "fam_phi3_nf4":
        nf4_case(case)
    else:
        dense_case(case)



if __name__ == "__main__":
    torch.set_num_threads(2)
    args = sys.argv[1:]
    for c in (args or CASES):
        make(c)
