#!/usr/bin/env python3
"""Golden fixtures for optim/ (tests/optim/), written into tests/golden/optim/.

Run with the reference virtualenv (torch, transformers, bitsandbytes, numpy;
e.g. /work/venv-ref, see tools/reference/setup_venv.sh where present):

    /work/venv-ref/bin/python tools/reference/make_optim_fixtures.py

Files (binary files are little-endian; layouts below and in
tests/optim/test_adamw.c and test_schedule_clip.c, which read them):

* adamw32_traj.bin — 50 steps of 32-bit AdamW on three tensors (numels 7,
  300, 1000) computed by torch.optim.AdamW (foreach=False, weight_decay=0)
  followed by p *= (1 - lr*wd) after every step: bitsandbytes'
  kOptimizer32bit2State applies the decoupled decay AFTER the Adam step
  (csrc/kernels.cu), whereas torch applies it before. Inputs (initial params,
  gradients) come from splitmix64 (tools/reference/bnb_8bit_ref.py).
  Before writing, the script checks that bitsandbytes' own CPU 32-bit op
  (bnb.optim.AdamW(optim_bits=32) on CPU, weight_decay=0) agrees with torch.
  Layout: "QTADAM32", u32 n_tensors, u32 steps, u32 seed, u32 n_check,
          f32 beta1, beta2, eps, wd, u32 numel[n_tensors],
          f32 lr[steps], f32 gnorm_scale[steps], u32 check_step[n_check],
          then per check step the params of every tensor (f32, concatenated),
          then final state1 and state2 of every tensor.
* adamw8_traj.bin — 50 steps of the 8-bit blockwise update of
  bnb_8bit_ref.py (the port of bitsandbytes' CUDA kernel; NOT checked
  against bitsandbytes on a GPU) on one tensor of 4396 values (17 full blocks
  and one of 44), with zero-gradient blocks, sparse zeros, NaN/Inf at step 30, an all-NaN
  last block at step 40 (absmax from the padding slots),
  varying lr and gnorm_scale, weight decay 0.01.
  Layout: "QTADAM8\\0", u32 n, u32 steps, u32 seed, u32 n_dump,
          f32 beta1, beta2, eps, wd, f32 qmap1[256], qmap2[256] (from
          bitsandbytes.functional.create_dynamic_map), f32 lr[steps],
          f32 gnorm_scale[steps], u32 dump_step[n_dump],
          per step: u64 fnv1a64(code1|code2|absmax1|absmax2|params bytes),
                    f32 absmax1[nb], f32 absmax2[nb];
          per dump step: u8 code1[n], u8 code2[n], f32 params[n].
* lr_schedules.txt — lr multipliers of transformers' schedulers
  (get_constant_schedule_with_warmup, get_linear_schedule_with_warmup,
  get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup)
  read from LambdaLR.get_last_lr() with base lr 1.0 after each scheduler.step():
  lines "kind warmup total min_ratio step value" (value as float.hex()).
* clip.txt — torch.nn.utils.clip_grad_norm_ total norms and clip factors
  (see write_clip).
* <file>.meta.json — library versions (tools/reference/common.py) and the
  parameters above.
"""
import os
import struct
import sys

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.optim  # noqa: F401  (bnb.optim.AdamW in check_bnb_cpu32)
import bitsandbytes.functional as BF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bnb_8bit_ref as ref  # noqa: E402
import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "optim")
F32 = np.float32
STEPS = 50
# Tolerance of the 32-bit comparisons: |a-b| <= 1e-6*|b| + ATOL32 (params are
# O(0.5); 1e-7 is two float32 ulps there, for elements that pass near zero).
ATOL32 = 1e-7
BETA1, BETA2, EPS, WD = 0.9, 0.999, 1e-8, 0.01


def lr_at(t):
    """Per-step learning rate (float32), varied to exercise the step-size path."""
    return F32(1e-3 * (1 + (t % 7)) / 4.0)


def gs_at(t):
    """Per-step gnorm_scale (a clipping coefficient)."""
    return F32(1.0 if t % 4 else 0.625)


# ---- 32-bit --------------------------------------------------------------------
NUMELS32 = [7, 300, 1000]
SEED32 = 11


def grads32(t):
    out = []
    for k, n in enumerate(NUMELS32):
        g, _ = ref.sym_uniform(SEED32 + 16 * k, t, n)
        out.append((g * F32(2.0 ** (-(k + (t % 3))))).astype(np.float32))
    return out


