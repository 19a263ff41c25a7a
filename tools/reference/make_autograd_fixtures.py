#!/usr/bin/env python3
"""Golden fixtures for autograd/ (tests/autograd/test_tape_decoder.c, test_rope_golden.c).

Run with the reference virtualenv (tools/reference/setup_venv.sh; on the team
machine /work/venv-ref/bin/python):

    /work/venv-ref/bin/python tools/reference/make_autograd_fixtures.py

Writes, under tests/golden/autograd/:

rope_inv_freq.txt — RoPE inverse frequencies from transformers'
  LlamaRotaryEmbedding(config).inv_freq (modeling_rope_utils ROPE_INIT_FUNCTIONS)
  for default / linear / llama3 scaling. Lines: 'case <type> <head_dim> <theta> <factor> <low> <high> <orig_ctx>'
  then 'inv_freq' and head_dim/2 float32 bit patterns in hex.

llama_lora_{untied,tied}.txt — loss and every LoRA gradient of a two-layer
  LlamaForCausalLM (transformers, eager attention, float64) with PEFT LoRA on
  q,k,v,o,gate,up,down (r=3, alpha=6, dropout 0), GQA 4 heads / 2 kv heads,
  head_dim 6, llama3 rope scaling. The weights are not stored: each tensor is
  drawn from splitmix64 with the seed and range given on its 'tensor' line (the
  C test draws the same numbers; tests/autograd/ag_test_util.h). Two packed
  rows of 9 tokens hold two documents each; transformers runs each document as
  its own sequence (positions from 0), which is what per-document masking with
  restarting positions must reproduce. The loss is ForCausalLMLoss with
  num_items_in_batch = all target tokens, i.e. summed CE / count; the
  gradients are of that mean. Lines:
    'config key value', 'tensor name rows cols seed lo hi',
    'ids|labels|doc ...' (per packed token; labels unshifted, -100 = ignored),
    'loss_sum x', 'count n', 'grad name n' followed by n values.
Values are written with 17 significant digits.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_dir, write_meta  # noqa: E402

import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402
import peft  # noqa: E402

M64 = (1 << 64) - 1


def splitmix_fill(seed, n, lo, hi):
    """Same stream as ag_rng/ag_unif in tests/autograd/ag_test_util.h."""
    s = seed & M64
    out = []
    for _ in range(n):
        s = (s + 0x9E3779B97F4A7C15) & M64
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        out.append(lo + (hi - lo) * float(z >> 11) * (1.0 / 9007199254740992.0))
    return out


def rope_fixture():
    cases = [
        ("default", 64, 10000.0, 1.0, 1.0, 4.0, 2048),
        ("default", 128, 500000.0, 1.0, 1.0, 4.0, 2048),
        ("default", 6, 10000.0, 1.0, 1.0, 4.0, 2048),
        ("linear", 64, 10000.0, 4.0, 1.0, 4.0, 2048),
        ("linear", 128, 1000000.0, 2.5, 1.0, 4.0, 2048),
        ("llama3", 128, 500000.0, 8.0, 1.0, 4.0, 8192),
        ("llama3", 64, 500000.0, 32.0, 1.0, 4.0, 8192),
        ("llama3", 6, 10000.0, 8.0, 1.0, 4.0, 16),
        ("llama3", 96, 10000.0, 4.0, 2.0, 8.0, 512),
    ]
    lines = ["# RoPE inv_freq from transformers %s LlamaRotaryEmbedding, torch %s"
             % (transformers.__version__, torch.__version__)]
    for typ, dim, theta, factor, low, high, orig in cases:
        rp = {"rope_type": typ, "rope_theta": theta}
        if typ in ("linear", "llama3"):
            rp["factor"] = factor
        if typ == "llama3":
            rp.update(low_freq_factor=low, high_freq_factor=high,
                      original_max_position_embeddings=orig)
        cfg = LlamaConfig(hidden_size=dim * 2, num_attention_heads=2, head_dim=dim,
                          rope_parameters=rp, max_position_embeddings=4 * orig)
        # The buffer the model itself uses (default: compute_default_rope_parameters,
        # others: ROPE_INIT_FUNCTIONS[rope_type]).
        inv = LlamaRotaryEmbedding(config=cfg).inv_freq
        assert inv.dtype == torch.float32 and inv.numel() == dim // 2
        lines.append("case %s %d %r %r %r %r %d" % (typ, dim, theta, factor, low, high, orig))
        lines.append("inv_freq " + " ".join("%08x" % v for v in inv.view(torch.int32).tolist()))
    path = os.path.join(golden_dir("autograd"), "rope_inv_freq.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    write_meta("autograd", "rope_inv_freq", {"script": "tools/reference/make_autograd_fixtures.py"})


# Must match tests/autograd/test_tape_decoder.c.
B, T, C, H, K, D, F, V, R, L = 2, 9, 20, 4, 2, 6, 28, 37, 3, 2
ALPHA = 6.0
SPLIT = [4, 6]
PROJ = [("self_attn", "q_proj", H * D, C), ("self_attn", "k_proj", K * D, C),
        ("self_attn", "v_proj", K * D, C), ("self_attn", "o_proj", C, H * D),
        ("mlp", "gate_proj", F, C), ("mlp", "up_proj", F, C), ("mlp", "down_proj", C, F)]
RP = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def llama_fixture(tied, base_seed):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                      num_attention_heads=H, num_key_value_heads=K, head_dim=D,
                      rms_norm_eps=1e-5, rope_parameters=dict(RP), tie_word_embeddings=tied,
                      max_position_embeddings=64, attention_bias=False, mlp_bias=False)
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).to(torch.float64)
    lcfg = peft.LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0,
                           target_modules=[p[1] for p in PROJ], bias="none")
    pm = peft.get_peft_model(model, lcfg)
    pm.train()
    base = pm.base_model.model
    specs = []  # (name, tensor, rows, cols, lo, hi)
    specs.append(("embed", base.model.embed_tokens.weight, V, C, -1.0, 1.0))
    if not tied:
        specs.append(("lm_head", base.lm_head.weight, V, C, -1.0, 1.0))
    specs.append(("norm", base.model.norm.weight, 1, C, 0.8, 1.2))
    for l in range(L):
        layer = base.model.layers[l]
        specs.append(("L%d.input_layernorm" % l, layer.input_layernorm.weight, 1, C, 0.8, 1.2))
        specs.append(("L%d.post_attention_layernorm" % l, layer.post_attention_layernorm.weight,
                      1, C, 0.8, 1.2))
        for blk, name, out, inp in PROJ:
            mod = getattr(getattr(layer, blk), name)
            b = 1.0 / inp ** 0.5
            specs.append(("L%d.%s" % (l, name), mod.base_layer.weight, out, inp, -b, b))
            specs.append(("L%d.%s.lora_A" % (l, name), mod.lora_A["default"].weight, R, inp, -b, b))
            specs.append(("L%d.%s.lora_B" % (l, name), mod.lora_B["default"].weight, out, R, -0.5, 0.5))
    lines = ["# two-layer Llama + PEFT LoRA, float64, eager attention; transformers %s, peft %s, torch %s"
             % (transformers.__version__, peft.__version__, torch.__version__)]
    for k, v in [("B", B), ("T", T), ("C", C), ("H", H), ("K", K), ("D", D), ("F", F), ("V", V),
                 ("R", R), ("L", L), ("tied", int(tied)), ("lora_alpha", ALPHA)]:
        lines.append("config %s %r" % (k, v))
    with torch.no_grad():
        for i, (name, t, rows, cols, lo, hi) in enumerate(specs):
            assert tuple(t.shape) == ((rows, cols) if rows > 1 else (cols,)), (name, t.shape)
            seed = base_seed * 1000 + i
            vals = torch.tensor(splitmix_fill(seed, rows * cols, lo, hi), dtype=torch.float64)
            t.copy_(vals.view(t.shape))
            lines.append("tensor %s %d %d %d %r %r" % (name, rows, cols, seed, lo, hi))
    if tied:
        assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()
    ids = [int(v * (V - 1)) % V for v in splitmix_fill(base_seed * 1000 + 999, B * T, 0.0, 1.0)]
    doc = [b * 2 + (t >= SPLIT[b]) for b in range(B) for t in range(T)]
    labels = list(ids)
    labels[1] = -100     # a prompt token, masked
    labels[T + 7] = -100
    docs = []
    for b in range(B):
        docs.append((b * T, b * T + SPLIT[b]))
        docs.append((b * T + SPLIT[b], (b + 1) * T))
    count = sum(1 for s, e in docs for n in range(s + 1, e) if labels[n] != -100)
    total = None
    for s, e in docs:
        out = pm(input_ids=torch.tensor([ids[s:e]]), labels=torch.tensor([labels[s:e]]),
                 num_items_in_batch=torch.tensor(count))
        total = out.loss if total is None else total + out.loss
    total.backward()
    lines.append("ids " + " ".join(map(str, ids)))
    lines.append("labels " + " ".join(map(str, labels)))
    lines.append("doc " + " ".join(map(str, doc)))
    lines.append("loss_sum %.17g" % (total.item() * count))
    lines.append("count %d" % count)
    for name, t, rows, cols, lo, hi in specs:
        if ".lora_" in name:
            g = t.grad.reshape(-1).tolist()
            lines.append("grad %s %d" % (name, len(g)))
            lines.append(" ".join("%.17g" % v for v in g))
        else:
            assert t.grad is None, name  # frozen base weights get no gradient in PEFT either
    fname = "llama_lora_%s" % ("tied" if tied else "untied")
    with open(os.path.join(golden_dir("autograd"), fname + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_meta("autograd", fname, {"script": "tools/reference/make_autograd_fixtures.py",
                                   "loss_mean": total.item(), "count": count})


if __name__ == "__main__":
    torch.set_num_threads(1)
    rope_fixture()
    llama_fixture(False, 5)
    llama_fixture(True, 6)
