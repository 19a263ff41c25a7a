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

attention_opts.txt — the attention op's options (scale, sliding window, logit
  soft-capping; autograd/ops.h qt_att_opts) against transformers itself:
  models/gemma2/modeling_gemma2.py eager_attention_forward (scores * scaling,
  softcap * tanh(scores / softcap), + mask, softmax in float32, repeat_kv GQA)
  with the additive mask from masking_utils.eager_mask over
  and_masks(causal_mask_function, sliding_window_overlay(window),
  packed_sequence_mask_function(doc)) (window 0: no overlay), inputs float64
  holding fp32-representable values, gradients of sum(out * dout) by autograd.
  Per case: 'case B T H K D scale window softcap seed' (scale 0: transformers'
  default head_dim^-0.5, softcap 0: None), 'doc ...' (B*T ids), then
  'out n', 'dq n', 'dk n', 'dv n' each followed by n values in the C layouts
  q, out (B*T, H, D), k, v (B*T, K, D). Inputs are not stored: q, k from
  splitmix64 seeds seed*10+0, +1 in [-2, 2), v, dout from +2, +3 in [-1, 1),
  each value rounded to fp32 (tests/autograd/test_ops_grad.c draws the same).

family_ops.txt — the ops the Qwen3 / Gemma 2/3 / Phi-3 families add
  (tests/autograd/test_ops_family.c), in float64 from inputs holding
  fp32-representable values:
  'geglu n seed': transformers ACT2FN["gelu_pytorch_tanh"] (GemmaMLP's act_fn,
    torch gelu approximate="tanh") of gate times up; gate from splitmix64 seed*10+0
    in [-GMAX, GMAX) (GMAX on the 'range' line), up +1 in [-2, 2), dout +2 in
    [-1, 1); then 'out n', 'dgate n', 'dup n' (gradients of sum(out * dout)).
  'rmsnorm_heads N H D eps seed': transformers Qwen3RMSNorm(D) over
    x.view(N, H, D) (Qwen3Attention.q_norm): its forward's formula in float64
    (the module itself casts to float32 inside; the fixture checks that it agrees
    to fp32 accuracy); x from seed*10+0 in [-2, 2), w +1 in [0.5, 1.5), dout +2 in
    [-1, 1); then 'out n', 'dx n'.
  'ce_softcap N C V cap seed': Gemma2ForCausalLM.forward's final-logit
    soft-capping (logits / cap, tanh, * cap) of x W^T, then cross_entropy(...,
    ignore_index=-100, reduction="sum"); x from seed*10+0, W +1, both in
    [-1, 1); 'targets ...' (N, -100 = ignored); then 'loss_sum x', 'count n',
    'zc n' (the capped logits, (N, V)), 'dx n' (d loss_sum / dx).

Run with fixture names as arguments (rope_inv_freq, llama_lora, attention_opts,
family_ops) to write only those.
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


# Must match tests/autograd/test_ops_grad.c test_attention_opts_golden.
# (B, T, H, K, D, scale, window, softcap, seed, document lengths per row)
ATT_CASES = [
    (2, 67, 4, 2, 4, 0.3, 5, 2.0, 11, [[30, 37], [10, 20, 37]]),
    (1, 130, 2, 1, 8, 0.0, 40, 5.0, 12, [[100, 30]]),
    (1, 20, 3, 3, 4, 0.5, 0, 1.0, 13, [[20]]),
    (1, 33, 2, 1, 6, 0.0, 7, 0.0, 14, [[12, 21]]),
    (1, 70, 2, 1, 8, 0.25, 1, 3.0, 15, [[70]]),
]


class _AttnModule:
    """What eager_attention_forward reads from its module argument."""

    def __init__(self, head_dim, groups):
        self.head_dim = head_dim
        self.num_key_value_groups = groups
        self.training = False


