#!/usr/bin/env python3
"""Golden fixtures for data/tokenizer.c from Hugging Face `tokenizers`.

Run with the reference virtualenv (tokenizers 0.23.3; made by
tools/reference/setup_venv.sh, /work/venv-ref on the team machine):

    /work/venv-ref/bin/python tools/reference/make_tokenizer_fixtures.py \
        [--shared ../shared/data] [--out tests/golden/tokenizer] [--random 5000]

For each tokenizer.json (stories260K, tokenizers/llama2, llama3, qwen3) it
writes tests/golden/tokenizer/<name>.jsonl:
  line 1: {"meta": {...versions, source file, sha256, seed, counts...}}
  then one record per case:
    {"t": text, "ids": [...]}                   encode(text, add_special_tokens=False)
    {"hex": "...", "ids": [...]}                 raw bytes that are not valid UTF-8;
                                                 ids = encode(raw.decode("utf-8", "replace"))
    "d": decode(ids, skip_special_tokens=False)  only when it differs from the text
                                                 (for "hex": from the replaced text)
    "ds": decode(ids, skip_special_tokens=True)  only when it differs from "d"
and tests/golden/tokenizer/tokenizer.meta.json (library versions via
tools/reference/common.py, one entry per fixture file).
Variants (see VARIANTS) patch top-level keys of a base file; meta.patch
records the patch. Cases: a fixed edge-case list, the 50 stories of tinystories/valid.jsonl
(base tokenizers only), then --random seeded random strings (ASCII,
whitespace runs, digits, punctuation, several Unicode blocks, emoji, combining
marks, special-token text, vocabulary pieces glued together).
"""
import argparse
import hashlib
import json
import os
import platform
import random
import sys

import tokenizers
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (tools/reference/common.py)

TOKENIZERS = [
    ("stories260K", "stories260K/tokenizer.json"),
    ("llama2", "tokenizers/llama2/tokenizer.json"),
    ("llama3", "tokenizers/llama3/tokenizer.json"),
    ("qwen3", "tokenizers/qwen3/tokenizer.json"),
]

# Variants: a base tokenizer.json with top-level keys replaced by "patch"
# (recorded in the fixture's meta, so the C test builds the same file). They
# cover the other pipeline pieces the loader supports: the Metaspace
# pre-tokenizer/decoder of newer Llama/Mistral files, Split behaviors,
# ByteLevel with its own regex and prefix space, NFD/NFKC/NFKD and Regex
# Replace normalizers, and added tokens with lstrip/rstrip/single_word/normalized
# ("[M]" says id 500, but tokenizers assigns the next free id, 514).
SP = "\u2581"
SP_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": SP}, "content": " "}, {"type": "ByteFallback"},
    {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
STORIES_ADDED = [
    {"id": 0, "content": "<unk>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
    {"id": 1, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
    {"id": 2, "content": "</s>", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": True},
    {"id": 512, "content": "time", "single_word": True, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
    {"id": 513, "content": "x y", "single_word": False, "lstrip": False, "rstrip": True, "normalized": True, "special": False},
    {"id": 500, "content": "[M]", "single_word": False, "lstrip": True, "rstrip": False, "normalized": False, "special": True},
]
VARIANTS = [
    ("llama2_metaspace_first", "tokenizers/llama2/tokenizer.json", {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": SP, "prepend_scheme": "first", "split": False},
        "decoder": SP_DECODER}),
    ("stories_metaspace_always_split", "stories260K/tokenizer.json", {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": SP, "prepend_scheme": "always", "split": True},
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"},
                    {"type": "Metaspace", "replacement": SP, "prepend_scheme": "always", "split": True}]}}),
    ("stories_split_behaviors", "stories260K/tokenizer.json", {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKD"}, {"type": "Replace", "pattern": {"Regex": "[0-9]+"}, "content": "#"},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": SP}, "behavior": "MergedWithNext", "invert": False},
            {"type": "Split", "pattern": {"Regex": "[.,!?]+"}, "behavior": "MergedWithPrevious", "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\p{Lu}"}, "behavior": "Contiguous", "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\s"}, "behavior": "Removed", "invert": False},
            {"type": "Split", "pattern": {"Regex": "[a-z]{1,3}"}, "behavior": "Isolated", "invert": True}]},
        "decoder": SP_DECODER}),
    ("stories_bytelevel_nfkc", "stories260K/tokenizer.json", {
        "normalizer": {"type": "NFKC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}}),
    ("stories_digits_punct_ws", "stories260K/tokenizer.json", {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "MergedWithNext"},
            {"type": "Digits", "individual_digits": False},
            {"type": "Split", "pattern": {"String": SP}, "behavior": "MergedWithNext", "invert": False},
            {"type": "Punctuation", "behavior": "Isolated"}, {"type": "Digits", "individual_digits": True}]},
        "decoder": SP_DECODER}),
    ("stories_lowercase_strip", "stories260K/tokenizer.json", {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Strip", "strip_left": True, "strip_right": True}, {"type": "Lowercase"},
            {"type": "Prepend", "prepend": SP}, {"type": "Replace", "pattern": {"String": " "}, "content": SP}]}}),
    ("stories_nfd_added", "stories260K/tokenizer.json", {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFD"}, {"type": "Prepend", "prepend": SP},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
        "added_tokens": STORIES_ADDED}),
]

