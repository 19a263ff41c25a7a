#!/usr/bin/env python3
"""Golden fixtures for data/dataset.c + data/prompt.c: token ids and labels of
training examples as transformers-based tooling builds them.

Run with the reference virtualenv (transformers 5.x + tokenizers; on the team
machine /work/venv-ref, elsewhere see tools/reference/setup_venv.sh):

    /work/venv-ref/bin/python tools/reference/make_dataset_fixtures.py

Inputs (read, never copied into the repository): ../shared/data/alpaca/
alpaca_en_demo.json, ../shared/data/tinystories/valid.jsonl, the tokenizers
../shared/data/stories260K, ../shared/data/tokenizers/{qwen3,llama3,llama2}
(llama2 has no chat template: ChatML forced, which exercises the BOS that
the tokenizer adds in front of a template without one); plus the
hand-written records tests/golden/dataset/{completion.jsonl,chat.jsonl}.
Output: tests/golden/dataset/expected.json, one entry per case:
{"name", "tokenizer", "format", "template", "data", "first", "n",
 "examples": [{"ids": [...], "labels": [...]}]}, with the library versions.

How each example is built (the contract data/prompt.h documents):

* text: tokenizer(text) (add_special_tokens=True: BOS where the tokenizer
  adds one) + [eos]; every token is a target.
* completion / alpaca: the TRL / axolotl / Stanford-Alpaca scheme:
  ids = tokenizer(prompt + completion).input_ids + [eos]; the first
  len(tokenizer(prompt).input_ids) labels are -100 (train_on_prompt false).
  The alpaca prompt is axolotl's prompters.py text (formats.md section 7.1).
* chat: text = tokenizer.apply_chat_template(messages, tokenize=False) with
  the tokenizer's own chat_template ("auto") or the canonical ChatML template
  ("chatml"), cut right after the end-of-turn token of the last message
  (drops Qwen's trailing "\\n" and the unconditional generation prompt that
  this Llama-3 template appends). ids = tokenizer(text,
  add_special_tokens=False) (what apply_chat_template(tokenize=True) gives),
  with BOS prepended only if the tokenizer adds one and the text does not
  start with it, and EOS appended unless the last id already is EOS.
  Targets: the tokens whose first character lies in an assistant span; a
  span starts where apply_chat_template(messages[:i],
  add_generation_prompt=True) ends (what the model produces after the
  generation prompt: Qwen3's <think> block included) and ends after the
  turn's end-of-turn token (<|im_end|> / <|eot_id|>), found with the
  tokenizer's offset mapping as TRL's assistant-only loss does. The appended
  EOS is a target when the last message is the assistant's. The script also
  checks that counting tokens of text prefixes (what data/prompt.c does)
  gives the same boundaries, and fails if not.
"""
import json
import os
import platform
import sys

import tokenizers
import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
OUT = os.path.join(ROOT, "tests", "golden", "dataset")

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
# The canonical ChatML template (transformers chat-templating docs).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

TOKENIZERS = {
    "stories260K": os.path.join(SHARED, "stories260K"),
    "qwen3": os.path.join(SHARED, "tokenizers", "qwen3"),
    "llama3": os.path.join(SHARED, "tokenizers", "llama3"),
    "llama2": os.path.join(SHARED, "tokenizers", "llama2"),
}


def read_records(path):
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def plain(tok, text, prompt_len_text, eos):
    ids = tok(text).input_ids + [eos]
    labels = list(ids)
    if prompt_len_text is not None:
        n = len(tok(prompt_len_text).input_ids)
        for i in range(min(n, len(ids))):
            labels[i] = -100
    return {"ids": ids, "labels": labels}


