#!/usr/bin/env python3
"""bench/bench_train_hf.py — the transformers + PEFT side of bench/bench_train.sh:
LoRA fine-tuning steps of a Llama checkpoint on the CPU in fp32, timed.

    python bench/bench_train_hf.py train --model DIR --data FILE.jsonl --threads N
        [--steps 6] [--warmup 2] [--batch 4] [--seq 256] [--r 16] [--alpha 32] [--lr 2e-4]
        [--flush-denormal]
    python bench/bench_train_hf.py sgemm --threads N --shapes M,N,K[;M,N,K...]
    python bench/bench_train_hf.py metrics --metrics out/metrics.jsonl --warmup 2
    python bench/bench_train_hf.py report --rows rows.jsonl

`train` does what bench_train.sh configures qlora-train to do: LoRA (PEFT
LoraConfig r, alpha, dropout 0, no bias) on q,k,v,o,gate,up,down of a frozen fp32
base, rows of exactly --seq tokens (BOS + the text's tokens, truncated: the
benchmark's texts are all longer than a row, so no row is padded and no row holds
two documents, which makes transformers' plain causal attention the same work as
qlora-train's per-document attention), --batch rows per step, no gradient
accumulation, no gradient checkpointing, global-norm clipping at 1.0,
torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, no weight decay, fp32 state),
constant learning rate. A step is forward + backward + clip + optimizer step +
zero_grad. --flush-denormal runs it with torch.set_flush_denormal(True), the
subnormal mode qlora-train trains in by default (training.flush_subnormals).
tokens/s = batch x seq x timed steps / their wall time, the first
--warmup steps excluded. Peak memory is the process's ru_maxrss (what the whole
Python process held, interpreter and torch included; rss_after_load_mib is the
part before the first step). Prints one JSON line.

`sgemm` measures the machine's fp32 GEMM rate on the model's own shapes
(C[M,N] = A[M,K] B[N,K]^T, best of 4 after a warm-up call, as
bench_autograd_cpu.c does) with two libraries: the system OpenBLAS that
qlora-train links (cblas_sgemm through ctypes, OPENBLAS_NUM_THREADS threads) and
torch.mm (torch.set_num_threads). Prints one JSON line.

`metrics` summarises a qlora-train metrics.jsonl the same way (tokens/s over the
steps after --warmup: their tokens over their summed step times; peak_rss_mib of
the last step). `report` turns the rows bench_train.sh collected into the
markdown table of bench/RESULTS.md (model FLOPs per token and utilisation as
defined there).

`rows` and `train-lora` are the transformers + PEFT side of
bench/bench_cpu_sizes.sh (issue 18 item 4):

    python bench/bench_train_hf.py rows --model DIR --data FILE --format alpaca|text --seq 512
        [--packing] --steps N
    python bench/bench_train_hf.py train-lora --model DIR --data FILE --format alpaca|text --seq 512
        [--packing] --threads N --dtype fp32|bf16 [--steps 8] [--warmup 2] [--r 16] [--alpha 32]
        [--dropout 0.05[,0...]] [--lr 2e-4] [--device cpu|cuda] [--quant none|nf4]
        [--micro-batch 1[,2...]] [--no-grad-ckpt]
    python bench/bench_train_hf.py report-lora --rows rows.jsonl

`rows` rebuilds, in Python with the `tokenizers` library and the model's
tokenizer.json, the first --steps training rows that qlora-train makes of the
file with data.shuffle false and micro-batch 1 (data/prompt.c, data/dataset.c,
data/loader.c): the alpaca prompt of axolotl (the no-input variant when
"input" is empty) + output, tokenized as one string with BOS when the tokenizer
adds one (tokenizer_config.json add_bos_token, else a TemplateProcessing
post-processor that starts with BOS), EOS appended, the first
len([BOS] prompt) labels -100 (train_on_prompt false); text: [BOS] text EOS,
every token a target; examples cut to --seq tokens; --packing appends whole
examples to a row while they fit (never split, the label at each document's
first token -100, positions restarting per document). It prints one JSON line:
tokens per row ("step_tokens"), documents per row, and "attn_keys" per row
(sum over documents of n (n + 1) / 2: keys attended under per-document causal
attention), which report-lora turns into attention FLOPs.

`train-lora` trains on exactly those rows, one per step (micro-batch 1, no
padding, no gradient accumulation): the base loaded with dtype float32 or
bfloat16, model.gradient_checkpointing_enable(use_reentrant False), PEFT
LoraConfig(r, alpha, dropout, bias none) on q,k,v,o,gate,up,down (the adapters
in whatever dtype PEFT gives them), torch.optim.AdamW (0.9/0.999, eps 1e-8, no
weight decay, fp32 state, constant lr), clipping at 1.0. A packed row goes in
with position_ids restarting per document and no attention_mask, from which
transformers (masking_utils.find_packed_sequence_indices) builds the same
block-diagonal causal mask as qlora-train. A step is forward + backward + clip
+ optimizer step + zero_grad, timed with perf_counter; tokens/s = tokens of the
steps after --warmup / their summed time. Peak memory = ru_maxrss of the
process (rss_after_load_mib: VmRSS after loading + PEFT wrapping). One JSON line.

`report-lora` turns the rows bench_cpu_sizes.sh collected into its markdown
tables (one per model); lora_flops' docstring has the FLOP formula.

GPU (bench/bench_gpu_train.sh, issue 14 item 10): `train-lora --device cuda`
puts the base and the steps on the GPU (each step synchronised before its
clock is read); `--quant nf4` loads the base through bitsandbytes
(BitsAndBytesConfig: load_in_4bit, nf4, double quant, bf16 compute; QLoRA's
recipe) and, when `import bitsandbytes` fails, prints one row
{"failed": "transformers+PEFT+bitsandbytes: not available (bitsandbytes not
importable: ...)"} and exits 3. `--micro-batch` and `--dropout` take comma
lists: the base is loaded once and every (micro-batch, dropout) pair trains
fresh adapters (PEFT unload in between), one JSON line each; micro-batch m
takes rows m at a time, padded to the longer row as qlora-train pads (EOS,
label -100). `--no-grad-ckpt` trains without gradient checkpointing (the
CUDA path of qlora-train keeps every activation). On CUDA each line adds
peak_alloc_mib / peak_reserved_mib (torch.cuda.max_memory_allocated /
max_memory_reserved since that pair started) and base_alloc_mib.

    python bench/bench_train_hf.py ours-row --metrics M --log L --rows ROWS_JSON --model-name N --model-dir D
        --micro-batch M --dropout P [--r 16] [--warmup 2] [--smi FILE --smi-base MIB]
    python bench/bench_train_hf.py report-gpu --rows rows.jsonl --seq 2048 [--peak-tflops 989] [--table FILE]

`ours-row` turns one qlora-train run of bench_gpu_train.sh into a JSON row;
`report-gpu` prints its `result:` lines and markdown table (gpu_flops'
docstring has the FLOP formulas: MFU's model FLOPs and the FLOPs executed).

Needs torch, transformers, peft, tokenizers, numpy: the reference virtualenv
(/work/venv-ref, or tools/reference/setup_venv.sh). Set OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS before starting it (bench_train.sh does).
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import resource
import sys
import time

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cmd_sgemm(a) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in a.shapes.split(";") if s]
    rng = np.random.default_rng(42)
    path = next((p for p in OPENBLAS_CANDIDATES if os.path.exists(p)), ctypes.util.find_library("openblas"))
    out = {"openblas_lib": path, "threads": a.threads, "shapes": shapes}
    best_ob = best_t = 0.0
    lib = ctypes.CDLL(path) if path else None
    if lib is not None:
        lib.openblas_set_num_threads(ctypes.c_int(a.threads))
        fp = ctypes.POINTER(ctypes.c_float)
        lib.cblas_sgemm.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.c_int, ctypes.c_float, fp, ctypes.c_int, fp, ctypes.c_int,
                                    ctypes.c_float, fp, ctypes.c_int]
    for (m, n, k) in shapes:
        A = rng.standard_normal((m, k), dtype=np.float32)
        B = rng.standard_normal((n, k), dtype=np.float32)
        C = np.zeros((m, n), dtype=np.float32)
        flop = 2.0 * m * n * k
        if lib is not None:
            pa, pb, pc = (x.ctypes.data_as(fp) for x in (A, B, C))
            for i in range(5):
                t0 = time.perf_counter()
                # CblasRowMajor=101, CblasNoTrans=111, CblasTrans=112
                lib.cblas_sgemm(101, 111, 112, m, n, k, 1.0, pa, k, pb, k, 0.0, pc, n)
                g = flop / (time.perf_counter() - t0) / 1e9
                if i > 0:
                    best_ob = max(best_ob, g)
        tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        for i in range(5):
            t0 = time.perf_counter()
            torch.mm(tA, tB.t())
            g = flop / (time.perf_counter() - t0) / 1e9
            if i > 0:
                best_t = max(best_t, g)
    out["openblas_gflops"] = round(best_ob, 2)
    out["torch_gflops"] = round(best_t, 2)
    print(json.dumps(out))
    return 0


def cmd_train(a) -> int:
    import torch
    import transformers
    import peft
    import tokenizers
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(a.threads)
    if a.flush_denormal and not torch.set_flush_denormal(True):
        raise SystemExit("bench_train_hf.py: torch.set_flush_denormal(True) is not supported on this CPU")
    torch.manual_seed(0)
    tok = tokenizers.Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    with open(os.path.join(a.model, "config.json")) as fh:
        mcfg = json.load(fh)
    bos = mcfg.get("bos_token_id", 1)
    need = a.batch * a.steps
    rows = []
    with open(a.data) as fh:
        for line in fh:
            text = json.loads(line)["text"]
            ids = [bos] + tok.encode(text, add_special_tokens=False).ids
            if len(ids) < a.seq:
                continue  # bench_train.sh writes only texts longer than a row
            rows.append(ids[: a.seq])
            if len(rows) == need:
                break
    if len(rows) < need:
        print(f"bench_train_hf.py: {a.data}: only {len(rows)} texts of at least {a.seq} tokens, need {need}",
              file=sys.stderr)
        return 1
    data = torch.tensor(rows, dtype=torch.long)

    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    lcfg = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lcfg)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_all = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(trainable, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    rss_load = current_rss_mib()

    step_s, losses = [], []
    for s in range(a.steps):
        x = data[s * a.batch:(s + 1) * a.batch]
        t0 = time.perf_counter()
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t0)
        losses.append(float(out.loss.detach()))
    timed = step_s[a.warmup:]
    tps = a.batch * a.seq * len(timed) / sum(timed)
    print(json.dumps({
        "tokens_per_s": round(tps, 2), "peak_rss_mib": round(rss_mib(), 1), "rss_after_load_mib": round(rss_load, 1),
        "step_s": [round(t, 3) for t in step_s], "losses": [round(v, 6) for v in losses],
        "threads": a.threads, "batch": a.batch, "seq": a.seq, "steps": a.steps, "warmup": a.warmup,
        "trainable_params": n_trainable, "all_params": n_all,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
    }))
    return 0


def cmd_metrics(a) -> int:
    steps = [json.loads(line) for line in open(a.metrics) if line.strip() and '"step"' in line]
    steps = [s for s in steps if "tokens_per_s" in s]
    timed = steps[a.warmup:]
    if not timed:
        print(f"bench_train_hf.py: {a.metrics}: no steps after the first {a.warmup}", file=sys.stderr)
        return 1
    secs = [s["tokens"] / s["tokens_per_s"] for s in steps]
    tok = sum(s["tokens"] for s in timed)
    print(json.dumps({"tokens_per_s": round(tok / sum(secs[a.warmup:]), 2),
                      "peak_rss_mib": max(s["peak_rss_mib"] for s in steps),
                      "step_s": [round(t, 3) for t in secs], "losses": [round(s["loss"], 6) for s in steps],
                      "tokens_per_step": sorted({s["tokens"] for s in steps})}))
    return 0


def flops_per_token(model_dir: str, seq: int):
    """Model FLOPs per token as in bench/bench_autograd_cpu.c (issue 4): 4 x the
    matmul parameters (decoder linears + lm_head; forward 2, backward dX 2, no dW
    for the frozen base) + attention 12 x H x D x k_avg per layer (forward q.k and
    p.v 4 H D k_avg, backward 8 H D k_avg), k_avg = (seq + 1) / 2 keys per query
    for a causal row holding one document. LoRA's own 6 x r x (in + out) per
    projection is not counted (it is in the table separately)."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    C, L, F, V = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    H = c["num_attention_heads"]
    K = c.get("num_key_value_heads") or H
    D = c.get("head_dim") or C // H
    lin = L * (C * H * D + 2 * C * K * D + H * D * C + 3 * C * F) + V * C
    attn = L * 12 * H * D * (seq + 1) / 2
    return 4 * lin + attn, lin


