"""Per-step losses of 20-step LoRA fine-tunes of the newer model families with
transformers + PEFT (fp32, CPU): the reference for tests/e2e/family_train.sh.

The recipe is make_train_fixture.py's (stories260K's tokenizer, the first 40
TinyStories training records in file order, each BOS + text + EOS truncated to
128 tokens, 2 rows per step padded (right) with the attention mask, 20 steps
of torch.optim.AdamW lr 1e-3 constant, betas 0.9/0.999, eps 1e-8, no weight
decay, global-norm clipping at 1.0, LoRA r 4, alpha 8, dropout 0, initial A
and B random and saved), on small random models of each family whose vocab
is the stories260K tokenizer's (512 ids) and whose sliding windows (16) are
shorter than the rows, so the window, the soft-caps and the family's layer all
shape the losses:

  qwen3   q/k norms, head_dim 24 != hidden/heads, GQA 4/2, use_sliding_window
          with max_window_layers 1 (layer 1 slides), tied embeddings
  gemma2  GeGLU, (1 + w) norms, pre/post norms, embeddings x sqrt(hidden),
          query_pre_attn_scalar 20, attention soft-cap 2 and final-logit
          soft-cap 4 (small, so tanh bites), alternating windows, tied
  gemma3  q/k norms, local (10000) and global (1e6, linear x2) RoPE, layer
          types sliding/full alternating, untied
  phi3    fused qkv_proj and gate_up_proj, window 16 on every layer, untied
  mistral window 16 on every layer

Writes tests/golden/train/fam_<name>/: config.json + model.safetensors (the
base; the e2e test adds stories260K's tokenizer files beside them),
init_adapter/ (PEFT) and losses.json. Run with the reference virtualenv:
    ~/.cache/qlora-train/venv-ref/bin/python tools/reference/make_family_train_fixture.py
"""
import json
import os
import shutil
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_dir, write_meta  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
TOKDIR = os.path.join(SHARED, "stories260K")
TRAIN = os.path.join(SHARED, "tinystories", "train.jsonl")
STEPS, ROWS, SEQ = 20, 2, 128
LR, CLIP = 1e-3, 1.0
COMMON = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)

FAMILIES = {
    "qwen3": (dict(model_type="qwen3", head_dim=24, num_hidden_layers=2, tie_word_embeddings=True,
                   use_sliding_window=True, sliding_window=16, max_window_layers=1,
                   attention_bias=False, rope_theta=10000.0),
              ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "gemma2": (dict(model_type="gemma2", head_dim=16, num_hidden_layers=2, tie_word_embeddings=True,
                    query_pre_attn_scalar=20, attn_logit_softcapping=2.0,
                    final_logit_softcapping=4.0, sliding_window=16,
                    hidden_activation="gelu_pytorch_tanh"),
               ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "gemma3": (dict(model_type="gemma3_text", head_dim=16, num_hidden_layers=2,
                    tie_word_embeddings=False, query_pre_attn_scalar=16, sliding_window=16,
                    layer_types=["sliding_attention", "full_attention"],
                    rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                                        "rope_theta": 1000000.0},
                                     "sliding_attention": {"rope_type": "default",
                                                           "rope_theta": 10000.0}}),
               ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "phi3": (dict(model_type="phi3", num_hidden_layers=2, tie_word_embeddings=False,
                  sliding_window=16, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
                  original_max_position_embeddings=256),
             ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
    "mistral": (dict(model_type="mistral", num_hidden_layers=2, tie_word_embeddings=False,
                     sliding_window=16, head_dim=16),
                ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
}


def make_model(name, extra, seed):
    kw = dict(COMMON)
    kw.update(extra)
    mt = kw.pop("model_type")
    cfg = AutoConfig.for_model(mt, **kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model = model.to(torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1:  # norms: random, so (1 + w) and w differ visibly
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if "gemma" not in mt
                        else 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.08)
    return model


def main():
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(TOKDIR)
    texts = []
    with open(TRAIN, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == STEPS * ROWS:
                break
    examples = []
    for t in texts:
        ids = [tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append(ids[:SEQ])
    for i, (name, (extra, targets)) in enumerate(FAMILIES.items()):
        out = os.path.join(golden_dir("train"), "fam_" + name)
        shutil.rmtree(out, ignore_errors=True)
        model = make_model(name, extra, 1000 + 17 * i)
        model.save_pretrained(out, safe_serialization=True)
        for extra_file in ("generation_config.json",):
            p = os.path.join(out, extra_file)
            if os.path.exists(p):
                os.remove(p)
        cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, bias="none",
                         task_type="CAUSAL_LM")
        pm = get_peft_model(model, cfg)
        g = torch.Generator().manual_seed(99 + i)
        with torch.no_grad():
            for pname, p in pm.named_parameters():
                if "lora_A" in pname or "lora_B" in pname:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        pm.save_pretrained(os.path.join(out, "init_adapter"))
        os.remove(os.path.join(out, "init_adapter", "README.md"))
        params = [p for p in pm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        pm.train()
        losses, norms = [], []
        for step in range(STEPS):
            batch = examples[step * ROWS:(step + 1) * ROWS]
            width = max(len(ex) for ex in batch)  # padded to the longest row, as ours
            ids = torch.full((ROWS, width), tok.eos_token_id, dtype=torch.long)
            labels = torch.full((ROWS, width), -100, dtype=torch.long)
            mask = torch.zeros((ROWS, width), dtype=torch.long)
            for r, ex in enumerate(batch):
                ids[r, :len(ex)] = torch.tensor(ex)
                labels[r, :len(ex)] = torch.tensor(ex)
                mask[r, :len(ex)] = 1
            opt.zero_grad()
            loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
            losses.append(loss.item())
            norms.append(norm.item())
        print(f"{name}: losses {losses[0]:.6f} .. {losses[-1]:.6f}")
        with open(os.path.join(out, "losses.json"), "w", encoding="utf-8") as f:
            json.dump({"family": name, "steps": STEPS, "rows": ROWS, "seq_len": SEQ, "lr": LR,
                       "max_grad_norm": CLIP, "target_modules": targets, "loss": losses,
                       "grad_norm": norms}, f, indent=1)
            f.write("\n")
        write_meta("train", "fam_" + name, {"script": "tools/reference/make_family_train_fixture.py"})


if __name__ == "__main__":
    main()