def params32():
    return [(ref.sym_uniform(SEED32 + 16 * k, 0, n)[0] * F32(0.5)).astype(np.float32)
            for k, n in enumerate(NUMELS32)]


def run_torch32(wd_after, lr_list, gs_list):
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params32()]
    opt = torch.optim.AdamW(ps, lr=1.0, betas=(BETA1, BETA2), eps=EPS, weight_decay=0.0, foreach=False)
    traj = []
    for t in range(1, STEPS + 1):
        lr = float(lr_list[t - 1])
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(ps, grads32(t)):
            p.grad = torch.from_numpy(g) * float(gs_list[t - 1])
        opt.step()
        if wd_after > 0:
            with torch.no_grad():
                for p in ps:
                    p.mul_(1.0 - lr * wd_after)
        traj.append([p.detach().numpy().copy() for p in ps])
    st = [(opt.state[p]["exp_avg"].numpy().copy(), opt.state[p]["exp_avg_sq"].numpy().copy()) for p in ps]
    return traj, st


def check_bnb_cpu32(lr_list):
    """bitsandbytes' CPU 32-bit AdamW (weight_decay=0, so the decay order does
    not matter) against torch.optim.AdamW: the two references must agree."""
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params32()]
    opt = bitsandbytes.optim.AdamW(ps, lr=1.0, betas=(BETA1, BETA2), eps=EPS, weight_decay=0.0,
                                   optim_bits=32)
    ones = [F32(1.0)] * STEPS
    torch_traj, _ = run_torch32(0.0, lr_list, ones)
    worst = 0.0
    for t in range(1, STEPS + 1):
        for group in opt.param_groups:
            group["lr"] = float(lr_list[t - 1])
        for p, g in zip(ps, grads32(t)):
            p.grad = torch.from_numpy(g)
        opt.step()
        for p, q in zip(ps, torch_traj[t - 1]):
            a = p.detach().numpy()
            worst = max(worst, float(np.max(np.abs(a - q) / (1e-6 * np.abs(q) + ATOL32))))
    assert worst <= 1.0, f"bitsandbytes CPU 32-bit AdamW vs torch: {worst} x the tolerance"
    return worst


def write32():
    lr_list = [lr_at(t) for t in range(1, STEPS + 1)]
    gs_list = [gs_at(t) for t in range(1, STEPS + 1)]
    bnb_vs_torch = check_bnb_cpu32(lr_list)
    traj, st = run_torch32(WD, lr_list, gs_list)
    checks = [1, 2, 3, 5, 10, 20, 30, 40, 50]
    b = bytearray(b"QTADAM32")
    b += struct.pack("<4I", len(NUMELS32), STEPS, SEED32, len(checks))
    b += struct.pack("<4f", BETA1, BETA2, EPS, WD)
    b += struct.pack(f"<{len(NUMELS32)}I", *NUMELS32)
    b += np.array(lr_list, dtype="<f4").tobytes() + np.array(gs_list, dtype="<f4").tobytes()
    b += struct.pack(f"<{len(checks)}I", *checks)
    for c in checks:
        for p in traj[c - 1]:
            b += p.astype("<f4").tobytes()
    for m, _ in st:
        b += m.astype("<f4").tobytes()
    for _, v in st:
        b += v.astype("<f4").tobytes()
    with open(os.path.join(OUT, "adamw32_traj.bin"), "wb") as f:
        f.write(b)
    return {"numels": NUMELS32, "steps": STEPS, "seed": SEED32, "check_steps": checks,
            "bnb_cpu32_vs_torch_max_rel": bnb_vs_torch,
            "reference": "torch.optim.AdamW(foreach=False, weight_decay=0) + p*=(1-lr*wd) after each step"}


# ---- 8-bit ---------------------------------------------------------------------
N8 = 4396
SEED8 = 5


def grads8(t):
    """Gradients at step t (see adamw8_traj.bin in the module docstring)."""
    g, z = ref.sym_uniform(SEED8, t, N8)
    blk = np.arange(N8) // 256
    e = -(blk % 13) + ((t % 5) - 2)
    g = (g * np.ldexp(np.ones(N8, np.float32), e).astype(np.float32)).astype(np.float32)
    g[(z & np.uint64(0xFF)) < np.uint64(8)] = 0.0
    g[blk == 3] = 0.0
    if 10 <= t <= 20:
        g[blk == 5] = 0.0
    if t == 30:
        g[7] = np.nan
        g[300] = np.inf
        g[301] = -np.inf
    if t == 40:
        # the whole partial last block non-finite: its states are zeroed, and the
        # absmax comes from the kernel's padding slots alone (code1 128 * absmax * beta1)
        g[blk == blk[-1]] = np.nan
    return g