def cmd_report(a) -> int:
    rows = [json.loads(line) for line in open(a.rows) if line.strip()]
    out = ["| model | stack | base | threads | tokens/s | ratio vs faster HF row | peak RSS MiB | model GFLOP/token "
           "| GFLOP/s | sgemm GFLOP/s OpenBLAS / torch | MFU vs best sgemm | loss first -> last |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    hf = {}  # the faster transformers + PEFT row per model and thread count
    for r in rows:
        if r["stack"].startswith("transformers+PEFT"):
            k = (r["model"], r["threads"])
            hf[k] = max(hf.get(k, 0.0), r["tokens_per_s"])
    for r in rows:
        f, _ = flops_per_token(r["model_dir"], r["seq"])
        g = r["tokens_per_s"] * f / 1e9
        ob, tt = r["sgemm_openblas"], r["sgemm_torch"]
        ref = hf.get((r["model"], r["threads"]))
        ratio = f"{r['tokens_per_s'] / ref:.2f}" if ref else "-"
        out.append(f"| {r['model']} | {r['stack']} | {r['base']} | {r['threads']} | {r['tokens_per_s']:.1f} | "
                   f"{ratio} | {r['peak_rss_mib']:.0f} | {f / 1e9:.4f} | {g:.1f} | {ob:.1f} / {tt:.1f} | "
                   f"{g / max(ob, tt):.2f} | {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f} |")
    print("\n".join(out))
    return 0


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALPACA_INPUT_HEAD = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n### Instruction:\n")
ALPACA_INPUT_MID = "\n\n### Input:\n"
ALPACA_NOINPUT_HEAD = ("Below is an instruction that describes a task. Write a response that appropriately "
                       "completes the request.\n\n### Instruction:\n")
ALPACA_TAIL = "\n\n### Response:\n"


def _special_ids(model_dir: str, tok):
    """BOS / EOS ids and whether BOS is prepended, as data/tokenizer.c and data/prompt.c decide."""
    def load(name):
        path = os.path.join(model_dir, name)
        return json.load(open(path)) if os.path.exists(path) else {}
    cfg, tcfg, tj = load("config.json"), load("tokenizer_config.json"), load("tokenizer.json")

    def tok_id(v):
        if isinstance(v, dict):
            v = v.get("content")
        return tok.token_to_id(v) if isinstance(v, str) else None
    bos = cfg.get("bos_token_id")
    eos = cfg.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0]
    if bos is None:
        bos = tok_id(tcfg.get("bos_token"))
    if eos is None:
        eos = tok_id(tcfg.get("eos_token"))
    if "add_bos_token" in tcfg and tcfg["add_bos_token"] is not None:
        add_bos = bool(tcfg["add_bos_token"])
    else:
        add_bos = False
        bos_tok = tok.id_to_token(bos) if bos is not None else None

        def starts(pp):
            if not isinstance(pp, dict):
                return False
            if pp.get("type") == "Sequence":
                return any(starts(x) for x in pp.get("processors", []))
            if pp.get("type") != "TemplateProcessing":
                return False
            single = pp.get("single") or []
            return bool(single) and "SpecialToken" in single[0] and single[0]["SpecialToken"].get("id") == bos_tok
        add_bos = bos_tok is not None and starts(tj.get("post_processor"))
    return bos, eos, add_bos