def attention_opts_fixture():
    from transformers.masking_utils import (and_masks, causal_mask_function, eager_mask,
                                            packed_sequence_mask_function,
                                            sliding_window_overlay)
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    lines = ["# attention options vs transformers %s gemma2 eager_attention_forward, torch %s"
             % (transformers.__version__, torch.__version__)]
    for Bc, Tc, Hc, Kc, Dc, scale, window, softcap, seed, lens in ATT_CASES:
        assert len(lens) == Bc and all(sum(r) == Tc for r in lens)
        doc = []
        for b, row in enumerate(lens):
            for d, n in enumerate(row):
                doc += [b * 100 + d] * n

        def draw(off, n, lo, hi):
            v = torch.tensor(splitmix_fill(seed * 10 + off, n, lo, hi), dtype=torch.float32)
            return v.to(torch.float64)

        q = draw(0, Bc * Tc * Hc * Dc, -2.0, 2.0).view(Bc, Tc, Hc, Dc).requires_grad_()
        k = draw(1, Bc * Tc * Kc * Dc, -2.0, 2.0).view(Bc, Tc, Kc, Dc).requires_grad_()
        v = draw(2, Bc * Tc * Kc * Dc, -1.0, 1.0).view(Bc, Tc, Kc, Dc).requires_grad_()
        dout = draw(3, Bc * Tc * Hc * Dc, -1.0, 1.0).view(Bc, Tc, Hc, Dc)
        fns = [causal_mask_function]
        if window > 0:
            fns.append(sliding_window_overlay(window))
        fns.append(packed_sequence_mask_function(torch.tensor(doc).view(Bc, Tc)))
        mask = eager_mask(batch_size=Bc, q_length=Tc, kv_length=Tc,
                          mask_function=and_masks(*fns), dtype=torch.float64)
        out, _ = eager_attention_forward(
            _AttnModule(Dc, Hc // Kc), q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            mask, dropout=0.0, scaling=scale if scale > 0 else None,
            softcap=softcap if softcap > 0 else None)
        assert tuple(out.shape) == (Bc, Tc, Hc, Dc)
        (out * dout).sum().backward()
        lines.append("case %d %d %d %d %d %r %d %r %d"
                     % (Bc, Tc, Hc, Kc, Dc, scale, window, softcap, seed))
        lines.append("doc " + " ".join(map(str, doc)))
        for name, t in [("out", out.detach()), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)]:
            vals = t.reshape(-1).tolist()
            lines.append("%s %d" % (name, len(vals)))
            lines.append(" ".join("%.17g" % x for x in vals))
    with open(os.path.join(golden_dir("autograd"), "attention_opts.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_meta("autograd", "attention_opts", {"script": "tools/reference/make_autograd_fixtures.py",
                                              "cases": len(ATT_CASES)})


# Must match tests/autograd/test_ops_family.c.
GEGLU_CASES = [(1000, 21, 6.0), (257, 22, 14.0)]          # (n, seed, gate range)
RMSH_CASES = [(5, 3, 8, 1e-6, 31), (7, 2, 17, 1e-5, 32)]  # (N, H, D, eps, seed)
CE_CASES = [(9, 12, 37, 2.0, 41), (6, 16, 29, 0.5, 42), (5, 8, 23, 30.0, 43)]  # (N, C, V, cap, seed)