def fnv1a64(data):
    h = 0xCBF29CE484222325
    arr = np.frombuffer(data, dtype=np.uint8)
    for byte in arr.tolist():
        h ^= byte
        h = (h * 0x100000001B3) & ((1 << 64) - 1)
    return h


def check_port_vs_bnb_pytorch():
    """Loose cross-check of the port against bitsandbytes' own pure-PyTorch
    8-bit blockwise update (backends/triton/kernels_optim.py
    optimizer_update_8bit_blockwise_pytorch). That fallback has other
    semantics (decay before the step, nearest-value quantization, no sign
    fix-up), so from the same state, with weight_decay=0, we require: params
    within 1e-7, absmax within 1e-4 relative, codes equal except < 0.1% that
    differ by one. Returns the number of differing codes."""
    from bitsandbytes.backends.triton.kernels_optim import optimizer_update_8bit_blockwise_pytorch as upd
    q1 = BF.create_dynamic_map(signed=True).float()
    q2 = BF.create_dynamic_map(signed=False).float()
    n, nb = 5000, 20
    p = (ref.sym_uniform(3, 0, n)[0] * F32(0.5)).astype(np.float32)
    c1, c2 = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    a1, a2 = np.zeros(nb, np.float32), np.zeros(nb, np.float32)
    diffs = 0
    for t in range(1, 11):
        g = (ref.sym_uniform(3, t, n)[0] * F32(0.01)).astype(np.float32)
        tp, tc1, tc2, ta1, ta2 = (torch.from_numpy(x.copy()) for x in (p, c1, c2, a1, a2))
        upd(tp, torch.from_numpy(g), tc1, tc2, BETA1, BETA2, 0.0, 0.0, EPS, t, 1e-3, q1, q2, ta1, ta2,
            0.0, 1.0, False, optimizer_name="adam")
        ref.adamw8bit_blockwise_step(p, g, c1, c2, a1, a2, q1.numpy(), q2.numpy(),
                                     BETA1, BETA2, EPS, 0.0, t, 1e-3, 1.0)
        assert np.abs(tp.numpy() - p).max() <= 1e-7
        assert np.abs(ta1.numpy() / a1 - 1).max() <= 1e-4 and np.abs(ta2.numpy() / a2 - 1).max() <= 1e-4
        for a, b in ((tc1.numpy(), c1), (tc2.numpy(), c2)):
            d = np.abs(a.astype(np.int64) - b.astype(np.int64))
            assert d.max() <= 1 and (d > 0).sum() < n // 1000, (t, d.max(), (d > 0).sum())
            diffs += int((d > 0).sum())
        p, c1, c2, a1, a2 = (x.numpy().copy() for x in (tp, tc1, tc2, ta1, ta2))
    return diffs


def write8():
    qmap1 = BF.create_dynamic_map(signed=True).numpy().astype(np.float32)
    qmap2 = BF.create_dynamic_map(signed=False).numpy().astype(np.float32)
    nb = (N8 + 255) // 256
    p = (ref.sym_uniform(SEED8, 0, N8)[0] * F32(0.5)).astype(np.float32)
    c1 = np.zeros(N8, np.uint8)
    c2 = np.zeros(N8, np.uint8)
    a1 = np.zeros(nb, np.float32)
    a2 = np.zeros(nb, np.float32)
    lr_list = [lr_at(t) for t in range(1, STEPS + 1)]
    gs_list = [gs_at(t) for t in range(1, STEPS + 1)]
    dumps = [1, 2, 3, 10, 30, 50]
    per_step = bytearray()
    dump_bytes = bytearray()
    for t in range(1, STEPS + 1):
        ref.adamw8bit_blockwise_step(p, grads8(t), c1, c2, a1, a2, qmap1, qmap2,
                                     BETA1, BETA2, EPS, WD, t, lr_list[t - 1], gs_list[t - 1])
        blob = c1.tobytes() + c2.tobytes() + a1.astype("<f4").tobytes() + a2.astype("<f4").tobytes() \
            + p.astype("<f4").tobytes()
        per_step += struct.pack("<Q", fnv1a64(blob)) + a1.astype("<f4").tobytes() + a2.astype("<f4").tobytes()
        if t in dumps:
            dump_bytes += c1.tobytes() + c2.tobytes() + p.astype("<f4").tobytes()
    b = bytearray(b"QTADAM8\0")
    b += struct.pack("<4I", N8, STEPS, SEED8, len(dumps))
    b += struct.pack("<4f", BETA1, BETA2, EPS, WD)
    b += qmap1.astype("<f4").tobytes() + qmap2.astype("<f4").tobytes()
    b += np.array(lr_list, dtype="<f4").tobytes() + np.array(gs_list, dtype="<f4").tobytes()
    b += struct.pack(f"<{len(dumps)}I", *dumps)
    b += per_step + dump_bytes
    with open(os.path.join(OUT, "adamw8_traj.bin"), "wb") as f:
        f.write(b)
    # Sanity: the fraction of codes equal to 0 or 255 must not dominate, and the
    # trajectory must have moved; both are properties of a meaningful fixture.
    assert np.unique(c1).size > 100 and np.unique(c2).size > 50
    return {"n": N8, "steps": STEPS, "seed": SEED8, "dump_steps": dumps,
            "reference": "tools/reference/bnb_8bit_ref.py port of kOptimizerStatic8bit2StateBlockwise "
                         "(NOT checked against bitsandbytes on a GPU)",
            "qmaps": "bitsandbytes.functional.create_dynamic_map(signed=True/False)",
            "port_vs_bnb_pytorch_fallback_code_diffs_10_steps_5000": check_port_vs_bnb_pytorch()}