EDGE_TEXT = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t x", "a  b", "a   b   c",
    "Hello", " Hello", "  Hello", "Hello ", "Hello  ", "Hello world", "Hello\nworld",
    "Hello\n\nworld\n", "line1\r\nline2\r\n", "tab\tseparated\tvalues", "  leading and trailing  ",
    "1", "12", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "v1.2.3", "x2y34z567",
    "don't", "DON'T", "I'M", "I'm", "we'll", "they've", "she'd", "it's", "YOU'RE", "'s", "x's",
    "x'ſs", "x'Ss", "rock 'n' roll", "''", "'''",
    "!!!", "?!?!", "...", "…", "---", "a--b", "((x))", "[[]]", "{\"k\": 1}", "#!/bin/sh", "a+b=c",
    "foo_bar.baz()", "C++ & C#", "http://example.com/a?b=c&d=e", "user@example.com", "$100 & 50%",
    "é", "e\u0301", "Cafe\u0301", "Café", "ñandú", "naïve", "Ångström", "\u212b", "ﬁ", "Ⅸ",
    "日本語のテキスト", "中文字符", "你好，世界！", "한국어 텍스트", "Привет, мир!", "Ελληνικά",
    "مرحبا بالعالم", "שלום עולם", "हिन्दी", "ภาษาไทย", "ᠮᠣᠩᠭᠣᠯ",
    "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇩🇪🇫🇷", "a😀b", " 😀 ", "🤖 robots", "❤️", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𐍈",
    "\u00a0", "a\u00a0b", "\u3000x", "a\u180eb", "x \u180e y", "\u2028", "a\u200bb", "\ufeffBOM",
    "\x01\x02\x1f", "\x7f", "\u0085", "\ufffd", "\U0010ffff", "\ue000",
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "Hello<s>world", "Hello <s> world", " <s> ",
    "<s><s>", "</s> x", "<0x0A>", "<s", "s>",
    "<|begin_of_text|>", "<|begin_of_text|>Hello", "x<|end_of_text|>", "<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", "<|begin_of_tex", "<|reserved_special_token_5|>",
    "<|im_start|>", "<|im_start|>user\nhello<|im_end|>\n", "<|endoftext|>", "<think>\n\n</think>",
    "<tool_call>{}</tool_call>", "<|im_start", "<|im_end|><|im_start|>",
    "Once upon a time, there was a little girl named Lily.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "def f(x):\n    return x ** 2\n\n\nprint(f(3))\n",
    "    indented\n\tcode\n",
    "Mixed 中文 and English 123 😀 done.",
    "İstanbul", "ΣΑΣ σας", "ǅemal", "ẞ", "  \u3000trimmed both ends\u00a0 ",
]

EDGE_BYTES = [
    b"\xff", b"\xfe\xff", b"abc\x80def", b"\x80", b"\xc0\xaf", b"\xc3", b"\xe2\x82", b"\xe2\x82x",
    b"\xf0\x9f\x98", b"\xf0\x9f\x98 ok", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
    b"hello \xe4\xb8 world", b"\xf0\x9f\x98\x80\x80", b"<s>\xff</s>", b"\xe0\x80\x80", b"\xc3\xa9\xe9",
    b"A\xc2 B", b"   \xff\xff\xff   ",
]

BLOCKS = [  # (lo, hi) code point ranges
    (0x20, 0x7E), (0xA0, 0xFF), (0x100, 0x17F), (0x180, 0x24F), (0x300, 0x36F), (0x370, 0x3FF),
    (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF),
    (0x1800, 0x18AF), (0x2000, 0x206F), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2500, 0x257F),
    (0x3000, 0x303F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFB00, 0xFB4F),
    (0xFF00, 0xFFEF), (0x1D400, 0x1D7FF), (0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F900, 0x1F9FF),
    (0x20000, 0x2A6DF),
]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "\u2009", "\u180e",
              "\u2028", "\u200b", "\x0b", "\x0c"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["...", "--", "!!", "?!", "'s", "'t", "'LL", "'ve", "'D"]
WORDS = ["the", "The", "THE", "a", "Once", "upon", "time", "Lily", "happy", "dog", "don't", "I'm", "hello",
         "world", "token", "izer", "ization", "naïve", "café", "über", "Straße", "日本", "中文", "😀", "ﬁ"]


