#!/usr/bin/env python3
"""Golden fixtures for quant/ (tests/golden/quant/), made with the real
bitsandbytes on CPU.

Run with the reference virtualenv (torch, transformers, bitsandbytes 0.50.2,
safetensors; /work/venv-ref on the team machine, or one made by
tools/reference/setup_venv.sh where that exists):

    /work/venv-ref/bin/python tools/reference/make_quant_fixtures.py [OUTDIR]

Writes (all little-endian raw arrays, described by manifest.json):
  - dynmap_signed.f32, dynmap_unsigned.f32: create_dynamic_map(signed=True/False)
  - per 4-bit case: input (f32 or bf16), packed bytes, absmax (f32, or u8 codes +
    nested_absmax f32 + offset when double quant), quant_map, dequantized output
    (in the input dtype), from bitsandbytes.functional.quantize_4bit /
    dequantize_4bit;
  - 8-bit blockwise cases (signed map block 256, unsigned map block 2048):
    input, codes, absmax, dequantized (quantize_blockwise / dequantize_blockwise);
  - llama_nf4/: a tiny random Llama saved by transformers with
    BitsAndBytesConfig(load_in_4bit, nf4, double quant) (model.safetensors,
    config.json) and the bf16 weights bitsandbytes dequantizes for every
    quantized Linear (dequant.safetensors).

Note: bitsandbytes' CPU backend is not its CUDA kernel: quantize_4bit runs
the pure-torch path (bucketize on midpoints, clamp, division x/absmax for the
partial last block, absmax clamped to >= 1e-38) and 8-bit quantize_blockwise
uses a 65536-bin lookup table. The C tests explain every code where that
differs from the CUDA semantics qlora-train implements (quant/quant.h).
"""
import json
import os
import sys

import numpy as np
import torch

import bitsandbytes as bnb
import bitsandbytes.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (tools/reference/common.py: library versions, meta files)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden", "quant")


def versions():
    v = common.library_versions()
    v["device"] = "cpu"
    return v


def save(name, t):
    """Raw little-endian bytes of a tensor; returns the file name."""
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        data = t.view(torch.int16).numpy().astype("<i2").tobytes()
    elif t.dtype == torch.float32:
        data = t.numpy().astype("<f4").tobytes()
    elif t.dtype == torch.uint8:
        data = t.numpy().tobytes()
    else:
        raise ValueError(t.dtype)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    return name


def f32_hex(x):
    return "0x%08x" % np.float32(x).view(np.uint32)


def dequant_flat(packed, qs):
    """bitsandbytes' dequantize_4bit through its pure-torch backend
    (backends/default/ops.py), which indexes blocks over the flattened tensor
    like the CUDA kernel (idx >> log2(blocksize)). The CPU C++ kernel that
    F.dequantize_4bit picks for an even last dimension disagrees with it when
    blocks cross rows in some shapes (e.g. [48, 48]); see cpu_kernel_mismatch
    in the manifest."""
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code
    absmax = qs.absmax
    if qs.nested:
        absmax = F.dequantize_blockwise(qs.absmax, qs.state2)
        absmax += qs.offset
    code = _get_4bit_code(qs.quant_type, packed.device)
    return _dequantize_4bit_compute(packed.view(torch.uint8).reshape(-1), absmax.float(), code,
                                    qs.blocksize, qs.shape, qs.dtype)


def cpu_kernel_mismatch(packed, qs, deq):
    """Elements where F.dequantize_4bit (CPU backend) differs from dequant_flat."""
    other = F.dequantize_4bit(packed, qs)
    return int((other.view(-1).float().view(torch.int32) != deq.view(-1).float().view(torch.int32)).sum())


