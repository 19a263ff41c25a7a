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
* Gemma (2 and 3) and Phi-3 (-mini-4k, 3.5-mini): the exact template strings
  below (sources in TEMPLATES, recorded in each case's "template_source";
  the Hugging Face hub is not reachable from the machine that wrote them),
  applied by apply_chat_template to tests/golden/dataset/chat_turns.jsonl
  (system + multi-turn, unicode, whitespace at the ends, assistant-last and
  user-last, an empty system, a system between user turns, an empty answer)
  and chat_turns_bad.jsonl (roles not alternating, assistant first, a tool
  role, two system messages: Gemma's templates raise, Phi-3's render).
  "render_<template>_<file>" cases hold per conversation the text (cut as
  above), the target spans as UTF-8 byte offsets, and the
  add_generation_prompt=True render after every prefix that ends in a
  non-assistant turn, or the template's exception message. They use the
  Llama-2 tokenizer's special tokens (bos "<s>" where Gemma has "<bos>").
  Also written: templates/<name>/tokenizer_config.json (each template as a
  model directory carries it, for auto-detection) and phi3/, a Phi-3
  tokenizer: the Llama-2 tokenizer.json plus Phi-3's added tokens with their
  real ids (32000 <|endoftext|> ... 32007 <|end|> ... 32010 <|user|>, rstrip
  as in Phi-3's tokenizer.json), eos <|endoftext|>, Phi-3.5's template;
  chat_phi3_auto / chat_phi3_phi3 are token-level cases with it (Phi-3.5's
  and Phi-3-mini-4k's template).
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

# Gemma and Phi-3 templates, exact strings from public copies (the Hugging
# Face hub is not reachable here); written into tests/golden/dataset/templates/
# and recorded with their sources in expected.json.
# google/gemma-2-2b-it: llama.cpp models/templates/google-gemma-2-2b-it.jinja,
# read from the fork ye-NX/llama.cpp (the ggml-org mirror was too large to
# fetch), same path.
GEMMA2 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
          "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
          "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
          "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}"
          "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
          "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")
# google/gemma-3 (-4b-it, -27b-it): tokenizer_config.json "chat_template", quoted
# verbatim (JSON) in ShishirPatil/gorilla's Gemma handler (path below).
GEMMA3_JSON = r"""
"{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"
"""
GEMMA3 = json.loads(GEMMA3_JSON)
# microsoft/Phi-3-mini-4k-instruct tokenizer_config.json (as of 2024-05-08),
# quoted in guidance-ai/guidance guidance/chat.py (path below).
PHI3_MINI = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + "
             "message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + "
             "message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
             "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")
# microsoft/Phi-3.5-mini-instruct: llama.cpp models/templates/
# microsoft-Phi-3.5-mini-instruct.jinja (fork ye-NX/llama.cpp, as above).
PHI35 = ("{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
         "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
         "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
         "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")
LLAMA_CPP_FORK = {"repo": "ye-NX/llama.cpp (fork of ggml-org/llama.cpp)",
                  "commit": "b354d7c9ecb76c97c07098617cdebbdfffa2583e"}
TEMPLATES = {
    "gemma2": (GEMMA2, dict(LLAMA_CPP_FORK, path="models/templates/google-gemma-2-2b-it.jinja",
                            model="google/gemma-2-2b-it")),
    "gemma3": (GEMMA3, {"repo": "ShishirPatil/gorilla", "commit": "6199b2429cdcb943b1fddfbb6c5ce6dc39475113",
                        "path": "berkeley-function-call-leaderboard/bfcl_eval/model_handler/local_inference/"
                                "gemma.py (docstring: tokenizer_config.json chat_template)",
                        "model": "google/gemma-3-*-it"}),
    "phi3mini": (PHI3_MINI, {"repo": "guidance-ai/guidance", "commit": "025fac921a76aa05b54633f39b4e4df6ff9b957c",
                             "path": "guidance/chat.py (phi3_mini_template, from tokenizer_config.json#L119 "
                                     "of 2024-05-08)",
                             "model": "microsoft/Phi-3-mini-4k-instruct"}),
    "phi35": (PHI35, dict(LLAMA_CPP_FORK, path="models/templates/microsoft-Phi-3.5-mini-instruct.jinja",
                          model="microsoft/Phi-3.5-mini-instruct")),
}
# Phi-3's added tokens (microsoft/Phi-3-mini-4k-instruct tokenizer.json
# added_tokens, ids 32000..32010; rstrip true for all but <|endoftext|>), on
# top of the Llama-2 SentencePiece BPE that Phi-3 extends.
PHI3_ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
              "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]