def rand_text(rng, pieces, specials):
    out = []
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.20:
            out.append(rng.choice(WORDS))
        elif r < 0.32:
            out.append(rng.choice(WHITESPACE))
        elif r < 0.40:
            out.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 7))))
        elif r < 0.48:
            out.append("".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 3))))
        elif r < 0.66:
            lo, hi = rng.choice(BLOCKS)
            out.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 4))))
        elif r < 0.72:  # base letter + combining marks (NFC-relevant)
            out.append(rng.choice("aeiouAEOnc") + "".join(chr(rng.randint(0x300, 0x36F))
                                                          for _ in range(rng.randint(1, 2))))
        elif r < 0.94:
            out.append(rng.choice(pieces))
        elif r < 0.97:
            out.append(rng.choice(specials))
        else:
            out.append("".join(chr(rng.randint(1, 0x7F)) for _ in range(rng.randint(1, 4))))
    return "".join(out)


def clean_piece(s):
    return s.replace("\x00", "").replace("\ufffd", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(root), "shared", "data"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "golden", "tokenizer"))
    ap.add_argument("--random", type=int, default=5000)
    ap.add_argument("--variant-random", type=int, default=600)
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    summary = {}
    jobs = [(name, rel, None, args.random) for name, rel in TOKENIZERS]
    jobs += [(name, rel, patch, args.variant_random) for name, rel, patch in VARIANTS]
    for idx, (name, rel, patch, n_random) in enumerate(jobs):
        path = os.path.join(args.shared, rel)
        with open(path, "rb") as f:
            raw_json = f.read()
        sha = hashlib.sha256(raw_json).hexdigest()
        if patch is None:
            tok = Tokenizer.from_file(path)
        else:
            j = json.loads(raw_json)
            j.update(patch)
            tok = Tokenizer.from_str(json.dumps(j))
        rng = random.Random(args.seed + idx)
        vocab_size = tok.get_vocab_size(with_added_tokens=False)
        special = {a.content for a in tok.get_added_tokens_decoder().values()}
        pieces = []
        while len(pieces) < 4000:
            i = rng.randrange(vocab_size)
            p = clean_piece(tok.decode([i], skip_special_tokens=True))
            if p:
                pieces.append(p)
        specials = sorted(special) + ["<s", "|>", "<|im_", "</"]

        recs = []

        def add(text=None, raw=None):
            if raw is not None:
                text = raw.decode("utf-8", "replace")
            ids = tok.encode(text, add_special_tokens=False).ids
            rec = {"hex": raw.hex()} if raw is not None else {"t": text}
            rec["ids"] = ids
            d = tok.decode(ids, skip_special_tokens=False)
            if d != text:
                rec["d"] = d
            ds = tok.decode(ids, skip_special_tokens=True)
            if ds != d:
                rec["ds"] = ds
            recs.append(rec)

        for t in EDGE_TEXT:
            add(text=t)
        for b in EDGE_BYTES:
            add(raw=b)
        n_stories = 0
        if patch is None:  # real text: every story of tinystories/valid.jsonl
            with open(os.path.join(args.shared, "tinystories", "valid.jsonl"), encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        add(text=json.loads(line)["text"])
                        n_stories += 1
        n_edge = len(recs)
        seen = set()
        while len(recs) < n_edge + n_random:
            t = rand_text(rng, pieces, specials)
            if t in seen:
                continue
            seen.add(t)
            add(text=t)

        meta = {
            "tokenizer": name, "source": "../shared/data/" + rel, "source_sha256": sha,
            "tokenizers_version": tokenizers.__version__, "python": platform.python_version(),
            "generator": "tools/reference/make_tokenizer_fixtures.py", "seed": args.seed + idx,
            "edge_cases": n_edge - n_stories, "tinystories_valid_cases": n_stories, "random_cases": n_random,
            "encode": "add_special_tokens=False", "decode": "d: skip_special_tokens=False, ds: True",
        }
        if patch is not None:
            meta["patch"] = patch
        out = os.path.join(args.out, name + ".jsonl")
        with open(out, "w", encoding="utf-8", newline="\n") as f:
            f.write(json.dumps({"meta": meta}, ensure_ascii=False) + "\n")
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
        print(f"{out}: {len(recs)} cases, {os.path.getsize(out)} bytes", file=sys.stderr)
        summary[name + ".jsonl"] = {"source": meta["source"], "source_sha256": sha, "cases": len(recs),
                                    "patched": patch is not None}
    if os.path.abspath(args.out) == os.path.abspath(common.golden_dir("tokenizer")):
        common.write_meta("tokenizer", "tokenizer", {
            "generator": "tools/reference/make_tokenizer_fixtures.py", "seed": args.seed, "files": summary})


if __name__ == "__main__":
    main()