def _records(path: str, fmt: str):
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = fh.read(4096).lstrip("\ufeff").lstrip()
    if head.startswith("["):
        yield from json.load(open(path, encoding="utf-8", errors="replace"))
    else:
        for line in open(path, encoding="utf-8", errors="replace"):
            if line.strip():
                yield json.loads(line)


def build_rows(model_dir: str, data: str, fmt: str, seq: int, packing: bool, n_rows: int):
    """The first n_rows rows qlora-train trains on (shuffle false, micro-batch 1): list of dicts
    ids, labels, pos, docs (document lengths)."""
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    bos, eos, add_bos = _special_ids(model_dir, tok)

    def enc(text):
        ids = tok.encode(text, add_special_tokens=False).ids
        return ([bos] if add_bos else []) + ids

    def example(r):
        if fmt == "text":
            ids = enc(r["text"]) + [eos]
            labels = list(ids)
        elif fmt == "alpaca":
            inp = r.get("input")
            has_input = isinstance(inp, str) and len(inp) > 0
            prompt = (ALPACA_INPUT_HEAD if has_input else ALPACA_NOINPUT_HEAD) + r["instruction"]
            if has_input:
                prompt += ALPACA_INPUT_MID + inp
            prompt += ALPACA_TAIL
            n_prompt = len(enc(prompt))
            ids = enc(prompt + r["output"]) + [eos]
            labels = [-100 if (i < n_prompt and i < len(ids) - 1) else t for i, t in enumerate(ids)]
        else:
            raise SystemExit(f"bench_train_hf.py: format {fmt} is not supported here (alpaca, text)")
        return ids[:seq], labels[:seq]

    rows, cur = [], None

    def close(row):
        rows.append(row)

    for rec in _records(data, fmt):
        ids, labels = example(rec)
        labels = [-100] + labels[1:]  # the loader masks every document's first token
        if not packing:
            close({"ids": ids, "labels": labels, "pos": list(range(len(ids))), "docs": [len(ids)]})
        else:
            if cur is not None and len(cur["ids"]) + len(ids) > seq:
                close(cur)
                cur = None
            if cur is None:
                cur = {"ids": [], "labels": [], "pos": [], "docs": []}
            cur["ids"] += ids
            cur["labels"] += labels
            cur["pos"] += list(range(len(ids)))
            cur["docs"].append(len(ids))
        if len(rows) >= n_rows:
            break
    if packing and cur is not None and len(rows) < n_rows:
        close(cur)
    if len(rows) < n_rows:
        raise SystemExit(f"bench_train_hf.py: {data}: only {len(rows)} rows, need {n_rows}")
    return rows[:n_rows]


