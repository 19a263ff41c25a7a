#!/usr/bin/env python3
"""bench/bench_generate_hf.py — transformers' fp32 greedy `generate` on a model
directory, the reference side of bench/bench_generate.sh.

    python bench/bench_generate_hf.py MODEL_DIR PROMPT NEW_TOKENS THREADS

The prompt is tokenized as qlora-train does (BOS + text); generation is greedy
(do_sample=False), eager attention, the default KV cache, EOS disabled so that
exactly NEW_TOKENS come. A logits processor timestamps every step. Prints one
JSON line: prompt and new token counts, total seconds, tokens/s after the
first token, and the mean ms per token over tokens 1-32 and the last 32.
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList


class Stamp(LogitsProcessor):
    def __init__(self):
        self.t = []

    def __call__(self, input_ids, scores):
        self.t.append(time.perf_counter())
        return scores


def main():
    path, prompt, new, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(path)
    ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    model.generation_config.eos_token_id = None
    gc = GenerationConfig(do_sample=False, max_new_tokens=new, min_new_tokens=0, eos_token_id=None, pad_token_id=0)
    st = Stamp()
    x = torch.tensor([ids])
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gc,
                             logits_processor=LogitsProcessorList([st]))
    t1 = time.perf_counter()
    n = out.shape[1] - len(ids)
    d = [b - a for a, b in zip(st.t, st.t[1:])]  # step k: token k's forward
    res = {"impl": "transformers-fp32", "prompt_tokens": len(ids), "new_tokens": int(n),
           "seconds": round(t1 - t0, 3), "first_token_s": round(st.t[0] - t0, 3),
           "tok_s": round((n - 1) / (t1 - st.t[0]), 3) if n > 1 else 0.0}
    if len(d) >= 64:
        res["ms_tok_1_32"] = round(1000 * sum(d[:32]) / 32, 1)
        res["ms_tok_last_32"] = round(1000 * sum(d[-32:]) / 32, 1)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