# ---- schedules -----------------------------------------------------------------
def write_schedules():
    from transformers.optimization import (get_constant_schedule_with_warmup,
                                           get_cosine_schedule_with_warmup,
                                           get_cosine_with_min_lr_schedule_with_warmup,
                                           get_linear_schedule_with_warmup)
    cases = []
    for warm, total in [(0, 50), (10, 100), (7, 33), (100, 100), (5, 3)]:
        cases.append(("constant", warm, total, 0.0,
                      lambda o, w=warm: get_constant_schedule_with_warmup(o, w)))
        cases.append(("linear", warm, total, 0.0,
                      lambda o, w=warm, n=total: get_linear_schedule_with_warmup(o, w, n)))
        cases.append(("cosine", warm, total, 0.0,
                      lambda o, w=warm, n=total: get_cosine_schedule_with_warmup(o, w, n)))
        for mr in (0.1, 0.25):
            cases.append(("cosine", warm, total, mr,
                          lambda o, w=warm, n=total, r=mr:
                          get_cosine_with_min_lr_schedule_with_warmup(o, w, n, min_lr_rate=r)))
    lines = []
    for kind, warm, total, mr, make in cases:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make(opt)
        for step in range(0, total + 5):
            lines.append(f"{kind} {warm} {total} {float(mr).hex()} {step} {float(sched.get_last_lr()[0]).hex()}")
            opt.step()
            sched.step()
    with open(os.path.join(OUT, "lr_schedules.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"cases": len(cases), "lines": len(lines)}


# ---- clipping ------------------------------------------------------------------
def write_clip():
    """torch.nn.utils.clip_grad_norm_ (what transformers' Trainer calls with
    max_grad_norm) on three gradient tensors from splitmix64 (seed 21 + 16k,
    step 1, numels 5, 1000, 70001, scaled by 10^k): per case the total norm
    it returns and the factor it multiplied the gradients by (read back as
    scaled/original of the largest element). Lines "max_norm total_norm coef"
    (float.hex())."""
    numels = [5, 1000, 70001]
    lines = []
    for max_norm in (0.5, 1.0, 10.0, 100.0, 1e4, 1e6):
        gs = [torch.from_numpy(ref.sym_uniform(21 + 16 * k, 1, n)[0] * F32(10.0 ** k)) for k, n in enumerate(numels)]
        ps = [torch.nn.Parameter(torch.zeros(n)) for n in numels]
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        i = int(torch.argmax(gs[2].abs()))
        coef = float(ps[2].grad[i] / gs[2][i])
        lines.append(f"{float(max_norm).hex()} {float(total).hex()} {coef.hex()}")
    with open(os.path.join(OUT, "clip.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"numels": numels, "cases": len(lines)}


def main():
    os.makedirs(OUT, exist_ok=True)
    hyper = {"beta1": BETA1, "beta2": BETA2, "eps": EPS, "weight_decay": WD,
             "generator": "tools/reference/make_optim_fixtures.py"}
    for name, info in (("adamw32_traj.bin", write32()), ("adamw8_traj.bin", write8()),
                       ("lr_schedules.txt", write_schedules()), ("clip.txt", write_clip())):
        print(common.write_meta("optim", name, dict(hyper, **info)))


if __name__ == "__main__":
    main()