def make_input(shape, seed, zero_block=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32) * 0.05
    # A few outliers, as real weights have.
    flat = x.view(-1)
    idx = torch.randint(0, flat.numel(), (max(1, flat.numel() // 500),), generator=g)
    flat[idx] *= 8.0
    if zero_block is not None:
        lo, hi = zero_block
        flat[lo:hi] = 0.0
    return x


def four_bit_cases(manifest):
    # (shape, seed, zero_block): odd counts, counts that are not a multiple of
    # the block, blocks crossing 172-wide rows, one all-zero block, and enough
    # blocks for a partial nested (256) block.
    shapes = [((7,), 1, None), ((3, 5), 2, None), ((4, 172), 3, (64, 128)),
              ((33, 65), 4, None)]
    big = ((130, 129), 5, None)
    cases = []
    for dtype in (torch.float32, torch.bfloat16):
        for shape, seed, zb in shapes + [big]:
            x = make_input(shape, seed, zb).to(dtype)
            xname = save("x_%s_%s.bin" % ("x".join(map(str, shape)), "f32" if dtype == torch.float32 else "bf16"), x)
            for qt in ("nf4", "fp4"):
                for bs in (64, 128):
                    for dq in (False, True):
                        if (shape, seed, zb) == big and not dq:
                            continue  # keep the fixture small: the big shape only with DQ
                        if dtype == torch.bfloat16 and (bs != 64 or (shape, seed, zb) != big):
                            continue  # bf16: the big shape at blocksize 64 only
                        cases.append((x, xname, dtype, shape, qt, bs, dq))
    for (x, xname, dtype, shape, qt, bs, dq) in cases:
        packed, qs = F.quantize_4bit(x, blocksize=bs, compress_statistics=dq, quant_type=qt)
        deq = dequant_flat(packed, qs)
        assert deq.dtype == dtype and tuple(deq.shape) == tuple(shape)
        tag = "%s_%s_bs%d_%s_%s" % (qt, "x".join(map(str, shape)), bs, "dq" if dq else "plain",
                                    "f32" if dtype == torch.float32 else "bf16")
        c = {"name": tag, "quant_type": qt, "blocksize": bs, "double_quant": dq,
             "shape": list(shape), "dtype": "f32" if dtype == torch.float32 else "bf16",
             "n": int(x.numel()), "input": xname,
             "packed": save(tag + ".packed", packed.view(-1)),
             "quant_map": save(tag + ".qmap", qs.code),
             "dequant": save(tag + ".deq", deq),
             "cpu_kernel_mismatch": cpu_kernel_mismatch(packed, qs, deq)}
        if dq:
            c["absmax_codes"] = save(tag + ".qabsmax", qs.absmax)
            c["nested_absmax"] = save(tag + ".nabsmax", qs.state2.absmax)
            c["nested_code"] = save(tag + ".ncode", qs.state2.code)
            c["nested_blocksize"] = int(qs.state2.blocksize)
            c["offset_hex"] = f32_hex(qs.offset.item())
            c["n_nested_blocks"] = int(qs.state2.absmax.numel())
            # bitsandbytes' own dequantized absmax (dequantize_blockwise + offset).
            am = F.dequantize_blockwise(qs.absmax, qs.state2)
            am += qs.offset
            c["absmax_dequant"] = save(tag + ".absmax", am)
        else:
            c["absmax"] = save(tag + ".absmax", qs.absmax)
        c["n_blocks"] = int(qs.absmax.numel())
        manifest["four_bit"].append(c)


def eight_bit_cases(manifest):
    g = torch.Generator().manual_seed(11)
    for signed, bs, n in ((True, 256, 3000), (False, 2048, 5000), (True, 4096, 4100)):
        code = F.create_dynamic_map(signed=signed)
        x = torch.randn(n, generator=g) * 0.01
        if not signed:
            x = x * x  # second-moment-like, non-negative
        q, st = F.quantize_blockwise(x, code=code, blocksize=bs)
        deq = F.dequantize_blockwise(q, st)
        tag = "q8_%s_bs%d_n%d" % ("signed" if signed else "unsigned", bs, n)
        manifest["eight_bit"].append({
            "name": tag, "signed": signed, "blocksize": bs, "n": n,
            "input": save(tag + ".x", x), "codes": save(tag + ".q", q),
            "absmax": save(tag + ".absmax", st.absmax), "dequant": save(tag + ".deq", deq)})


def llama_checkpoint(manifest):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM
    from safetensors.torch import save_file
    d = os.path.join(OUT, "llama_nf4")
    os.makedirs(d, exist_ok=True)
    src = os.path.join(OUT, "_llama_src")
    torch.manual_seed(7)
    cfg = LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=88, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(src)
    bnb_cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                 bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
    qmodel = AutoModelForCausalLM.from_pretrained(src, quantization_config=bnb_cfg,
                                                  dtype=torch.bfloat16, device_map="cpu")
    qmodel.save_pretrained(d)
    deq = {}
    mism = {}
    for name, mod in qmodel.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            w = mod.weight
            deq[name + ".weight"] = dequant_flat(w.data, w.quant_state).contiguous()
            mism[name] = cpu_kernel_mismatch(w.data, w.quant_state, deq[name + ".weight"])
    save_file(deq, os.path.join(d, "dequant.safetensors"), metadata={"format": "pt"})
    for f in os.listdir(src):
        os.remove(os.path.join(src, f))
    os.rmdir(src)
    for f in os.listdir(d):
        if f not in ("model.safetensors", "config.json", "dequant.safetensors"):
            os.remove(os.path.join(d, f))
    manifest["llama_nf4"] = {"dir": "llama_nf4", "modules": sorted(k[:-len(".weight")] for k in deq),
                             "cpu_kernel_mismatch": mism}


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = {"generator": "tools/reference/make_quant_fixtures.py", "versions": versions(),
                "four_bit": [], "eight_bit": []}
    manifest["dynmap_signed"] = save("dynmap_signed.f32", F.create_dynamic_map(signed=True))
    manifest["dynmap_unsigned"] = save("dynmap_unsigned.f32", F.create_dynamic_map(signed=False))
    four_bit_cases(manifest)
    eight_bit_cases(manifest)
    llama_checkpoint(manifest)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    if os.path.abspath(OUT) == os.path.abspath(common.golden_dir("quant")):
        common.write_meta("quant", "manifest", {"generator": manifest["generator"]})
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print("wrote %s (%d bytes)" % (OUT, total))


if __name__ == "__main__":
    main()