TOKENIZERS = {
    "stories260K": os.path.join(SHARED, "stories260K"),
    "qwen3": os.path.join(SHARED, "tokenizers", "qwen3"),
    "llama3": os.path.join(SHARED, "tokenizers", "llama3"),
    "llama2": os.path.join(SHARED, "tokenizers", "llama2"),
    "phi3": os.path.join(OUT, "phi3"),
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


def chat(tok, messages, template, eot, tpl_str=None):
    kw = {} if template == "auto" else {"chat_template": tpl_str or CHATML}
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


def build_phi3_tokenizer():
    """tests/golden/dataset/phi3/: the Llama-2 tokenizer.json plus Phi-3's
    added tokens (ids 32000..32010), eos <|endoftext|>, Phi-3.5's template.
    add_bos_token true, as the Llama-2 base (Phi-3's own files have changed
    this setting over time; the BOS rule is tested either way)."""
    from tokenizers import AddedToken, Tokenizer
    t = Tokenizer.from_file(os.path.join(SHARED, "tokenizers", "llama2", "tokenizer.json"))
    assert t.get_vocab_size(with_added_tokens=True) == 32000
    t.add_special_tokens([AddedToken(x, rstrip=x != "<|endoftext|>", lstrip=False, normalized=False,
                                     special=True) for x in PHI3_ADDED])
    for i, x in enumerate(PHI3_ADDED):
        assert t.token_to_id(x) == 32000 + i, x
    d = os.path.join(OUT, "phi3")
    os.makedirs(d, exist_ok=True)
    t.save(os.path.join(d, "tokenizer.json"), pretty=False)
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "<|endoftext|>",
           "unk_token": "<unk>", "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": False,
           "chat_template": PHI35}
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=1)
        f.write("\n")
    assert os.path.getsize(os.path.join(d, "tokenizer.json")) < 2 << 20


def write_template_configs():
    """tests/golden/dataset/templates/NAME/tokenizer_config.json: each template
    as a model directory would carry it (for auto-detection; the tests pair it
    with the Llama-2 tokenizer, whose BOS "<s>" stands in for Gemma's "<bos>")."""
    for name, (tpl, src) in TEMPLATES.items():
        d = os.path.join(OUT, "templates", name)
        os.makedirs(d, exist_ok=True)
        cfg = {"_source": src, "add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>",
               "chat_template": tpl}
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=1)
            f.write("\n")


def byte_len(s):
    return len(s.encode("utf-8"))


def render_only(tok, messages, tpl, eot):
    """Text, target byte spans and generation prompts of one conversation under
    tpl with apply_chat_template (no tokenization), or the template's error."""
    e = {}
    try:
        full = tok.apply_chat_template(messages, tokenize=False, chat_template=tpl)
    except Exception as ex:  # jinja2 TemplateError from raise_exception
        return {"error": str(ex)}
    last = full.rfind(eot)
    text = full[:last + len(eot)]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if i == 0:  # apply_chat_template refuses [], the template itself renders it
            from transformers.utils.chat_template_utils import _compile_jinja_template
            gp = _compile_jinja_template(tpl).render(messages=[], add_generation_prompt=True,
                                                     bos_token=tok.bos_token, eos_token=tok.eos_token)
        else:
            gp = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True,
                                         chat_template=tpl)
        assert text.startswith(gp), (gp, text)
        end = text.index(eot, len(gp)) + len(eot)
        spans += [byte_len(text[:len(gp)]), byte_len(text[:end])]
    e["text"] = text
    e["spans"] = spans
    e["has_assistant"] = any(m["role"] == "assistant" for m in messages)
    # add_generation_prompt=True after every prefix that ends in a non-assistant turn
    gens = []
    for k in range(1, len(messages) + 1):
        if messages[k - 1]["role"] == "assistant":
            continue
        try:
            g = tok.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True, chat_template=tpl)
            gens.append({"n": k, "text": g})
        except Exception as ex:
            gens.append({"n": k, "error": str(ex)})
    e["generation"] = gens
    return e


def main():
    build_phi3_tokenizer()
    write_template_configs()
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

    # Gemma and Phi-3: rendered text and target byte spans of every template
    # (golden:chat_turns.jsonl, and chat_turns_bad.jsonl, on which Gemma's
    # templates raise), with the Llama-2 tokenizer's special tokens.
    turns = read_records(os.path.join(OUT, "chat_turns.jsonl"))
    bad = read_records(os.path.join(OUT, "chat_turns_bad.jsonl"))
    l2 = toks["llama2"]
    for name, (tpl, src) in TEMPLATES.items():
        eot = "<end_of_turn>" if name.startswith("gemma") else "<|end|>"
        for data, convs in (("chat_turns.jsonl", turns), ("chat_turns_bad.jsonl", bad)):
            cases.append({"name": "render_%s_%s" % (name, data.split(".")[0]), "tokenizer": "llama2",
                          "format": "chat", "template": "auto", "template_dir": "templates/" + name,
                          "template_source": src, "data": "golden:" + data, "first": len(convs),
                          "examples": [render_only(l2, c["messages"], tpl, eot) for c in convs]})
    # Phi-3 token by token: the Phi-3 tokenizer fixture, its own template
    # (Phi-3.5's, auto) and Phi-3-mini-4k-instruct's (data.chat_template phi3).
    ph = toks["phi3"]
    assert ph.convert_tokens_to_ids("<|end|>") == 32007 and ph.eos_token_id == 32000
    cases.append({"name": "chat_phi3_auto", "tokenizer": "phi3", "format": "chat", "template": "auto",
                  "template_source": TEMPLATES["phi35"][1], "data": "golden:chat_turns.jsonl",
                  "first": len(turns), "examples": [chat(ph, c["messages"], "auto", "<|end|>") for c in turns]})
    cases.append({"name": "chat_phi3_phi3", "tokenizer": "phi3", "format": "chat", "template": "phi3",
                  "template_source": TEMPLATES["phi3mini"][1], "data": "golden:chat_turns.jsonl",
                  "first": len(turns),
                  "examples": [chat(ph, c["messages"], "phi3", "<|end|>", PHI3_MINI) for c in turns]})

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
