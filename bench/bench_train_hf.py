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
    a = p.parse_args()
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