def _rows_summary(rows):
    return {"step_tokens": [len(r["ids"]) for r in rows], "docs": [len(r["docs"]) for r in rows],
            "attn_keys": [sum(n * (n + 1) // 2 for n in r["docs"]) for r in rows],
            "targets": [sum(1 for i, l in enumerate(r["labels"]) if l != -100 and i > 0) for r in rows]}


def cmd_rows(a) -> int:
    rows = build_rows(a.model, a.data, a.format, a.seq, a.packing, a.steps)
    print(json.dumps(_rows_summary(rows)))
    return 0


def _peft_wrap(base, r, alpha, dropout):
    from peft import LoraConfig, get_peft_model
    lcfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", task_type="CAUSAL_LM",
                      target_modules=LORA_TARGETS)
    return get_peft_model(base, lcfg)


def _batches(rows, mb, eos):
    """Consecutive groups of mb rows (qlora-train's order at micro-batch mb, shuffle false), padded to the
    longest row of the group as data/loader.c pads (pad_to_longest: pad id = EOS, label -100); the pad
    tail gets positions 0.. (one more 'document' for transformers' packed mask, attending only itself)."""
    out = []
    for i in range(0, len(rows) - mb + 1, mb):
        g = rows[i:i + mb]
        T = max(len(r["ids"]) for r in g)
        ids, labels, pos = [], [], []
        for r in g:
            n = T - len(r["ids"])
            ids.append(r["ids"] + [eos] * n)
            labels.append(r["labels"] + [-100] * n)
            pos.append(r["pos"] + list(range(n)))
        out.append({"ids": ids, "labels": labels, "pos": pos, "tokens": sum(len(r["ids"]) for r in g),
                     "attn_keys": sum(n * (n + 1) // 2 for r in g for n in r["docs"]), "rows": g})
    return out


def cmd_train_lora(a) -> int:
    """One JSON line per (micro-batch, dropout) pair of --micro-batch x --dropout, in that order; the base is
    loaded once, each pair wraps it in fresh adapters (PEFT unload in between)."""
    import torch
    import transformers
    import peft
    from transformers import AutoModelForCausalLM

    mbs = [int(v) for v in str(a.micro_batch).split(",") if v]
    drops = [float(v) for v in str(a.dropout).split(",") if v]
    cuda = a.device == "cuda"
    stack = "transformers+PEFT" + ("+bitsandbytes" if a.quant == "nf4" else "")
    head = {"stack": stack, "device": a.device, "dtype": a.dtype, "quant": a.quant, "grad_ckpt": a.grad_ckpt}
    if cuda and not torch.cuda.is_available():
        print(json.dumps(dict(head, failed="torch.cuda.is_available() is false")), flush=True)
        return 1
    bnb_version = None
    if a.quant == "nf4":
        try:
            import bitsandbytes
            bnb_version = bitsandbytes.__version__
        except Exception as e:  # ImportError, or a CUDA library it cannot load
            print(json.dumps(dict(head, failed=f"{stack}: not available (bitsandbytes not importable: "
                                               f"{type(e).__name__}: {str(e)[:160]})")), flush=True)
            return 3
    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    need = max(mbs) * a.steps
    rows = build_rows(a.model, a.data, a.format, a.seq, a.packing, need)
    import tokenizers
    _, eos, _ = _special_ids(a.model, tokenizers.Tokenizer.from_file(os.path.join(a.model, "tokenizer.json")))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    dev = torch.device("cuda" if cuda else "cpu")
    t_load = time.perf_counter()
    kw = {"dtype": dtype}
    if a.quant == "nf4":
        from transformers import BitsAndBytesConfig
        # QLoRA's recipe (Dettmers et al. 2023): NF4, double quant, bf16 compute
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True,
                                                       bnb_4bit_compute_dtype=torch.bfloat16)
        kw["device_map"] = {"": 0 if cuda else "cpu"}
    base = AutoModelForCausalLM.from_pretrained(a.model, **kw)
    if a.quant != "nf4":
        base = base.to(dev)
    base.config.use_cache = False
    if a.grad_ckpt:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    load_s = time.perf_counter() - t_load
    if cuda:
        torch.cuda.synchronize()
        base_alloc = torch.cuda.memory_allocated() / 1048576.0
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rc = 0
    for mb in mbs:
        for p in drops:
            model = _peft_wrap(base, a.r, a.alpha, p)
            model.train()
            trainable = [q for q in model.parameters() if q.requires_grad]
            lora_dtypes = sorted({str(q.dtype).replace("torch.", "") for q in trainable})
            opt = torch.optim.AdamW(trainable, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
            rss_load = current_rss_mib()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            batches = _batches(rows[: mb * a.steps], mb, eos)
            step_s, losses, err = [], [], None
            try:
                for b in batches:
                    x = torch.tensor(b["ids"], dtype=torch.long, device=dev)
                    y = torch.tensor(b["labels"], dtype=torch.long, device=dev)
                    extra = {}
                    if a.packing or len(b["rows"][0]["docs"]) > 1:
                        # packed: per-document positions -> block-diagonal causal mask
                        extra["position_ids"] = torch.tensor(b["pos"], dtype=torch.long, device=dev)
                    sync()
                    t0 = time.perf_counter()
                    out = model(input_ids=x, labels=y, use_cache=False, **extra)
                    out.loss.backward()
                    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    sync()
                    step_s.append(time.perf_counter() - t0)
                    losses.append(float(out.loss.detach().float()))
            except torch.cuda.OutOfMemoryError as e:
                err = f"out of device memory: {str(e)[:120]}"
            toks = [b["tokens"] for b in batches]
            res = dict(head, micro_batch=mb, dropout=p, threads=a.threads if not cuda else None,
                       lora_dtypes=lora_dtypes, lora_params=sum(q.numel() for q in trainable), load_s=round(load_s, 1),
                       attn_implementation=getattr(model.config, "_attn_implementation", None),
                       versions={"python": platform.python_version(), "torch": torch.__version__,
                                 "transformers": transformers.__version__, "peft": peft.__version__,
                                 "bitsandbytes": bnb_version})
            if err or len(step_s) <= a.warmup:
                res["failed"] = err or "too few steps"
                rc = 1
            else:
                res.update(tokens_per_s=round(sum(toks[a.warmup:len(step_s)]) / sum(step_s[a.warmup:]), 2),
                           timed_tokens=sum(toks[a.warmup:len(step_s)]),
                           timed_attn_keys=sum(b["attn_keys"] for b in batches[a.warmup:len(step_s)]),
                           step_s=[round(t, 4) for t in step_s], step_tokens=toks,
                           losses=[round(v, 6) for v in losses], peak_rss_mib=round(rss_mib(), 1),
                           rss_after_load_mib=round(rss_load, 1))
                if cuda:
                    res.update(peak_alloc_mib=round(torch.cuda.max_memory_allocated() / 1048576.0, 1),
                               peak_reserved_mib=round(torch.cuda.max_memory_reserved() / 1048576.0, 1),
                               base_alloc_mib=round(base_alloc, 1), gpu=torch.cuda.get_device_name(0))
            if mbs == [1] and len(drops) == 1:
                res.update({"rows_" + k: v for k, v in _rows_summary(rows[: a.steps]).items()})
            print(json.dumps(res), flush=True)
            del opt, trainable
            base = model.unload()  # the base without adapters, for the next pair
            del model
    return rc


def lora_flops(model_dir: str, tokens: int, attn_keys: int):
    """Model FLOPs per token for bench_cpu_sizes.sh (gradient checkpointing's recompute NOT counted,
    LoRA's own FLOPs not counted):
      4 x P_lin            decoder linears, P_lin = L (C H D + 2 C KV D + H D C + 3 C F):
                           forward 2 + input-gradient backward 2 (the base is frozen: no weight gradient)
      + 4 x V x C          lm_head, the same
      + 12 x L x H D x k   attention: forward Q K^T and P V 4 H D k, backward dQ dK dV dP 8 H D k,
                           k = keys per query averaged over the timed tokens = sum over documents of
                           n (n + 1) / 2 / tokens (per-document causal attention; about T_avg / 2)."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    C, L, F, V = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    H = c["num_attention_heads"]
    KV = c.get("num_key_value_heads") or H
    D = c.get("head_dim") or C // H
    lin = L * (C * H * D + 2 * C * KV * D + H * D * C + 3 * C * F)
    k = attn_keys / tokens
    return 4 * lin + 4 * V * C + 12 * L * H * D * k, k


PEAK_TFLOPS_DEFAULT = 989.0  # H100 / H200 SXM dense bf16 (NVIDIA's datasheets), issue 14 item 10's MFU base


def gpu_flops(model_dir: str, tokens: int, attn_keys: int, r: int, recompute: bool):
    """FLOPs per token for bench_gpu_train.sh (issue 14 item 10).
    model: the MFU numerator, 4 x N_base + attention (lora_flops: N_base = decoder linears + lm_head; attention
           12 x L x H D x k forward and backward, k = per-document causal keys per query).
    executed: what the step computes: model + LoRA 6 x r x (in + out) per adapted linear and token (forward
           x A, u B: 2 r (in + out); backward dB, du, dA, dx: 4 r (in + out)) + with gradient checkpointing the
           recomputed forward of every decoder layer (2 x P_lin + LoRA 2 r (in + out) + attention 4 x L x H D x k;
           transformers checkpoints per decoder layer, so the lm_head is not recomputed). qlora-train's CUDA path
           keeps every activation (model/model_cuda.h), so it recomputes nothing."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    C, L, F = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    H = c["num_attention_heads"]
    KV = c.get("num_key_value_heads") or H
    D = c.get("head_dim") or C // H
    model, k = lora_flops(model_dir, tokens, attn_keys)
    lora_io = L * ((C + H * D) + 2 * (C + KV * D) + (H * D + C) + 2 * (C + F) + (F + C))  # sum of in + out
    lin = L * (C * H * D + 2 * C * KV * D + H * D * C + 3 * C * F)
    executed = model + 6 * r * lora_io
    if recompute:
        executed += 2 * lin + 2 * r * lora_io + 4 * L * H * D * k
    return model, executed


def cmd_ours_row(a) -> int:
    """One qlora-train run of bench_gpu_train.sh as a JSON row: tokens/s over the steps after --warmup
    (metrics.jsonl: a step's time = tokens / tokens_per_s, the time between step ends), its device memory
    (the log's 'training.device cuda: ... MiB device memory' line: what qlora-train cudaMalloc'd), the
    whole GPU's nvidia-smi memory.used peak over the run minus the reading before it (the process's CUDA
    context and cuBLAS included), and whether its per-step token counts equal the Python-built rows."""
    import re
    steps = [json.loads(line) for line in open(a.metrics) if line.strip() and '"step"' in line]
    steps = [s for s in steps if "tokens_per_s" in s]
    log = open(a.log, errors="replace").read()
    rows = json.loads(a.rows)
    mb = a.micro_batch
    want = [sum(rows["step_tokens"][i:i + mb]) for i in range(0, len(rows["step_tokens"]) - mb + 1, mb)]
    keys = [sum(rows["attn_keys"][i:i + mb]) for i in range(0, len(rows["attn_keys"]) - mb + 1, mb)]
    row = {"stack": "qlora-train", "model": a.model_name, "model_dir": a.model_dir, "micro_batch": mb,
           "dropout": a.dropout, "r": a.r, "grad_ckpt": False, "device": a.device}
    if len(steps) <= a.warmup:
        row["failed"] = f"{len(steps)} steps in metrics.jsonl, want more than {a.warmup}"
        print(json.dumps(row))
        return 0
    secs = [s["tokens"] / s["tokens_per_s"] for s in steps]
    toks = [s["tokens"] for s in steps]
    n = len(steps)
    row.update(tokens_per_s=round(sum(toks[a.warmup:]) / sum(secs[a.warmup:]), 2), timed_tokens=sum(toks[a.warmup:]),
               timed_attn_keys=sum(keys[a.warmup:n]), step_s=[round(t, 4) for t in secs], step_tokens=toks,
               losses=[round(s["loss"], 6) for s in steps], tokens_match=toks == want[:n],
               peak_rss_mib=max(s.get("peak_rss_mib", 0) for s in steps))
    m = re.search(r"training\.device cuda:.*?([0-9.]+) MiB device memory", log)
    if m:
        row["dev_mib"] = float(m.group(1))
    if a.smi and os.path.exists(a.smi):
        vals = [float(v) for v in open(a.smi).read().split() if v.replace(".", "", 1).isdigit()]
        if vals:
            row["smi_peak_mib"] = max(vals) - a.smi_base
    if not row["tokens_match"]:
        row["note"] = f"step tokens {toks} differ from the Python rows {want[:n]}"
    print(json.dumps(row))
    return 0


def _mib(v):
    return "-" if v is None else f"{v:.0f}"


def cmd_report_gpu(a) -> int:
    """bench_gpu_train.sh's result: lines (one per run, key=value, the format tools/gpu_run.sh collects) and
    its markdown table. MFU = model FLOPs (gpu_flops) x tokens/s / --peak-tflops; ratio = tokens/s over the
    transformers row of the same model, micro-batch and dropout (the bitsandbytes NF4 one when it ran,
    else the bf16 one, named in hf_ref)."""
    rows = [json.loads(line) for line in open(a.rows) if line.strip()]
    peak = a.peak_tflops * 1e12
    lines, table = [], []
    table.append(f"| model | stack | micro-batch | dropout | tokens/s | MFU ({a.peak_tflops:.0f} TFLOP/s) | "
                 "TFLOP/s executed | peak device MiB | vs HF (tok/s, memory) | losses |")
    table.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("failed") and not r.get("micro_batch"):
            lines.append(f"result: bench=train_gpu model={r.get('model', '-')} stack={r['stack']} "
                         f"status=not_run note=\"{r['failed']}\"")
            table.append(f"| {r.get('model', '-')} | {r['stack']} | - | - | {r['failed']} | | | | | |")
            continue
        key = (r.get("model"), r["micro_batch"], float(r["dropout"]))
        head = (f"result: bench=train_gpu model={r.get('model')} stack={r['stack']} mb={r['micro_batch']} "
                f"dropout={r['dropout']} seq={a.seq}")
        if r.get("failed"):
            lines.append(head + f" status=failed note=\"{r['failed']}\"")
            table.append(f"| {r.get('model')} | {r['stack']} | {r['micro_batch']} | {r['dropout']} | failed: "
                         f"{r['failed']} | | | | | |")
            continue
        model_f, exec_f = gpu_flops(r["model_dir"], r["timed_tokens"], r["timed_attn_keys"], r.get("r", 16),
                                    bool(r.get("grad_ckpt")))
        mfu = model_f * r["tokens_per_s"] / peak
        tflops_exec = exec_f * r["tokens_per_s"] / 1e12
        if r["stack"] == "qlora-train":
            mem, mem_note = r.get("dev_mib"), f"own {_mib(r.get('dev_mib'))} MiB, nvidia-smi {_mib(r.get('smi_peak_mib'))}"
        else:
            mem, mem_note = r.get("peak_reserved_mib"), (f"reserved {_mib(r.get('peak_reserved_mib'))} MiB, "
                                                         f"allocated {_mib(r.get('peak_alloc_mib'))}")
        ratio = ratio_mem = hf_ref = same_rows = None
        if r["stack"] == "qlora-train":
            for st in ("transformers+PEFT+bitsandbytes", "transformers+PEFT"):
                h = next((x for x in rows if x["stack"] == st and not x.get("failed") and
                          (x.get("model"), x.get("micro_batch"), float(x.get("dropout", -1))) == key), None)
                if h:
                    ratio, hf_ref = r["tokens_per_s"] / h["tokens_per_s"], f"{st}({h.get('quant')}/{h.get('dtype')})"
                    same_rows = h.get("step_tokens") == r.get("step_tokens")
                    if mem and h.get("peak_reserved_mib"):
                        ratio_mem = mem / h["peak_reserved_mib"]
                    break
        fields = [head, "status=ok", f"tok_s={r['tokens_per_s']:.1f}", f"mfu={100 * mfu:.1f}%",
                  f"model_gflop_per_tok={model_f / 1e9:.3f}", f"exec_gflop_per_tok={exec_f / 1e9:.3f}",
                  f"tflops_exec={tflops_exec:.1f}", f"peak_mib={_mib(mem)}"]
        if r["stack"] == "qlora-train":
            fields.append(f"smi_peak_mib={_mib(r.get('smi_peak_mib'))}")
            fields.append(f"tokens_match={'yes' if r.get('tokens_match') else 'NO'}")
        else:
            fields.append(f"alloc_mib={_mib(r.get('peak_alloc_mib'))}")
        if ratio is not None:
            fields.append(f"vs_hf={ratio:.2f}x")
            if ratio_mem is not None:
                fields.append(f"mem_vs_hf={ratio_mem:.2f}x")
            fields.append(f"hf_ref={hf_ref}")
            fields.append(f"same_rows_as_hf={'yes' if same_rows else 'NO'}")
        lines.append(" ".join(fields))
        vs = "-" if ratio is None else (f"{ratio:.2f}x, {ratio_mem:.2f}x" if ratio_mem is not None else f"{ratio:.2f}x")
        if hf_ref and not hf_ref.startswith("transformers+PEFT+bitsandbytes"):
            vs += f" (vs {hf_ref})"
        ls = r.get("losses") or []
        table.append(f"| {r.get('model')} | {r['stack']}{' (ckpt)' if r.get('grad_ckpt') else ''} | {r['micro_batch']} | "
                     f"{r['dropout']} | {r['tokens_per_s']:.1f} | {100 * mfu:.1f}% | {tflops_exec:.1f} | {mem_note} | "
                     f"{vs} | {ls[0]:.4f} -> {ls[-1]:.4f} |" if ls else "|")
    print("\n".join(lines))
    if a.table:
        with open(a.table, "w") as fh:
            fh.write("\n".join(table) + "\n")
    return 0


def cmd_report_lora(a) -> int:
    rows = [json.loads(line) for line in open(a.rows) if line.strip()]
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    out = []
    for m in models:
        mr = [r for r in rows if r["model"] == m]
        g = mr[0]
        out.append(f"#### {m} ({g['model_dir']}): sgemm (OpenBLAS) {g['gemm_fp32']:.0f} GFLOP/s, "
                   f"oneDNN bf16 {g['gemm_bf16']:.0f} GFLOP/s on {g['gemm_shape']}")
        out.append("")
        out.append("| workload | stack | base | compute | tokens/s | MFU | peak RSS MiB | plan MiB "
                   "| ratio vs HF same precision (tok/s, memory) |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        hf = {(r["workload"], r["compute"]): r for r in mr if r["stack"] == "transformers+PEFT"}
        for r in mr:
            if r.get("failed"):
                out.append(f"| {r['workload']} | {r['stack']} | {r['base']} | {r['compute']} | failed: "
                           f"{r['failed']} | - | - | - | - |")
                continue
            f, k = lora_flops(r["model_dir"], r["timed_tokens"], r["timed_attn_keys"])
            rate = g["gemm_bf16"] if r["compute"] == "bf16" else g["gemm_fp32"]
            mfu = r["tokens_per_s"] * f / 1e9 / rate if rate else float("nan")
            if r["stack"] == "qlora-train":
                mem = f"{r['peak_rss_mib']:.0f} ({r['time_rss_mib']:.0f})"
                plan = f"{r['plan_mib']:.0f}"
            else:
                mem, plan = f"{r['peak_rss_mib']:.0f}", "-"
            h = hf.get((r["workload"], r["compute"]))
            if h and not h.get("failed") and r["stack"] != "transformers+PEFT":
                ratio = f"{r['tokens_per_s'] / h['tokens_per_s']:.2f}x, {r['peak_rss_mib'] / h['peak_rss_mib']:.2f}x"
            else:
                ratio = "-"
            mark = " †" if r.get("other_pct", 0) > 10 else ""
            out.append(f"| {r['workload']} | {r['stack']} | {r['base']} | {r['compute']} | "
                       f"{r['tokens_per_s']:.1f}{mark} | {100 * mfu:.1f}% | {mem} | {plan} | {ratio} |")
        if any(r.get("other_pct", 0) > 10 for r in mr if not r.get("failed")):
            out.append("")
            out.append("† other processes used more than 10% of the machine during this run (see the notes).")
        out.append("")
    print("\n".join(out).rstrip())
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--seq", type=int, default=256)
    t.add_argument("--r", type=int, default=16)
    t.add_argument("--alpha", type=float, default=32)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--flush-denormal", action="store_true")
    g = sub.add_parser("sgemm")
    g.add_argument("--threads", type=int, required=True)
    g.add_argument("--shapes", required=True)
    m = sub.add_parser("metrics")
    m.add_argument("--metrics", required=True)
    m.add_argument("--warmup", type=int, default=2)
    r = sub.add_parser("report")
    r.add_argument("--rows", required=True)
    for name in ("rows", "train-lora"):
        x = sub.add_parser(name)
        x.add_argument("--model", required=True)
        x.add_argument("--data", required=True)
        x.add_argument("--format", choices=("alpaca", "text"), required=True)
        x.add_argument("--seq", type=int, default=512)
        x.add_argument("--packing", action="store_true")
        x.add_argument("--steps", type=int, default=8)
        if name == "train-lora":
            x.add_argument("--threads", type=int, default=0)
            x.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
            x.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
            x.add_argument("--quant", choices=("none", "nf4"), default="none")
            x.add_argument("--micro-batch", default="1", help="rows per step; a comma list runs each")
            x.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
            x.add_argument("--warmup", type=int, default=2)
            x.add_argument("--r", type=int, default=16)
            x.add_argument("--alpha", type=float, default=32)
            x.add_argument("--dropout", default="0.05", help="LoRA dropout; a comma list runs each")
            x.add_argument("--lr", type=float, default=2e-4)
    x = sub.add_parser("report-lora")
    x.add_argument("--rows", required=True)
    x = sub.add_parser("ours-row")
    for k in ("--metrics", "--log", "--rows", "--model-name", "--model-dir"):
        x.add_argument(k, required=True)
    x.add_argument("--micro-batch", type=int, required=True)
    x.add_argument("--dropout", type=float, required=True)
    x.add_argument("--r", type=int, default=16)
    x.add_argument("--warmup", type=int, default=2)
    x.add_argument("--device", default="cuda")
    x.add_argument("--smi", default="")
    x.add_argument("--smi-base", type=float, default=0.0)
    x = sub.add_parser("report-gpu")
    x.add_argument("--rows", required=True)
    x.add_argument("--seq", type=int, required=True)
    x.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS_DEFAULT)
    x.add_argument("--table", default="")
    a = p.parse_args()
    if a.cmd == "rows":
        return cmd_rows(a)
    if a.cmd == "report-lora":
        return cmd_report_lora(a)
    if a.cmd == "ours-row":
        return cmd_ours_row(a)
    if a.cmd == "report-gpu":
        return cmd_report_gpu(a)
    if a.cmd == "train-lora":
        if a.steps <= a.warmup:
            p.error("--steps must exceed --warmup")
        if a.device == "cpu" and a.threads < 1:
            p.error("--threads N is needed with --device cpu")
        return cmd_train_lora(a)
    if a.cmd == "metrics":
        return cmd_metrics(a)
    if a.cmd == "report":
        return cmd_report(a)
    if a.cmd == "train":
        if a.steps <= a.warmup:
            p.error("--steps must exceed --warmup")
        return cmd_train(a)
    return cmd_sgemm(a)


if __name__ == "__main__":
    sys.exit(main())
