"""Loads a merged model written by `qlora-train export --format merged` with
transformers and prints its mean next-token loss on a JSONL text file (each
record BOS + text + EOS, truncated to --seq-len tokens, pooled over the file:
the semantics of `qlora-train eval`), to compare with qlora-train's own eval of
the same directory. A check run by hand (CI has no Python):

    qlora-train export CONFIG --format merged --out M --set export.dtype=fp32
    qlora-train eval CONFIG --set model.path=M --set model.quant=none ...
    /work/venv-ref/bin/python tools/reference/check_merged_export.py M DATA.jsonl --seq-len 64
"""
import argparse
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--seq-len", type=int, default=512)
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    total, count = 0.0, 0
    with open(a.data, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            text = json.loads(line)["text"]
            ids = ([tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:a.seq_len]
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = model(input_ids=x).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum")
            total += loss.item()
            count += len(ids) - 1
    print(json.dumps({"loss": total / count, "tokens": count, "dtype": str(model.dtype)}))


if __name__ == "__main__":
    main()
