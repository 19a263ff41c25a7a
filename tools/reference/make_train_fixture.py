"""Per-step losses of a short LoRA fine-tune with transformers + PEFT (fp32, CPU),
the reference for tests/e2e/reference.sh (issue: equivalence with the
reference stack).

The run: stories260K (../shared/data/stories260K), LoRA r=4, alpha=8, dropout 0
on all seven projections, initial adapter weights written here (A and B random,
B nonzero) and loaded by both sides, the first 40 TinyStories training records
in file order, each BOS + text + EOS truncated to the first 128 tokens, 2 rows
per step padded to 128 (padding labelled -100 and masked), 20 steps of
torch.optim.AdamW (lr 1e-3 constant, betas 0.9/0.999, eps 1e-8, no weight
decay), global-norm clipping at 1.0. The loss of a step is the mean token
cross-entropy over the step's targets (transformers' ForCausalLMLoss).

Writes tests/golden/train/init_adapter/ (PEFT adapter directory) and
tests/golden/train/losses.json. Run with the reference virtualenv:
    /work/venv-ref/bin/python tools/reference/make_train_fixture.py
"""
import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_dir, write_meta  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
MODEL = os.path.join(SHARED, "stories260K")
TRAIN = os.path.join(SHARED, "tinystories", "train.jsonl")
STEPS, ROWS, SEQ = 20, 2, 128
LR, CLIP = 1e-3, 1.0
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    torch.manual_seed(1234)
    torch.set_num_threads(1)
    out = golden_dir("train")
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = LlamaForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.save_pretrained(os.path.join(out, "init_adapter"))
    os.remove(os.path.join(out, "init_adapter", "README.md"))  # PEFT's model card template
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
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    model.train()
    losses, norms = [], []
    for step in range(STEPS):
        batch = examples[step * ROWS:(step + 1) * ROWS]
        ids = torch.full((ROWS, SEQ), tok.eos_token_id, dtype=torch.long)
        labels = torch.full((ROWS, SEQ), -100, dtype=torch.long)
        mask = torch.zeros((ROWS, SEQ), dtype=torch.long)
        for r, ex in enumerate(batch):
            ids[r, :len(ex)] = torch.tensor(ex)
            labels[r, :len(ex)] = torch.tensor(ex)
            mask[r, :len(ex)] = 1
        opt.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
        print(f"step {step + 1}: loss {losses[-1]:.9g} grad_norm {norms[-1]:.6g}")
    with open(os.path.join(out, "losses.json"), "w", encoding="utf-8") as f:
        json.dump({"steps": STEPS, "rows": ROWS, "seq_len": SEQ, "lr": LR, "max_grad_norm": CLIP,
                   "loss": losses, "grad_norm": norms}, f, indent=1)
        f.write("\n")
    write_meta("train", "losses", {"script": "tools/reference/make_train_fixture.py"})


if __name__ == "__main__":
    main()