def chat(tok, messages, template, eot):
    kw = {} if template == "auto" else {"chat_template": CHATML}
    full = tok.apply_chat_template(messages, tokenize=False, **kw)
    last_eot = full.rfind(eot)
    assert last_eot >= 0
    text = full[:last_eot + len(eot)]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        gp = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True, **kw)
        assert text.startswith(gp), (gp, text)
        end = text.index(eot, len(gp)) + len(eot)
        spans.append((len(gp), end))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc.input_ids)
    labels = []
    for (s, _), t in zip(enc.offset_mapping, ids):
        labels.append(t if any(a <= s < b for a, b in spans) else -100)
    # The same boundaries by counting the tokens of text prefixes.
    check = [-100] * len(ids)
    for a, b in spans:
        na = len(tok(text[:a], add_special_tokens=False).input_ids)
        nb = len(tok(text[:b], add_special_tokens=False).input_ids)
        for k in range(na, nb):
            check[k] = ids[k]
    if check != labels:
        sys.exit("prefix-count boundaries differ from offset boundaries for %r" % (messages,))
    bos = tok.bos_token_id
    adds_bos = bos is not None and tok("x").input_ids[:1] == [bos]
    if adds_bos and ids[:1] != [bos]:
        ids.insert(0, bos)
        labels.insert(0, -100)
    eos = tok.eos_token_id
    if ids[-1] != eos:
        ids.append(eos)
        labels.append(eos if messages[-1]["role"] == "assistant" else -100)
    return {"ids": ids, "labels": labels, "text": text}


def main():
    toks = {k: AutoTokenizer.from_pretrained(v) for k, v in TOKENIZERS.items()}
    cases = []

    st = toks["stories260K"]
    recs = read_records(os.path.join(SHARED, "tinystories", "valid.jsonl"))[:8]
    cases.append({"name": "text_stories", "tokenizer": "stories260K", "format": "text",
                  "data": "shared:tinystories/valid.jsonl", "first": 8,
                  "examples": [plain(st, r["text"], None, st.eos_token_id) for r in recs]})

    recs = read_records(os.path.join(OUT, "completion.jsonl"))
    cases.append({"name": "completion_stories", "tokenizer": "stories260K", "format": "completion",
                  "data": "golden:completion.jsonl", "first": len(recs),
                  "examples": [plain(st, r["prompt"] + r["completion"], r["prompt"], st.eos_token_id)
                               for r in recs]})

    recs = read_records(os.path.join(SHARED, "alpaca", "alpaca_en_demo.json"))[:20]
    ex = []
    for r in recs:
        p = (ALPACA_WITH_INPUT if r.get("input") else ALPACA_NO_INPUT).format(**r)
        ex.append(plain(st, p + r["output"], p, st.eos_token_id))
    cases.append({"name": "alpaca_stories", "tokenizer": "stories260K", "format": "alpaca",
                  "data": "shared:alpaca/alpaca_en_demo.json", "first": 20, "examples": ex})
    ll = toks["llama3"]
    ex = []
    for r in recs[:6]:
        p = (ALPACA_WITH_INPUT if r.get("input") else ALPACA_NO_INPUT).format(**r)
        ex.append(plain(ll, p + r["output"], p, ll.eos_token_id))
    cases.append({"name": "alpaca_llama3", "tokenizer": "llama3", "format": "alpaca",
                  "data": "shared:alpaca/alpaca_en_demo.json", "first": 6, "examples": ex})

    convs = read_records(os.path.join(OUT, "chat.jsonl"))
    for tname, template, eot in (("qwen3", "auto", "<|im_end|>"), ("qwen3", "chatml", "<|im_end|>"),
                                 ("llama3", "auto", "<|eot_id|>"), ("llama2", "chatml", "<|im_end|>")):
        t = toks[tname]
        cases.append({"name": "chat_%s_%s" % (tname, template), "tokenizer": tname, "format": "chat",
                      "template": template, "data": "golden:chat.jsonl", "first": len(convs),
                      "examples": [chat(t, c["messages"], template, eot) for c in convs]})

    out = {
        "generator": "tools/reference/make_dataset_fixtures.py",
        "python": platform.python_version(),
        "libraries": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "cases": cases,
    }
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    for c in cases:
        print(c["name"], len(c["examples"]), "examples")


if __name__ == "__main__":
    main()