def family_ops_fixture():
    from transformers.activations import ACT2FN
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    def draw(seed, off, n, lo, hi):
        v = torch.tensor(splitmix_fill(seed * 10 + off, n, lo, hi), dtype=torch.float32)
        return v.to(torch.float64)

    def put(lines, name, t):
        vals = t.reshape(-1).tolist()
        lines.append("%s %d" % (name, len(vals)))
        lines.append(" ".join("%.17g" % x for x in vals))

    lines = ["# family ops (GeGLU, per-head RMSNorm, CE with final-logit soft-capping), float64; "
             "transformers %s, torch %s" % (transformers.__version__, torch.__version__)]
    act = ACT2FN["gelu_pytorch_tanh"]
    for n, seed, gmax in GEGLU_CASES:
        gate = draw(seed, 0, n, -gmax, gmax).requires_grad_()
        up = draw(seed, 1, n, -2.0, 2.0).requires_grad_()
        dout = draw(seed, 2, n, -1.0, 1.0)
        out = act(gate) * up
        (out * dout).sum().backward()
        lines.append("geglu %d %d" % (n, seed))
        lines.append("range %r" % gmax)
        put(lines, "out", out.detach())
        put(lines, "dgate", gate.grad)
        put(lines, "dup", up.grad)
    for N, H, D, eps, seed in RMSH_CASES:
        x = draw(seed, 0, N * H * D, -2.0, 2.0).view(N, H * D).requires_grad_()
        norm = Qwen3RMSNorm(D, eps=eps).to(torch.float64)
        with torch.no_grad():
            norm.weight.copy_(draw(seed, 1, D, 0.5, 1.5))
        dout = draw(seed, 2, N * H * D, -1.0, 1.0)
        # Qwen3RMSNorm.forward without its hidden_states.to(torch.float32)
        xv = x.view(N, H, D)
        variance = xv.pow(2).mean(-1, keepdim=True)
        out = (norm.weight * (xv * torch.rsqrt(variance + eps))).reshape(N, H * D)
        with torch.no_grad():
            mod = norm(xv).reshape(N, H * D)
            assert mod.dtype == torch.float64
            assert ((mod - out).abs() <= 1e-6 * (1 + out.abs())).all()
        (out * dout.view(N, H * D)).sum().backward()
        lines.append("rmsnorm_heads %d %d %d %r %d" % (N, H, D, eps, seed))
        put(lines, "out", out.detach())
        put(lines, "dx", x.grad)
    for N, C, V, cap, seed in CE_CASES:
        x = draw(seed, 0, N * C, -1.0, 1.0).view(N, C).requires_grad_()
        W = draw(seed, 1, V * C, -1.0, 1.0).view(V, C)
        targets = [int(v * V) % V for v in splitmix_fill(seed * 10 + 2, N, 0.0, 1.0)]
        targets[1] = -100
        # transformers models/gemma2/modeling_gemma2.py Gemma2ForCausalLM.forward
        logits = x @ W.T
        logits = logits / cap
        logits = torch.tanh(logits)
        logits = logits * cap
        tg = torch.tensor(targets)
        # loss_utils ForCausalLMLoss's cross-entropy, kept in float64 (its
        # logits.float() would round this reference to fp32)
        loss = torch.nn.functional.cross_entropy(logits, tg, ignore_index=-100, reduction="sum")
        loss.backward()
        lines.append("ce_softcap %d %d %d %r %d" % (N, C, V, cap, seed))
        lines.append("targets " + " ".join(map(str, targets)))
        lines.append("loss_sum %.17g" % loss.item())
        lines.append("count %d" % sum(1 for t in targets if t != -100))
        put(lines, "zc", logits.detach())
        put(lines, "dx", x.grad)
    with open(os.path.join(golden_dir("autograd"), "family_ops.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_meta("autograd", "family_ops", {"script": "tools/reference/make_autograd_fixtures.py",
                                          "geglu_cases": len(GEGLU_CASES),
                                          "rmsnorm_heads_cases": len(RMSH_CASES),
                                          "ce_softcap_cases": len(CE_CASES)})


if __name__ == "__main__":
    torch.set_num_threads(1)
    only = set(sys.argv[1:])
    if not only or "rope_inv_freq" in only:
        rope_fixture()
    if not only or "llama_lora" in only:
        llama_fixture(False, 5)
        llama_fixture(True, 6)
    if not only or "attention_opts" in only:
        attention_opts_fixture()
    if not only or "family_ops" in only:
        family_ops_fixture()
