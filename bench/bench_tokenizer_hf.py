#!/usr/bin/env python3
"""Hugging Face `tokenizers` encode throughput, one thread, on the same text as
bench/bench_tokenizer.c (same output columns and id checksum).

    /work/venv-ref/bin/python bench/bench_tokenizer_hf.py [--passes N] [--text FILE.jsonl] [DIR...]

Each document: Tokenizer.encode(text, add_special_tokens=False), one call per
document (encode_batch would use several threads). "cold" is the first pass of
a freshly loaded tokenizer, "warm" the best of the remaining passes.
"""
import argparse
import json
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--text", default=os.path.join(SHARED, "tinystories", "train.jsonl"))
    ap.add_argument("dirs", nargs="*", default=[os.path.join(SHARED, d) for d in
                    ("stories260K", "tokenizers/llama2", "tokenizers/llama3", "tokenizers/qwen3")])
    a = ap.parse_args()
    texts = []
    with open(a.text, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"text: {a.text} ({len(texts)} documents, {nbytes / 1e6:.3f} MB), tokenizers {tokenizers.__version__}")
    print(f"{'tokenizer':40s} {'load_s':>8s} {'tokens':>10s} {'cold_MB/s':>10s} {'warm_MB/s':>10s} {'ids_fnv1a64':>18s}")
    for d in a.dirs:
        t0 = time.perf_counter()
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        load = time.perf_counter() - t0
        cold, warm, h, ntok = 0.0, float("inf"), 0, 0
        for p in range(max(1, a.passes)):
            t1 = time.perf_counter()
            encs = [tok.encode(t, add_special_tokens=False).ids for t in texts]
            el = time.perf_counter() - t1
            if p == 0:
                cold = el
                hp, tp = 0xcbf29ce484222325, 0
                for ids in encs:
                    tp += len(ids)
                    for v in ids:
                        for b in range(4):
                            hp ^= (v >> (8 * b)) & 0xFF
                            hp = (hp * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
                h, ntok = hp, tp
            else:
                warm = min(warm, el)
        print(f"{d:40s} {load:8.3f} {ntok:10d} {nbytes / 1e6 / cold:10.2f} "
              f"{(nbytes / 1e6 / warm) if a.passes > 1 else 0.0:10.2f} {h:018x}")


if __name__ == "__main__":
    main()
